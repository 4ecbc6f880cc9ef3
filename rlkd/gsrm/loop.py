"""Running the async reward engine from sync code (TRL calls reward functions synchronously).

Coroutines run on one long-lived event loop in a daemon thread, whether or not the calling
thread already runs a loop: the caller's loop is never re-entered, and backends may keep
loop-bound clients (connection pools) alive across calls because every call lands on the same
loop. A forked child gets a loop of its own.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loops: dict[int, asyncio.AbstractEventLoop] = {}  # by process id


def engine_loop() -> asyncio.AbstractEventLoop:
    """The process's engine loop, started on first use."""
    with _lock:
        loop = _loops.get(os.getpid())
        if loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="rlkd-engine-loop", daemon=True).start()
            _loops[os.getpid()] = loop
        return loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the engine loop and wait for its result (or exception)."""
    loop = engine_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("run_sync was called on the engine loop itself; await the coroutine")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()
