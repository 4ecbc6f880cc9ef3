"""`rlkd run`'s stall watchdog: the operator's, on one machine. A thread reads the progress
document from the store as the operator does, judges it by the same rules
(rlkd.spec.progress: progress_mark, stall_budget) on this process's monotonic clock, and on a
stall interrupts the main thread with a StallError: the run stops with one clear line, and the
same command resumes from the newest complete checkpoint.

The interrupt is a signal to the main thread, so a learner blocked in a socket read, a sleep or a
lock wait wakes up. One blocked where no signal reaches (inside a C extension) is ended after
`grace` seconds with os._exit, the message said first.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import FrameType

from pydantic import ValidationError

from rlkd.errors import RLKDError, StoreError
from rlkd.spec.job import LearnerSpec
from rlkd.spec.progress import (
    PROGRESS_KEY,
    ProgressDocument,
    describe_stall,
    progress_mark,
    stall_budget,
)
from rlkd.store.base import Store

SIGNAL = signal.SIGUSR1
STALL_EXIT = 3
"""Exit status when a stalled learner had to be ended without unwinding (os._exit)."""


class StallError(RLKDError):
    """The learner made no progress within its budget (spec.learner.stallTimeoutSeconds or
    startupTimeoutSeconds)."""


def read_progress(store: Store) -> ProgressDocument | None:
    """The progress document as a watcher sees it; None while there is none. Raises what the
    store raises when it cannot be read: no observation, not a change."""
    if not store.exists(PROGRESS_KEY):
        return None
    return ProgressDocument.model_validate(store.get_json(PROGRESS_KEY), by_name=False)


class Watch:
    """The watchdog's memory and rule, on a monotonic clock: `look` returns the stall message
    once the mark has not changed for its budget, else None."""

    def __init__(self, learner: LearnerSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.learner = learner
        self.clock = clock
        self.mark: str | None = None
        self.since = clock()
        self.moved = False

    def look(self, doc: ProgressDocument | None) -> str | None:
        now = self.clock()
        mark = progress_mark(doc)
        if mark != self.mark:
            self.moved = self.mark is not None
            self.mark, self.since = mark, now
            return None
        budget, field = stall_budget(self.learner, moved=self.moved, doc=doc)
        waited = now - self.since
        if budget == 0 or waited <= budget:
            return None
        wall = datetime.now(UTC)
        return describe_stall(
            doc, waited=timedelta(seconds=waited), budget=budget, field=field, now=wall
        )


@contextmanager
def stall_watchdog(
    store: Store, learner: LearnerSpec, *, poll: float | None = None, grace: float = 30.0
) -> Iterator[None]:
    """Watch the run's progress while the block runs (in the main thread); a stall raises
    StallError there. Off when both budgets are 0."""
    budgets = [b for b in (learner.stall_timeout_seconds, learner.startup_timeout_seconds) if b]
    if not budgets or threading.current_thread() is not threading.main_thread():
        yield
        return
    interval = poll if poll is not None else min(max(min(budgets) / 10, 0.2), 10.0)
    stalled: list[str] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise StallError(f"the learner stalled: {stalled[0]}")

    previous = signal.signal(SIGNAL, interrupt)
    done = threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def watch() -> None:
        memory = Watch(learner)
        while not done.wait(interval):
            try:
                doc = read_progress(store)
            except (StoreError, OSError, ValueError, ValidationError):
                continue  # a file being replaced, a store that did not answer: look again
            if (message := memory.look(doc)) is None:
                continue
            stalled.append(message)
            signal.pthread_kill(main, SIGNAL)
            if not done.wait(grace):  # the main thread did not wake up: end the process
                print(f"rlkd run: the learner stalled and did not stop: {message}", file=sys.stderr)
                sys.stderr.flush()
                os._exit(STALL_EXIT)
            return

    thread = threading.Thread(target=watch, name="rlkd-stall-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        signal.signal(SIGNAL, previous)
