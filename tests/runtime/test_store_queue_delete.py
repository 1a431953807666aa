"""PostgreSQL: a queue deleted while the router's writer stores copies for it. Django's
foreign keys are checked at COMMIT, so the two used to meet only there, and one failed: the
deletion, or the writer's commit, which was then retried as it was, for ever. Each test holds
one side's transaction open at the moment that matters, on a connection of its own."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import IntegrityError, connection
from django.db.models.signals import ModelSignal, post_delete, pre_delete

from broker.engine.messages import StoredCopy, make_message
from pubsub import OutboxMessage, publish_many
from pubsub.models import OutboxRow
from queues.models import Message as MessageRow
from queues.models import Queue
from queues.services import queue_delete
from storage import store as store_module
from storage.store import COPY_ROWS, OrmMessageStore

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"),
        reason="PostgreSQL's deferred foreign keys and row locks",
    ),
    pytest.mark.django_db(transaction=True),
]

# How long a side may wait for the other before the test gives up on it.
WAIT_SECONDS = 10.0


class Side(threading.Thread):
    """One side of the race, on a database connection of its own (its thread's)."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._work = work
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._work()
        except BaseException as error:  # reported by `outcome`, in the test's thread
            self.error = error
        finally:
            connection.close()

    def outcome(self) -> Any:
        self.join(WAIT_SECONDS)
        assert not self.is_alive(), "still waiting"
        if self.error is not None:
            raise self.error
        return self.result


def _closing(store: OrmMessageStore, write: Callable[[], Any]) -> Callable[[], Any]:
    """`write`, then the store's connections closed (the drain's too), whatever happened."""

    def written() -> Any:
        try:
            return write()
        finally:
            store.close()

    return written


def _copy(store_id: int, queue: str) -> StoredCopy:
    message = make_message(
        message_id=f"m{store_id}", exchange="", routing_key=queue, body_json=str(store_id), headers={},
        persistent=True, published_at="2026-12-07T12:00:00.000000Z",
    )
    return StoredCopy(store_id, queue, message)


def _copies(count: int) -> list[StoredCopy]:
    """`count` copies, alternately for the queue being deleted and for one that stays."""
    return [_copy(store_id, "doomed" if store_id % 2 else "kept") for store_id in range(1, count + 1)]


def _waits_for_a_lock(side: Side) -> bool:
    """Does another connection wait for a lock (the other side's) while `side` runs? Polled:
    the wait is seen in pg_stat_activity."""
    deadline = time.monotonic() + WAIT_SECONDS
    with connection.cursor() as cursor:
        while side.is_alive() and time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.01)
    return False


@contextlib.contextmanager
def _paused_deletion(signal: ModelSignal) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(reached, go on): a queue's deletion through Django pauses at `signal` (pre_delete:
    its row locked, nothing deleted yet; post_delete: every row deleted, before its COMMIT),
    until told to go on."""
    reached, go_on = threading.Event(), threading.Event()

    def pause(**kwargs: Any) -> None:
        reached.set()
        go_on.wait(WAIT_SECONDS)

    signal.connect(pause, sender=Queue, weak=False, dispatch_uid="test_paused_deletion")
    try:
        yield reached, go_on
    finally:
        go_on.set()
        signal.disconnect(sender=Queue, dispatch_uid="test_paused_deletion")


@pytest.fixture
def paused_deletion() -> Iterator[tuple[threading.Event, threading.Event]]:
    with _paused_deletion(post_delete) as events:
        yield events


def _the_writer_waits_for(delete: Callable[[], Any], write: Callable[[OrmMessageStore], Any]) -> None:
    """`delete` (a deletion through Django) pauses with its first queue row locked; `write`
    (the router's writer's) must then wait for a lock, and both end once it goes on."""
    with _paused_deletion(pre_delete) as (locked, go_on):
        deletion = Side(delete)
        deletion.start()
        assert locked.wait(WAIT_SECONDS)
        store = OrmMessageStore()
        writer = Side(_closing(store, lambda: write(store)))
        writer.start()
        try:
            waited = _waits_for_a_lock(writer)
        finally:
            go_on.set()
        deletion.outcome()
        writer.outcome()
    assert waited, "the writer did not wait for the deletion"


def _queues() -> None:
    doomed = Queue.objects.create(name="doomed")
    Queue.objects.create(name="kept")
    MessageRow.objects.create(id=1_000, queue=doomed, message_id="before", body="0", published_at="t")


def _stored() -> list[tuple[str, int]]:
    return sorted((row.queue.name, row.id) for row in MessageRow.objects.select_related("queue"))


@pytest.mark.parametrize("path", ["commit of a few", "commit of many", "drain", "fenced drain"])
def test_a_copy_stored_while_its_queue_is_being_deleted_is_left_out(
    path: str, paused_deletion: tuple[threading.Event, threading.Event]
) -> None:
    """The writer waits for the deletion's COMMIT, then finds the queue gone: the deletion
    succeeds, the writer's commit too, without the copy (a commit of a few goes by one
    INSERT that finds the queues itself, of many by a lookup and COPY; an outbox drain by
    one statement, or, fenced, by a transaction of several)."""
    _queues()
    deleted, go_on = paused_deletion
    copies = _copies(2 if path == "commit of a few" else COPY_ROWS + 2)
    store = OrmMessageStore(fence=(lambda cursor: None) if path == "fenced drain" else None)
    if path.endswith("drain"):
        publish_many([OutboxMessage("", 1, "kept")])
        row_id = OutboxRow.objects.get().id

        def write() -> Any:
            return store.drain_outbox([(row_id, copies)])
    else:
        def write() -> Any:
            return store.write(copies, [], [])

    deletion = Side(lambda: queue_delete(name="doomed"))
    deletion.start()
    assert deleted.wait(WAIT_SECONDS)
    writer = Side(_closing(store, write))
    writer.start()
    try:
        assert _waits_for_a_lock(writer), "the writer did not wait for the deletion"
    finally:
        go_on.set()
    deletion.outcome()
    written = writer.outcome()

    if path.endswith("drain"):
        assert written == [row_id]
    assert not Queue.objects.filter(name="doomed").exists()
    assert _stored() == [("kept", copy.store_id) for copy in copies if copy.queue == "kept"]


@pytest.mark.parametrize("count", [2, COPY_ROWS + 2], ids=["a few", "many"])
def test_a_queue_deleted_while_copies_for_it_are_committed_takes_them_with_it(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deletion waits for the writer's COMMIT, then deletes the copies it stored: both
    succeed, and nothing of the queue is left."""
    _queues()
    written, go_on = threading.Event(), threading.Event()
    write_rows = OrmMessageStore._write_rows

    def paused(*args: Any) -> None:
        write_rows(*args)
        written.set()
        go_on.wait(WAIT_SECONDS)

    monkeypatch.setattr(OrmMessageStore, "_write_rows", staticmethod(paused))
    copies = _copies(count)
    store = OrmMessageStore()
    writer = Side(_closing(store, lambda: store.write(copies, [], [])))
    writer.start()
    try:
        assert written.wait(WAIT_SECONDS)
        deletion = Side(lambda: queue_delete(name="doomed"))
        deletion.start()
        waited = _waits_for_a_lock(deletion)
    finally:
        go_on.set()
    writer.outcome()
    deletion.outcome()

    assert waited, "the deletion did not wait for the writer"
    assert not Queue.objects.filter(name="doomed").exists()
    assert _stored() == [("kept", copy.store_id) for copy in copies if copy.queue == "kept"]


def test_a_queue_the_router_deletes_while_django_deletes_it_is_deleted_once() -> None:
    """The router's writer deletes a queue (auto-delete, expires) that Django is deleting,
    its row locked: the writer waits for it, rather than lock the queue's messages first and
    deadlock with it."""
    _queues()
    doomed = Queue.objects.get(name="doomed").pk
    _the_writer_waits_for(lambda: queue_delete(name="doomed"), lambda store: store.write([], [], [doomed]))
    assert not Queue.objects.filter(name="doomed").exists()
    assert _stored() == []


def test_the_copies_a_foreign_key_refuses_at_commit_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy that only the COMMIT's check of a foreign key refuses (here: its queue's id
    looked up stale) is named by `find_refused`, which never commits: else the writer
    retried its whole batch as it was, and failed every publisher of it, for ever."""
    kept = Queue.objects.create(name="kept")
    gone = Queue.objects.create(name="gone")
    gone_id = gone.pk
    gone.delete()
    monkeypatch.setattr(store_module, "COPY_ROWS", 0)  # every commit by lookup and COPY
    lookup = store_module._queue_ids
    monkeypatch.setattr(store_module, "_queue_ids", lambda names: {**lookup(names), "gone": gone_id})
    stale, good = _copy(1, "gone"), _copy(2, "kept")
    store = OrmMessageStore()
    try:
        with pytest.raises(IntegrityError) as refused:
            store.write([stale, good], [], [])
        assert store.refused(refused.value)
        assert store.find_refused([stale, good]) == [stale.store_id]
        assert not MessageRow.objects.exists()  # nothing written
        store.write([good], [], [])
    finally:
        store.close()
    assert list(MessageRow.objects.values_list("queue_id", "id")) == [(kept.pk, 2)]


def test_a_deletion_of_several_queues_and_the_writer_deleting_one_of_them_wait_rather_than_deadlock() -> None:
    """Django deletes queues B and A (B's id the lower), locking each row in id order; the
    writer deletes A (the router dropped it) and stores a copy for B. Deleting A first and
    then locking B, the writer waited for the deletion while it waited for A: a deadlock."""
    first = Queue.objects.create(name="first")
    second = Queue.objects.create(name="second")
    assert first.pk < second.pk
    _the_writer_waits_for(  # the deletion paused with the first row locked
        lambda: Queue.objects.filter(name__in=["first", "second"]).delete(),
        lambda store: store.write([_copy(7, "first")], [], [second.pk]),
    )
    assert not Queue.objects.exists()
    assert _stored() == []
