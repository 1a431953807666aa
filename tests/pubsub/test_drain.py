"""The router's side of the outbox, below the calls: each row is removed, and its
copies stored, once however often it is read or notified; on PostgreSQL the
trigger's notification carries small rows, so that the router need not read them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import OperationalError

from broker.cluster.lease import connection_kwargs
from broker.engine.broker import Planned
from broker.engine.messages import Message, StoredCopy, make_message
from broker.runtime.outbox import OutboxDrain, OutboxEntry, OutboxReader
from broker.runtime.runtime import Runtime
from pubsub import OutboxMessage, publish, publish_many
from pubsub.models import OutboxRow
from queues.models import Message as MessageRow
from queues.models import Queue
from storage.outbox import PostgresSignal, read_outbox
from storage.store import FEW_ROWS, OrmMessageStore
from tests.eventually import eventually
from tests.pubsub.test_publish import bodies, declare, outbox_depth, subscribe

pytestmark = pytest.mark.django_db(transaction=True)

def on_postgresql(test: Any) -> Any:
    """scripts/test runs these in its PostgreSQL run only (the `postgresql` marker); a run of
    one's own on SQLite skips them."""
    on_sqlite = not settings.DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql")
    return pytest.mark.postgresql(pytest.mark.skipif(on_sqlite, reason="PostgreSQL's NOTIFY")(test))


def _message(n: int) -> Message:
    return make_message(
        message_id=f"m{n}", exchange="", routing_key="jobs", body_json=str(n), headers={}, persistent=True,
        published_at="2026-12-03T12:00:00.000000Z",
    )


@pytest.mark.parametrize("copies_per_row", [0, 1, FEW_ROWS], ids=["no copies", "a few copies", "many copies"])
@pytest.mark.parametrize("path", ["one statement", "large", "fenced"])
def test_a_row_is_removed_and_its_copies_stored_once_however_often_it_is_drained(
    copies_per_row: int, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drains of a few rows and of many (on PostgreSQL: one statement with VALUES or arrays;
    bodies too large for one statement, or the cluster's fence: a transaction of several
    statements, with COPY); a copy whose queue is gone is left out."""
    if path == "large":
        monkeypatch.setattr("storage.store.ONE_STATEMENT_BYTES", 0)
    fenced = path == "fenced"
    Queue.objects.create(name="jobs")
    count = FEW_ROWS + 3
    publish_many([OutboxMessage("", n, "jobs") for n in range(count)])
    ids = sorted(OutboxRow.objects.values_list("id", flat=True))
    store = OrmMessageStore(fence=(lambda cursor: None) if fenced else None)
    store_ids = iter(range(1, 10_000))
    rows: list[OutboxDrain] = [
        (
            row_id,
            [StoredCopy(next(store_ids), "jobs", _message(row_id)) for _ in range(copies_per_row)]
            + ([StoredCopy(next(store_ids), "gone", _message(row_id))] if copies_per_row else []),
        )
        for row_id in ids
    ]

    try:
        assert sorted(store.drain_outbox(rows[:2])) == ids[:2]
        assert sorted(store.drain_outbox(rows)) == ids[2:]  # the first two again: gone already
        assert store.drain_outbox(rows) == []
    finally:
        store.close()

    assert OutboxRow.objects.count() == 0
    stored = MessageRow.objects.order_by("id")
    assert stored.count() == count * copies_per_row
    assert {(row.queue.name, row.body, row.message_id) for row in stored} == {
        ("jobs", str(row_id), f"m{row_id}") for row_id in ids if copies_per_row
    }


def test_the_drain_s_connection_leaves_out_django_s_own_options() -> None:
    database = {"NAME": "db", "OPTIONS": {"pool": True, "server_side_binding": True, "sslmode": "prefer"}}
    kwargs = connection_kwargs(database)
    assert (kwargs["dbname"], kwargs["sslmode"]) == ("db", "prefer")
    assert not {"pool", "server_side_binding"} & set(kwargs)


class _Store:
    """Removes only the rows it is told are still there, storing their copies; the answers
    of the first `answers_lost` drains that commit are lost."""

    def __init__(self, there: set[int], *, answers_lost: int = 0) -> None:
        self.there = there
        self.stored: set[int] = set()
        self.answers_lost = answers_lost

    def read_outbox(self, limit: int) -> list[OutboxEntry]:
        return []

    def drain_outbox(self, rows: Sequence[OutboxDrain]) -> list[int]:
        removed = [row_id for row_id, _ in rows if row_id in self.there]
        self.there.difference_update(removed)
        self.stored.update(copy.store_id for row_id, copies in rows if row_id in removed for copy in copies)
        if self.answers_lost:
            self.answers_lost -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return removed

    def stored_copies(self, store_ids: Sequence[int]) -> list[int]:
        return [store_id for store_id in store_ids if store_id in self.stored]

    def refused(self, error: BaseException) -> bool:
        return False

    async def outbox_signal(self) -> Any:
        raise AssertionError("not run")

    def outbox_state(self) -> tuple[int, float | None]:
        return 0, None


async def test_the_reader_enqueues_only_the_rows_it_removed() -> None:
    async def in_thread(fn: Any, *args: Any) -> Any:
        return fn(*args)

    published: list[str] = []
    reader = OutboxReader(
        _Store({1, 3}),
        in_thread=in_thread,
        plan=lambda message: Planned(message, [("jobs", None)], []),
        publish=lambda plan: published.append(plan.message.message_id),
        has_exchange=lambda name: True,
    )
    entries = [OutboxEntry(n, _message(n)) for n in (1, 2, 3)]

    await reader._route(entries)
    await reader._route(entries)  # read, then notified: nothing is there any more

    assert published == ["m1", "m3"] and reader.drained == 2


def _copy(n: int) -> StoredCopy:
    return StoredCopy(store_id=100 + n, queue="jobs", message=_message(n))


async def test_rows_a_drain_removed_whose_answer_was_lost_are_routed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drain's commit lands, its answer does not; the next drain finds the rows gone, as
    it finds rows routed before. Rows 1 (durable copies) and 2 (none) were removed by the lost
    drain; rows 3 (copies) and 4 (none) were routed before it (read, then notified). The
    first look for the copies fails too: it is asked again."""
    monkeypatch.setattr("broker.runtime.outbox.RETRY_SECONDS", 0.0)

    async def in_thread(fn: Any, *args: Any) -> Any:
        return fn(*args)

    class LookFailsOnce(_Store):
        looks = 0

        def stored_copies(self, store_ids: Sequence[int]) -> list[int]:
            self.looks += 1
            if self.looks == 1:
                raise OperationalError("the database is starting up")
            return super().stored_copies(store_ids)

    store = LookFailsOnce({1, 2, 3, 4})
    published: list[str] = []
    copies = {1: [_copy(1)], 2: [], 3: [_copy(3)], 4: []}
    reader = OutboxReader(
        store,
        in_thread=in_thread,
        plan=lambda message: Planned(message, [("jobs", None)], copies[int(message.body_json)]),
        publish=lambda plan: published.append(plan.message.message_id),
        has_exchange=lambda name: True,
    )
    await reader._route([OutboxEntry(3, _message(3)), OutboxEntry(4, _message(4))], read=True)
    store.answers_lost = 1
    copies[3] = [StoredCopy(store_id=200, queue="jobs", message=_message(3))]  # planned anew

    await reader._route([OutboxEntry(n, _message(n)) for n in (1, 2, 3, 4)])

    assert published == ["m3", "m4", "m1", "m2"] and reader.drained == 4
    assert store.there == set() and store.stored == {101, 103} and store.looks == 2


async def test_after_a_drain_that_did_not_land_the_next_removes_its_rows() -> None:
    async def in_thread(fn: Any, *args: Any) -> Any:
        return fn(*args)

    class Away(_Store):
        def drain_outbox(self, rows: Sequence[OutboxDrain]) -> list[int]:
            if self.answers_lost:
                self.answers_lost -= 1
                raise OperationalError("could not connect to server")
            return super().drain_outbox(rows)

    store = Away({1, 2}, answers_lost=1)
    published: list[str] = []
    reader = OutboxReader(
        store,
        in_thread=in_thread,
        plan=lambda message: Planned(message, [("jobs", None)], [_copy(int(message.body_json))]),
        publish=lambda plan: published.append(plan.message.message_id),
        has_exchange=lambda name: True,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("broker.runtime.outbox.RETRY_SECONDS", 0.0)
        await reader._route([OutboxEntry(n, _message(n)) for n in (1, 2)])

    assert published == ["m1", "m2"] and store.stored == {101, 102}


async def test_a_drain_whose_answer_was_lost_delivers_its_rows_from_the_database(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real store: the drain commits, then its connection drops before the answer."""
    monkeypatch.setattr("broker.runtime.outbox.RETRY_SECONDS", 0.0)
    await declare("jobs")
    sink = subscribe(runtime, "jobs")
    drain = runtime.store.drain_outbox
    lost = [1]

    def answer_lost(rows: Sequence[OutboxDrain]) -> list[int]:
        removed = drain(rows)
        if lost and removed:
            lost.pop()
            raise OperationalError("server closed the connection unexpectedly")
        return removed

    monkeypatch.setattr(runtime.store, "drain_outbox", answer_lost)

    await database_sync_to_async(publish_many)([OutboxMessage("", n, "jobs") for n in range(3)])

    await eventually(lambda: bodies(sink) == [0, 1, 2], what="the rows the lost drain removed, once each")
    assert not lost and await outbox_depth() == 0
    await asyncio.sleep(0.2)
    assert bodies(sink) == [0, 1, 2]


@on_postgresql
async def test_the_notification_carries_small_rows_and_announces_large_ones() -> None:
    signal = PostgresSignal(settings.DATABASES["default"])
    try:
        assert await signal.wait(1.0) is None  # connected and listening: read the table once

        await database_sync_to_async(publish)("", {"n": 1}, routing_key="jobs", headers={"k": "v"})
        notified = await signal.wait(5.0)
        table = await database_sync_to_async(read_outbox)(10)
        assert notified is not None and notified == table  # the same rows, checked the same way

        await database_sync_to_async(publish)("", "x" * 7000, routing_key="jobs")  # too large for a payload
        assert await signal.wait(5.0) is None
        await database_sync_to_async(publish_many)([OutboxMessage("", n, "jobs") for n in range(40)])  # too many
        assert await signal.wait(5.0) is None
    finally:
        await signal.close()


@on_postgresql
async def test_a_notified_row_is_routed_without_reading_the_table(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await declare("jobs")
    sink = subscribe(runtime, "jobs")
    await asyncio.sleep(0.1)  # the reader listens (and read the table once)
    monkeypatch.setattr(runtime.store, "read_outbox", lambda limit: [])

    for n in range(3):
        await database_sync_to_async(publish)("", n, routing_key="jobs")

    await eventually(lambda: bodies(sink) == [0, 1, 2], what="the notified rows, in order")
    assert await outbox_depth() == 0
