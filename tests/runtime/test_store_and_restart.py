"""The runtime with the real ORM store: commits before answers, checkpointed
deletes, and what a restart loads back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from channels.db import database_sync_to_async

from broker_project.engine.errors import Unavailable
from broker_project.engine.jsoncodec import dumps
from broker_project.engine.messages import StoredCopy
from broker_project.engine.queues import AckMode
from broker_project.publishing import PublishRequest
from broker_project.runtime import Runtime
from queues.models import Message, Queue
from queues.store import OrmMessageStore
from tests.conftest import Sink, _new_runtime


async def publish(runtime: Runtime, queue: str, body: object, *, persistent: bool = True) -> tuple[str, int]:
    return await runtime.publish(PublishRequest("", queue, dumps(body), {}, persistent, None))


@database_sync_to_async
def rows(queue: str) -> list[str]:
    return list(Message.objects.filter(queue__name=queue).order_by("id").values_list("body", flat=True))


async def test_a_confirmed_persistent_message_is_already_in_the_database(runtime: Runtime) -> None:
    await database_sync_to_async(Queue.objects.create)(name="jobs")
    await database_sync_to_async(Queue.objects.create)(name="scratch", durable=False)
    _, routed = await publish(runtime, "jobs", {"n": 1})
    assert routed == 1
    assert await rows("jobs") == ['{"n":1}']
    await publish(runtime, "jobs", "transient", persistent=False)
    await publish(runtime, "scratch", "durable message, transient queue")
    assert await rows("jobs") == ['{"n":1}']  # non-persistent messages and non-durable queues stay in memory
    assert await rows("scratch") == []


async def test_concurrent_publishes_share_commits(runtime: Runtime) -> None:
    await database_sync_to_async(Queue.objects.create)(name="busy")
    assert runtime.writer is not None
    before = runtime.writer.commits
    results = await asyncio.gather(*(publish(runtime, "busy", n) for n in range(200)))
    assert all(routed == 1 for _, routed in results)
    assert len(await rows("busy")) == 200
    assert runtime.writer.commits - before < 50  # group commit: far fewer commits than messages


async def test_acks_are_deleted_by_the_checkpoint_and_a_restart_loads_the_rest_in_order(runtime: Runtime) -> None:
    await database_sync_to_async(Queue.objects.create)(name="orders")
    for n in range(5):
        await publish(runtime, "orders", n)
    sink = Sink()
    connection = runtime.connect(sink)
    runtime.subscribe(connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.CLIENT, prefetch=2, queue="orders")
    assert len(sink.frames) == 2
    runtime.ack(connection, 1, multiple=False)  # body 0
    await asyncio.sleep(0.6)  # past the fixture's 0.2 s checkpoint
    assert await rows("orders") == ["1", "2", "3", "4"]
    runtime.disconnect(connection)  # body 1 (unacked) and 2 (delivered after the ack) go back
    await runtime.stop()

    restarted = _new_runtime()
    await restarted.start()
    try:
        assert restarted.loaded_messages == 4
        taken = restarted.get("orders", count=10, ack=True)
        assert [(m["body"], m["redelivered"]) for m in taken] == [(1, True), (2, True), (3, True), (4, True)]
    finally:
        await restarted.stop()
    assert await rows("orders") == []  # stop() flushed the deletes of the acknowledged get


class FailingStore(OrmMessageStore):
    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[str]) -> None:
        if inserts:
            raise OSError("disk on fire")
        super().write(inserts, deletes, queues_to_delete)


@pytest.mark.django_db(transaction=True)
async def test_a_message_that_cannot_be_stored_is_never_confirmed() -> None:
    await database_sync_to_async(Queue.objects.create)(name="fragile")
    runtime = Runtime(FailingStore(), checkpoint_seconds=0.2)
    await runtime.start()
    try:
        with pytest.raises(Unavailable):
            await publish(runtime, "fragile", "lost?")
        _, routed = await publish(runtime, "fragile", "memory only", persistent=False)
        assert routed == 1  # non-durable traffic keeps flowing
    finally:
        await runtime.stop()


async def test_orm_changes_reach_the_router(runtime: Runtime) -> None:
    queue = await database_sync_to_async(Queue.objects.create)(name="live", arguments={"max_length": 1})
    assert "live" in runtime.broker.queues
    await publish(runtime, "live", 1)
    await publish(runtime, "live", 2)
    assert runtime.broker.queue_counts("live").messages_ready == 1  # type: ignore[union-attr]
    await database_sync_to_async(queue.delete)()
    assert "live" not in runtime.broker.queues


async def test_changes_from_a_process_without_a_router_arrive_over_the_channel_layer(runtime: Runtime) -> None:
    from broker_project.engine.queues import QueueSpec
    from broker_project.sync import broadcast
    from broker_project.topology import QueueSaved

    await asyncio.sleep(0.05)  # let the listener join its group
    await database_sync_to_async(broadcast)(QueueSaved(QueueSpec("from-elsewhere", arguments={"max_length": 3})))
    for _ in range(50):
        if "from-elsewhere" in runtime.broker.queues:
            break
        await asyncio.sleep(0.02)
    assert runtime.broker.queues["from-elsewhere"].args.max_length == 3


class FlakyStore(OrmMessageStore):
    """Refuses the first commit that inserts anything, as a database that blinks."""

    def __init__(self) -> None:
        self.failures = 0

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        if inserts and self.failures == 0:
            self.failures += 1
            raise OSError("connection reset")
        super().write(inserts, deletes, queues_to_delete)


@pytest.mark.django_db(transaction=True)
async def test_a_failed_commit_is_retried_whole_so_no_copy_is_left_only_in_memory() -> None:
    await database_sync_to_async(Queue.objects.create)(name="blink")
    runtime = Runtime(FlakyStore(), checkpoint_seconds=0.2)
    await runtime.start()
    try:
        with pytest.raises(Unavailable):
            await publish(runtime, "blink", "first")  # its publisher is told: never a false confirm
        await publish(runtime, "blink", "second")
        # The refused batch was retried with the next commit: stored after all (at-least-once).
        assert await rows("blink") == ['"first"', '"second"']
    finally:
        await runtime.stop()


async def test_new_store_ids_start_above_every_stored_row(runtime: Runtime) -> None:
    # A row the router does not load: its queue's stored arguments are refused (saved
    # past validation), so only the table's maximum can keep its id from reuse.
    queue = await database_sync_to_async(Queue.objects.create)(name="orphans")
    await database_sync_to_async(Message.objects.create)(
        id=500, queue=queue, message_id="m", body="1", headers={}, published_at="t"
    )
    await database_sync_to_async(Queue.objects.filter(pk=queue.pk).update)(arguments={"bogus": 1})
    await runtime.stop()
    restarted = _new_runtime()
    await restarted.start()
    try:
        assert "orphans" not in restarted.broker.queues and restarted.loaded_messages == 0
        assert restarted.broker.next_store_id == 501
    finally:
        await restarted.stop()


async def test_a_pending_auto_delete_never_takes_a_queue_declared_again_under_its_name(runtime: Runtime) -> None:
    old = await database_sync_to_async(Queue.objects.create)(name="temp", auto_delete=True)
    sink = Sink()
    connection = runtime.connect(sink)
    runtime.subscribe(connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.AUTO, prefetch=0, queue="temp")
    runtime.unsubscribe(connection, "s")  # last consumer gone: the router deletes it, the writer its row (later)
    assert "temp" not in runtime.broker.queues
    await database_sync_to_async(old.delete)()
    new = await database_sync_to_async(Queue.objects.create)(name="temp", auto_delete=True)
    _, routed = await publish(runtime, "temp", "kept")
    assert routed == 1
    assert runtime.writer is not None
    await runtime.writer.flush()
    assert await database_sync_to_async(Queue.objects.filter(pk=new.pk).exists)()
    assert await rows("temp") == ['"kept"']
    assert runtime.broker.queues["temp"].spec.row_id == new.pk


async def test_a_queue_the_router_deletes_leaves_no_rows_behind(runtime: Runtime) -> None:
    from bindings.models import Binding
    from exchanges.models import Exchange

    queue = await database_sync_to_async(Queue.objects.create)(name="brief", auto_delete=True)
    exchange = await database_sync_to_async(Exchange.objects.create)(name="brief-x", type="fanout")
    await database_sync_to_async(Binding.objects.create)(exchange=exchange, queue=queue)
    await publish(runtime, "brief", "stored")
    connection = runtime.connect(Sink())
    runtime.subscribe(connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.CLIENT, prefetch=0, queue="brief")
    runtime.unsubscribe(connection, "s")  # its last consumer: the router deletes it
    assert runtime.writer is not None
    await runtime.writer.flush()
    assert not await database_sync_to_async(Queue.objects.filter(pk=queue.pk).exists)()
    assert not await database_sync_to_async(Binding.objects.filter(queue_id=queue.pk).exists)()
    assert await rows("brief") == []
    assert "brief-x" in runtime.broker.exchanges  # the exchange stays
