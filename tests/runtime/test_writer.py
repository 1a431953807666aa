"""The group-commit writer (broker/runtime/writer.py): under load its database thread goes
on from one commit to the next by itself, and what depends on the order of commits
holds all the same."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from broker.engine.errors import Unavailable
from broker.engine.messages import BacklogRows, StoredCopy
from broker.runtime.writer import GroupCommitWriter
from tests.engine.helpers import msg


def copy(store_id: int) -> StoredCopy:
    return StoredCopy(store_id, "q", msg("", "q", store_id))


class RecordingStore:
    """Records what reaches its thread, in order; the first write waits for `gate`, and
    the writes listed in `fail` raise once."""

    def __init__(self, fail: Sequence[int] = ()) -> None:
        self.gate = threading.Event()
        self.done: list[str] = []
        self._fail = set(fail)
        self._writes = 0

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        self._writes += 1
        if self._writes == 1:
            assert self.gate.wait(5)
        if self._writes in self._fail:
            raise OSError("the database went away")
        self.done.append("write " + ",".join(str(c.store_id) for c in inserts))

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass

    def refused(self, error: BaseException) -> bool:
        return False

    def find_refused(self, inserts: Sequence[StoredCopy]) -> list[int]:
        return []

    def delete_backlogs(self, backlogs: Sequence[BacklogRows]) -> None:
        self.done.append("delete backlogs")


async def started(writer: GroupCommitWriter, store: RecordingStore) -> asyncio.Task[bool]:
    """A commit of store id 1, held in its write until `store.gate` opens."""
    writer.append([copy(1)])
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.05)  # it is in the thread, waiting at the gate
    return flushing


async def test_the_thread_goes_on_to_what_was_appended_meanwhile_without_the_loop() -> None:
    store = RecordingStore()
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    flushing = await started(writer, store)
    second = writer.append([copy(2), copy(3)])
    store.gate.set()
    time.sleep(0.3)  # the loop does not turn meanwhile: the thread alone goes on
    assert store.done == ["write 1", "write 2,3"]
    assert await flushing
    await asyncio.wait_for(second, 1)
    assert (writer.commits, writer.durable) == (2, 2)
    await writer.close()


async def test_a_failed_commit_after_others_confirms_nothing_of_its_own_and_is_retried() -> None:
    store = RecordingStore(fail=[2])
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    flushing = await started(writer, store)
    first_mark = writer.appended
    second = writer.append([copy(2)])
    store.gate.set()
    assert not await flushing
    assert store.done == ["write 1"]
    with pytest.raises(Unavailable):
        await second
    assert writer.durable == first_mark  # the failed one is not durable
    durable = writer.when_durable(writer.appended)
    assert await writer.flush()  # the retry
    await asyncio.wait_for(durable, 1)
    assert store.done == ["write 1", "write 2"]
    await writer.close()


async def test_other_work_for_the_thread_ends_a_run_of_commits() -> None:
    store = RecordingStore()
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    flushing = await started(writer, store)
    writer.append([copy(2)])
    asked = asyncio.ensure_future(writer.in_thread(store.done.append, "asked"))
    await asyncio.sleep(0)  # the call is queued behind the commit
    store.gate.set()
    assert await flushing
    await asked
    assert store.done == ["write 1", "asked"]
    assert await writer.flush()
    assert store.done == ["write 1", "asked", "write 2"]
    await writer.close()


async def test_a_purged_backlog_is_deleted_after_the_commit_of_what_came_before_it() -> None:
    store = RecordingStore()
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    flushing = await started(writer, store)
    writer.delete_backlogs([BacklogRows("q", after=0, below=10)])
    writer.append([copy(2)])
    store.gate.set()
    assert await flushing
    assert store.done == ["write 1", "delete backlogs"]
    assert await writer.flush()
    assert store.done == ["write 1", "delete backlogs", "write 2"]
    await writer.close()
