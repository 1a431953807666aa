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
    """Removes only the rows it is told are still there."""

    def __init__(self, there: set[int]) -> None:
        self.there = there

    def read_outbox(self, limit: int) -> list[OutboxEntry]:
        return []

    def drain_outbox(self, rows: Sequence[OutboxDrain]) -> list[int]:
        removed = [row_id for row_id, _ in rows if row_id in self.there]
        self.there.difference_update(removed)
        return removed

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
