"""run_sync: async engine calls from sync code, with or without a running loop."""

from __future__ import annotations

import asyncio

import pytest

from rlkd.gsrm.loop import engine_loop, run_sync


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def fail() -> None:
    raise ValueError("boom")


def test_without_a_running_loop() -> None:
    assert run_sync(running_loop()) is engine_loop()


async def test_inside_a_running_loop_uses_the_engine_loop() -> None:
    assert run_sync(running_loop()) is engine_loop() is not asyncio.get_running_loop()


def test_every_call_lands_on_the_same_loop() -> None:
    assert run_sync(running_loop()) is run_sync(running_loop())


def test_exceptions_propagate() -> None:
    with pytest.raises(ValueError, match="boom"):
        run_sync(fail())


def test_calling_it_on_the_engine_loop_is_an_error() -> None:
    async def nested() -> None:
        run_sync(running_loop())

    with pytest.raises(RuntimeError, match="await the coroutine"):
        run_sync(nested())
