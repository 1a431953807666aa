"""`within` (broker/runtime/timeouts.py): a task cancelled in the same turn as what it waits
for becomes ready is cancelled all the same. Python 3.11's `asyncio.wait_for` returned
the result instead, and a task waiting in a loop, like the writer's, never ended: the
router's stop waited for ever."""

from __future__ import annotations

import asyncio

import pytest

from broker.runtime.timeouts import within
from broker.runtime.writer import GroupCommitWriter
from tests.runtime.test_writer import RecordingStore


async def waiting_in_a_loop(ready: asyncio.Event) -> None:
    while True:
        try:
            await within(ready.wait(), 5)
        except TimeoutError:
            pass
        ready.clear()


async def ended(task: asyncio.Task[None]) -> bool:
    done, _ = await asyncio.wait({task}, timeout=2)
    return bool(done)


async def test_a_cancel_in_the_same_turn_as_the_result_is_not_lost() -> None:
    ready = asyncio.Event()
    task = asyncio.create_task(waiting_in_a_loop(ready))
    await asyncio.sleep(0.01)
    ready.set()
    task.cancel()
    assert await ended(task)
    assert task.cancelled()


async def test_the_writer_woken_as_it_is_cancelled_stops() -> None:
    writer = GroupCommitWriter(RecordingStore(hold=(99,)), checkpoint_seconds=10.0)
    task = asyncio.create_task(writer.run())
    await asyncio.sleep(0.01)
    writer.delete_queues([7])  # wakes it...
    task.cancel()  # ...in the turn the router stops it
    assert await ended(task)
    assert task.cancelled()
    await writer.close()


async def test_it_times_out_and_gives_the_result_in_time() -> None:
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(1), 0.01)
    assert await within(asyncio.sleep(0, "done"), 1) == "done"
    assert await within(asyncio.sleep(0, "no limit"), None) == "no limit"
