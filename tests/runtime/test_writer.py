"""The group-commit writer (broker/runtime/writer.py): under load its database thread goes
on from one commit to the next by itself, and what depends on the order of commits
holds all the same."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from broker.engine.errors import Unavailable
from broker.engine.messages import BacklogRows, StoredCopy
from broker.runtime.writer import GroupCommitWriter
from tests.engine.helpers import msg


def copy(store_id: int) -> StoredCopy:
    return StoredCopy(store_id, "q", msg("", "q", store_id))


class RecordingStore:
    """Records what reaches its thread, in order; the writes numbered in `hold` (the first
    by default) wait for their gate, and those in `fail` raise."""

    def __init__(self, fail: Sequence[int] = (), hold: Sequence[int] = (1,)) -> None:
        self.gates = {number: threading.Event() for number in hold}
        self.gate = self.gates[hold[0]]
        self.done: list[str] = []
        self._fail = set(fail)
        self._writes = 0

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        self._writes += 1
        if self._writes in self.gates:
            assert self.gates[self._writes].wait(5)
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

    def stored_copies(self, store_ids: Sequence[int]) -> list[int]:
        return []

    def delete_backlogs(self, backlogs: Sequence[BacklogRows]) -> None:
        self.done.append("delete backlogs")


async def started(writer: GroupCommitWriter, store: RecordingStore) -> asyncio.Task[bool]:
    """A commit of store id 1, held in its write until `store.gate` opens."""
    writer.append([copy(1)])
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.05)  # it has gone to the thread
    return flushing


def blocked(condition: Callable[[], bool]) -> None:
    """Wait for `condition` without letting the event loop turn (at most 5 s)."""
    deadline = time.monotonic() + 5
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


async def test_the_thread_goes_on_to_what_was_appended_meanwhile_without_the_loop() -> None:
    store = RecordingStore()
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    flushing = await started(writer, store)
    second = writer.append([copy(2), copy(3)])
    store.gate.set()
    blocked(lambda: len(store.done) == 2)  # the loop does not turn meanwhile: the thread alone goes on
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
    assert await flushing  # what was pending as it began is committed
    assert store.done == ["write 1"]
    with pytest.raises(Unavailable):
        await second
    assert writer.durable == first_mark  # the failed one is not durable
    durable = writer.when_durable(writer.appended)
    assert await writer.flush()  # the retry
    await asyncio.wait_for(durable, 1)
    assert store.done == ["write 1", "write 2"]
    await writer.close()


async def test_a_queue_row_to_delete_is_waited_for_until_a_commit_has_deleted_it() -> None:
    store = RecordingStore(fail=[1], hold=[0])
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    writer.delete_queues([7])
    deleted = writer.queue_row_deleted(7)
    assert deleted is not None and writer.queue_row_deleted(8) is None
    assert not await writer.flush()  # failed: kept for the retry
    assert not deleted.done()
    assert await writer.flush()
    assert deleted.done() and writer.queue_row_deleted(7) is None
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


async def test_a_purged_backlog_is_deleted_after_the_commit_of_what_came_before_it_and_before_that_is_durable() -> None:
    store = RecordingStore()
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    flushing = await started(writer, store)
    writer.delete_backlogs([BacklogRows("q", after=0, below=10)])
    seen_when_durable: list[list[str]] = []
    writer.when_durable(writer.appended).add_done_callback(lambda _: seen_when_durable.append(list(store.done)))
    writer.append([copy(2)])
    store.gate.set()
    assert await flushing
    assert store.done == ["write 1", "delete backlogs", "write 2"]
    assert seen_when_durable[0][:2] == ["write 1", "delete backlogs"]
    await writer.close()


async def test_a_call_given_up_before_it_ran_does_not_hold_up_later_runs() -> None:
    store = RecordingStore(hold=(1, 2))
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    flushing = await started(writer, store)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.in_thread(store.done.append, "never"), 0.01)
    store.gate.set()
    assert await flushing
    writer.append([copy(2)])
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.05)  # held in its write
    writer.append([copy(3)])
    store.gates[2].set()
    blocked(lambda: len(store.done) == 3)
    assert store.done == ["write 1", "write 2", "write 3"]
    assert await flushing
    await writer.close()


async def test_a_commit_with_nothing_left_to_write_is_not_written_and_confirms_at_once() -> None:
    store = RecordingStore()
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    flushing = await started(writer, store)
    gone = writer.append([copy(2)])
    writer.delete([2])  # acknowledged before it was ever written
    store.gate.set()
    assert await flushing
    await asyncio.wait_for(gone, 1)
    assert store.done == ["write 1"]
    await writer.close()


async def test_a_flush_that_finds_a_commit_under_way_returns_once_its_own_data_is_committed() -> None:
    store = RecordingStore()
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    flushing = await started(writer, store)
    asked = asyncio.ensure_future(writer.in_thread(store.done.append, "asked"))  # ends the run after write 1
    await asyncio.sleep(0)
    mine = writer.append([copy(2)])
    mine_flushed = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.05)
    store.gate.set()
    assert await mine_flushed
    assert store.done == ["write 1", "asked", "write 2"]
    assert mine.done()
    assert await flushing and await asked is None
    await writer.close()


async def test_after_close_a_commit_fails_and_keeps_what_was_pending() -> None:
    store = RecordingStore(hold=(99,))
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    await writer.close()
    batch = writer.append([copy(1)])
    assert not await writer.flush()
    with pytest.raises(Unavailable):
        await batch
    assert writer.durable == 0 and writer.appended == 1
    with pytest.raises(RuntimeError):
        await writer.in_thread(store.done.append, "late")
    assert store.done == []


async def test_a_publish_sent_again_with_nothing_to_write_is_answered_after_the_commit_under_way() -> None:
    """`append(())`: a refused publish sent again while its copies' retried commit is under
    way; it is answered when that commit lands, not at the next checkpoint."""
    store = RecordingStore()
    writer = GroupCommitWriter(store, checkpoint_seconds=30.0)
    running = asyncio.create_task(writer.run())
    writer.append([copy(1)])
    await asyncio.sleep(0.05)  # the run has taken it and waits at the gate
    again = writer.append(())
    store.gate.set()
    await asyncio.wait_for(again, 2)
    assert store.done == ["write 1"]
    running.cancel()
    await writer.close()


class RefusingStore(RecordingStore):
    """Refuses the copies with these store ids for good, as a constraint would."""

    def __init__(self, refused_ids: Sequence[int]) -> None:
        super().__init__(hold=(99,))
        self.refused_ids = set(refused_ids)

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        if any(c.store_id in self.refused_ids for c in inserts):
            raise ValueError("the check constraint says no")
        super().write(inserts, deletes, queues_to_delete)

    def refused(self, error: BaseException) -> bool:
        return isinstance(error, ValueError)

    def find_refused(self, inserts: Sequence[StoredCopy]) -> list[int]:
        return [c.store_id for c in inserts if c.store_id in self.refused_ids]


async def test_copies_left_out_of_a_commit_are_told_before_the_commit_counts_as_durable() -> None:
    store = RefusingStore([2])
    told: list[tuple[set[int], int]] = []
    writer = GroupCommitWriter(
        store, checkpoint_seconds=10.0, on_left_out=lambda store_ids: told.append((store_ids, writer.durable))
    )
    batch = writer.append([copy(1), copy(2), copy(3)])
    assert await writer.flush()
    with pytest.raises(Unavailable):
        await batch  # which publisher's copy it was is not known: none is confirmed
    assert store.done == ["write 1,3"]
    assert told == [({2}, 0)] and writer.durable == 1  # told while nothing of it was durable yet
    await writer.close()


class AnswerLostStore(RecordingStore):
    """Its first write commits, and its answer is lost; the rows it holds then refuse to be
    inserted again, as a primary key does."""

    def __init__(self) -> None:
        super().__init__(hold=(99,))
        self.rows: set[int] = set()

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        if any(c.store_id in self.rows for c in inserts):
            raise ValueError("duplicate key value violates unique constraint")
        super().write(inserts, deletes, queues_to_delete)
        first = not self.rows
        self.rows.update(c.store_id for c in inserts)
        self.rows.difference_update(deletes)
        if first:
            raise OSError("server closed the connection unexpectedly")

    def refused(self, error: BaseException) -> bool:
        return isinstance(error, ValueError)

    def find_refused(self, inserts: Sequence[StoredCopy]) -> list[int]:
        return [c.store_id for c in inserts if c.store_id in self.rows]

    def stored_copies(self, store_ids: Sequence[int]) -> list[int]:
        return [store_id for store_id in store_ids if store_id in self.rows]


async def test_copies_a_commit_whose_answer_was_lost_stored_are_confirmed_by_its_retry() -> None:
    store = AnswerLostStore()
    told: list[set[int]] = []
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0, on_left_out=told.append)
    first = writer.append([copy(1), copy(2)])
    assert not await writer.flush()  # no answer: retried
    with pytest.raises(Unavailable):
        await first
    again = writer.append([copy(3)])
    assert await writer.flush()
    await again  # 1 and 2 were stored by the first commit; 3 by this one
    assert store.done == ["write 1,2", "write 3"] and store.rows == {1, 2, 3}
    assert told == [] and writer.durable == writer.appended
    await writer.close()


async def test_a_copy_acknowledged_before_the_retry_of_a_commit_whose_answer_was_lost_is_deleted() -> None:
    """Its insert and its delete meet in the retry: the insert may have landed, so the delete
    is written (left out with it, the row stayed for ever, and came back after a restart)."""
    store = AnswerLostStore()
    writer = GroupCommitWriter(store, checkpoint_seconds=10.0)
    writer.append([copy(1), copy(2)])
    assert not await writer.flush()
    writer.delete([1])  # acknowledged meanwhile
    assert await writer.flush()
    assert store.rows == {2}
    writer.delete([2])
    writer.append([copy(3), copy(4)])
    writer.delete([3])  # never tried: neither write
    assert await writer.flush()
    assert store.rows == {4} and store.done[-1] == "write 4"
    await writer.close()
