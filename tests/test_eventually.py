"""The tests' one waiting helper (tests/eventually.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.eventually import eventually, eventually_sync


async def test_returns_once_the_condition_holds() -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.call_later(0.05, done.set)
    await eventually(done.is_set, what="the event set")
    assert done.is_set()


async def test_an_async_condition_is_awaited() -> None:
    calls = []

    async def third_time() -> bool:
        calls.append(1)
        return len(calls) == 3

    await eventually(third_time, interval=0.001)
    assert len(calls) == 3


async def test_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"not within 0.05 s: the impossible"):
        await eventually(lambda: False, timeout=0.05, what="the impossible")


async def test_without_what_the_condition_s_source_is_named() -> None:
    with pytest.raises(AssertionError, match=r"lambda: 1 == 2"):
        await eventually(lambda: 1 == 2, timeout=0.02)


async def test_an_error_of_the_condition_fails_at_once() -> None:
    def broken() -> bool:
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        await eventually(broken, timeout=60)


def test_the_sync_twin_polls_without_a_loop() -> None:
    done = threading.Event()
    threading.Timer(0.05, done.set).start()
    eventually_sync(done.is_set, what="the event set")
    with pytest.raises(AssertionError, match=r"not within 0.05 s: never"):
        eventually_sync(lambda: False, timeout=0.05, what="never")


def test_the_sync_twin_refuses_an_async_condition() -> None:
    async def condition() -> bool:
        return True

    with pytest.raises(TypeError, match="await eventually"):
        eventually_sync(condition)  # type: ignore[arg-type]
