"""Durable queues deeper than their window, with the real ORM store: the backlog stays
in the database, is read back in order as consumers take messages, and a restart
reads only the windows."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import DEFAULT_DB_ALIAS, connections

from broker.engine.jsoncodec import dumps, loads
from broker.engine.queues import AckMode
from broker.protocol.publish import PublishRequest
from broker.runtime.runtime import Runtime
from queues.models import Message, Queue
from storage.store import OrmMessageStore
from tests.conftest import Sink
from tests.eventually import eventually

WINDOW = 10


def windowed_runtime() -> Runtime:
    return Runtime(OrmMessageStore(), checkpoint_seconds=0.2, layer=get_channel_layer(), window=WINDOW)


@pytest.fixture
async def runtime(transactional_db: object) -> Runtime:  # type: ignore[misc]
    runtime = windowed_runtime()
    await runtime.start()
    yield runtime
    await runtime.stop()


async def fill(runtime: Runtime, queue: str, count: int, *, persistent: bool = True) -> None:
    for n in range(count):
        await runtime.publish(PublishRequest("", queue, dumps(n), {}, persistent, None))


def bodies(sink: Sink) -> list[int]:
    return [loads(frame)["body"] for frame in sink.frames if frame.startswith("{")]


async def test_a_deep_queue_keeps_its_window_in_memory_and_the_rest_in_the_database(runtime: Runtime) -> None:
    await database_sync_to_async(Queue.objects.create)(name="deep")
    await fill(runtime, "deep", 100)
    state = runtime.broker.queues["deep"]
    assert len(state.ready) == WINDOW
    assert runtime.queue_counts(["deep"])["deep"].messages_ready == 100
    assert await database_sync_to_async(Message.objects.count)() == 100

    sink = Sink()
    connection = runtime.connect(sink)
    runtime.subscribe(connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.AUTO, prefetch=0, queue="deep")
    await eventually(lambda: len(bodies(sink)) == 100, interval=0.01, what="the whole backlog delivered")
    assert bodies(sink) == list(range(100))
    assert state.backlog is None


async def test_a_get_waits_for_the_window_rather_than_answer_empty(runtime: Runtime) -> None:
    await database_sync_to_async(Queue.objects.create)(name="polled")
    await fill(runtime, "polled", 35)
    taken: list[int] = []
    while len(taken) < 35:
        got = await runtime.get_waiting("polled", count=4, ack=True)
        assert got, f"an empty answer after {len(taken)} messages"
        taken += [message["body"] for message in got]
    assert taken == list(range(35))
    await fill(runtime, "polled", 35)
    everything = await runtime.get_waiting("polled", count=100, ack=True)  # reads on through the backlog
    assert [message["body"] for message in everything] == list(range(35))


async def test_a_purge_deletes_the_backlog_rows_too(runtime: Runtime) -> None:
    await database_sync_to_async(Queue.objects.create)(name="purged")
    await fill(runtime, "purged", 50)
    assert runtime.purge("purged") == 50

    async def no_rows() -> bool:
        return await database_sync_to_async(Message.objects.count)() == 0

    await eventually(no_rows, interval=0.05, what="the purged rows deleted")
    await fill(runtime, "purged", 3)
    assert [m["body"] for m in await runtime.get_waiting("purged", count=10, ack=True)] == [0, 1, 2]


async def test_a_restart_reads_the_windows_and_leaves_the_rest_in_the_database(runtime: Runtime) -> None:
    await database_sync_to_async(Queue.objects.create)(name="kept")
    await fill(runtime, "kept", 60)
    await fill(runtime, "kept", 5, persistent=False)  # memory only: gone with the restart
    await runtime.stop()

    restarted = windowed_runtime()
    await restarted.start()
    try:
        assert restarted.loaded_messages == 60
        state = restarted.broker.queues["kept"]
        assert len(state.ready) == WINDOW
        assert restarted.queue_counts(["kept"])["kept"].messages_ready == 60
        sink = Sink()
        connection = restarted.connect(sink)
        restarted.subscribe(
            connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.CLIENT, prefetch=7, queue="kept"
        )
        got: list[tuple[int, bool]] = []
        while len(got) < 60:
            await eventually(lambda: len(sink.frames) > 0, interval=0.01, what="more deliveries")
            frames, sink.frames[:] = list(sink.frames), []
            for frame in frames:
                message = loads(frame)
                got.append((message["body"], message["redelivered"]))
                restarted.ack(connection, message["delivery_tag"], multiple=False)
        assert got == [(n, True) for n in range(60)]  # stored before the restart: maybe delivered
    finally:
        await restarted.stop()
    assert await database_sync_to_async(Message.objects.count)() == 0


def test_deleting_purged_rows_waits_for_another_process_s_write_lock(transactional_db: object) -> None:
    """On SQLite the writer's connection has no busy handler (its commits retry BEGIN
    IMMEDIATE themselves); the delete of a purged backlog did not, and failed at once while
    Django code in another process held the lock: the purged rows came back at the next
    restart. PostgreSQL waits for a lock by itself."""
    import threading
    import time

    from broker.engine.messages import BacklogRows

    store = OrmMessageStore()
    store.write([], [], [])  # as after any commit: on SQLite this connection's busy handler is off
    other = connections.create_connection(DEFAULT_DB_ALIAS)  # another process's connection
    other.ensure_connection()
    raw = other.connection
    table = other.ops.quote_name(Message._meta.db_table)
    if other.vendor == "sqlite":
        raw.isolation_level = None
        raw.execute("BEGIN IMMEDIATE")
    else:
        raw.autocommit = False
        raw.cursor().execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    releasing = threading.Timer(0.3, raw.commit if other.vendor != "sqlite" else lambda: raw.execute("COMMIT"))
    releasing.start()
    started = time.monotonic()
    try:
        store.delete_backlogs([BacklogRows("x", 0, 10)])
    finally:
        releasing.join()
        other.close()
    assert time.monotonic() - started >= 0.25  # it waited for the lock, then deleted


@pytest.mark.parametrize("count", [1, 40])  # PostgreSQL: one INSERT below 32 rows, COPY from 32
def test_a_stored_copy_keeps_the_origin_the_broker_recorded(transactional_db: object, count: int) -> None:
    """What a replay follows (broker/runtime/browser.py) is read back with the row, and a
    message the broker did not dead-letter reads back with none."""
    from broker.engine.messages import StoredCopy, make_message

    Queue.objects.create(name="dead")
    store = OrmMessageStore()
    copies = [
        StoredCopy(n, "dead", make_message(
            message_id=f"m{n}", exchange="dlx", routing_key="new", body_json=dumps(n), headers={}, persistent=True,
            published_at="", origin=("orders", "new") if n % 2 else None,
        ))
        for n in range(1, count + 1)
    ]
    store.write(copies, [], [])
    read = store.read_backlog("dead", 0, count + 1, count)
    assert [(store_id, m.origin) for store_id, m in read] == [(c.store_id, c.message.origin) for c in copies]
