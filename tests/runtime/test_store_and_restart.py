"""The runtime with the real ORM store: commits before answers, checkpointed
deletes, and what a restart loads back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import DataError, IntegrityError

from bindings.models import Binding
from broker.engine.errors import Unavailable
from broker.engine.jsoncodec import dumps
from broker.engine.messages import StoredCopy
from broker.engine.queues import AckMode, QueueSpec
from broker.protocol.publish import PublishRequest
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
from queues.models import Message, Queue
from storage.store import OrmMessageStore
from tests.conftest import Sink, new_runtime
from tests.eventually import eventually
from tests.runtime.cluster_harness import MemoryStore


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


async def test_a_non_durable_queue_does_not_outlive_a_restart(runtime: Runtime) -> None:
    await database_sync_to_async(Queue.objects.create)(name="scratch", durable=False)
    await database_sync_to_async(Queue.objects.create)(name="kept")
    exchange = await database_sync_to_async(Exchange.objects.create)(name="news", type="fanout")
    for name in ("scratch", "kept"):
        queue = await database_sync_to_async(Queue.objects.get)(name=name)
        await database_sync_to_async(Binding.objects.create)(exchange=exchange, queue=queue)
    await publish(runtime, "kept", "stored")
    await runtime.stop()

    restarted = new_runtime()
    await restarted.start()
    try:
        assert "scratch" not in restarted.broker.queues
        assert "kept" in restarted.broker.queues and restarted.loaded_messages == 1
        assert [b.destination for b in restarted.broker.bindings.values()] == ["kept"]
        stored = await database_sync_to_async(lambda: sorted(Queue.objects.values_list("name", flat=True)))()
        assert stored == ["kept"]
        assert await database_sync_to_async(Binding.objects.count)() == 1
    finally:
        await restarted.stop()


async def test_bindings_to_exchanges_are_loaded_at_a_restart(runtime: Runtime) -> None:
    source = await database_sync_to_async(Exchange.objects.create)(name="orders", type="topic")
    destination = await database_sync_to_async(Exchange.objects.create)(name="eu", type="fanout")
    queue = await database_sync_to_async(Queue.objects.create)(name="eu-work")
    await database_sync_to_async(Binding.objects.create)(exchange=destination, queue=queue)
    await database_sync_to_async(Binding.objects.create)(
        exchange=source, destination_exchange=destination, binding_key="eu.*"
    )
    await runtime.stop()

    restarted = new_runtime()
    await restarted.start()
    try:
        assert sorted((b.destination, str(b.destination_type)) for b in restarted.broker.bindings.values()) == [
            ("eu", "exchange"), ("eu-work", "queue")]
        assert restarted.broker.routing.route("orders", "eu.new", {}, restarted.broker.queues) == {"eu-work"}
    finally:
        await restarted.stop()


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

    async def acked_row_deleted() -> bool:
        return await rows("orders") == ["1", "2", "3", "4"]

    # Deleted by the fixture's 0.2 s checkpoint, not at once.
    await eventually(acked_row_deleted, interval=0.05, what="the acked row deleted by the checkpoint")
    runtime.disconnect(connection)  # body 1 (unacked) and 2 (delivered after the ack) go back
    await runtime.stop()

    restarted = new_runtime()
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
    from broker.engine.queues import QueueSpec
    from broker.protocol.topology import QueueSaved
    from storage.sync import broadcast

    # Runtime.start() joined the topology group before it returned: nothing to wait for.
    await database_sync_to_async(broadcast)(QueueSaved(QueueSpec("from-elsewhere", arguments={"max_length": 3})))
    await eventually(lambda: "from-elsewhere" in runtime.broker.queues, what="the change applied by the router")
    assert runtime.broker.queues["from-elsewhere"].args.max_length == 3


async def test_the_router_joins_the_topology_group_again_after_a_redis_that_forgot_it(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from channels.layers import get_channel_layer

    from broker.engine.queues import QueueSpec
    from broker.protocol.topology import TOPOLOGY_GROUP, QueueSaved
    from broker.runtime import topology_feed
    from storage.sync import broadcast

    monkeypatch.setattr(topology_feed, "REJOIN_SECONDS", 0.05)
    layer = get_channel_layer()
    members = list(layer.groups.get(TOPOLOGY_GROUP, {}))
    assert members
    for channel in members:  # as a Redis restarted empty
        await layer.group_discard(TOPOLOGY_GROUP, channel)
    # Within REJOIN_SECONDS of the start (the wait under way when the test patched it).
    await eventually(lambda: bool(layer.groups.get(TOPOLOGY_GROUP)), timeout=10, what="the router joined again")
    await database_sync_to_async(broadcast)(QueueSaved(QueueSpec("after-the-restart")))
    await eventually(lambda: "after-the-restart" in runtime.broker.queues, what="the change applied by the router")


class FlakyStore(OrmMessageStore):
    """Refuses the first commit that inserts anything, as a database that blinks."""

    def __init__(self) -> None:
        super().__init__()
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


class AwayStore(OrmMessageStore):
    """A database away until the test says it is back."""

    def __init__(self) -> None:
        super().__init__()
        self.away = True

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        if inserts and self.away:
            raise OSError("connection refused")
        super().write(inserts, deletes, queues_to_delete)


@pytest.mark.django_db(transaction=True)
async def test_a_refused_publish_sent_again_with_its_message_id_is_routed_once() -> None:
    await database_sync_to_async(Queue.objects.create)(name="retried")
    store = AwayStore()
    runtime = Runtime(store, checkpoint_seconds=0.2)
    await runtime.start()
    sink = Sink()
    connection = runtime.connect(sink)
    runtime.subscribe(connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.CLIENT, prefetch=0, queue="retried")
    request = PublishRequest("", "retried", dumps("once"), {}, True, "m-1")
    try:
        with pytest.raises(Unavailable):
            await runtime.publish(request)
        with pytest.raises(Unavailable):  # sent again while the database is still away
            await runtime.publish(request)
        store.away = False
        assert await runtime.publish(request) == ("m-1", 1)  # the retried commit's outcome
        assert await runtime.publish(request) == ("m-1", 1)  # committed by now: at once
        assert await rows("retried") == ['"once"']
        assert len([frame for frame in sink.frames if '"once"' in frame]) == 1  # delivered once
        # Another message id is another message.
        await runtime.publish(PublishRequest("", "retried", dumps("other"), {}, True, "m-2"))
        assert await rows("retried") == ['"once"', '"other"']
    finally:
        await runtime.stop()


class AwayThenRefusingStore(AwayStore):
    """Away until the test says it is back; then it refuses the body "bad" for good, its
    first refusal held until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing, self.release = threading.Event(), threading.Event()

    def _write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        if any(copy.message.body_json == '"bad"' for copy in inserts):
            self.refusing.set()
            assert self.release.wait(5)
            raise IntegrityError("the check constraint says no")
        super()._write(inserts, deletes, queues_to_delete)


@pytest.mark.parametrize("sent_again", ["after", "during"])
@pytest.mark.django_db(transaction=True)
async def test_a_refused_publish_whose_copy_the_database_then_refuses_is_not_confirmed_when_sent_again(
    sent_again: str,
) -> None:
    """Sent again after the retried commit left its copy out for good, or while that commit
    was under way (answered by the next one): not confirmed, it was never stored."""
    await database_sync_to_async(Queue.objects.create)(name="retried")
    store = AwayThenRefusingStore()
    runtime = Runtime(store, checkpoint_seconds=0.2)
    await runtime.start()
    request = PublishRequest("", "retried", dumps("bad"), {}, True, "m-1")
    try:
        with pytest.raises(Unavailable):
            await runtime.publish(request)
        store.away = False
        assert runtime.writer is not None
        retry = asyncio.ensure_future(runtime.writer.flush())  # refused for good, left out
        assert await asyncio.to_thread(store.refusing.wait, 5)
        again = asyncio.ensure_future(runtime.publish(request)) if sent_again == "during" else None
        await asyncio.sleep(0.05)
        store.release.set()
        await retry
        with pytest.raises(Unavailable):
            await (again or runtime.publish(request))
        assert await rows("retried") == []
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
    restarted = new_runtime()
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


class PickyStore(OrmMessageStore):
    """A database that refuses one value for good, as PostgreSQL refuses a NUL in text."""

    def __init__(self, refused_body: str) -> None:
        super().__init__()
        self.refused_body = refused_body
        self.writes = 0

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        self.writes += 1
        if any(copy.message.body_json == self.refused_body for copy in inserts):
            raise DataError("invalid byte sequence")
        super().write(inserts, deletes, queues_to_delete)

    def find_refused(self, inserts: Sequence[StoredCopy]) -> list[int]:
        return [copy.store_id for copy in inserts if copy.message.body_json == self.refused_body]


@pytest.mark.django_db(transaction=True)
async def test_a_message_the_database_refuses_does_not_hold_up_the_others() -> None:
    await database_sync_to_async(Queue.objects.create)(name="picky")
    store = PickyStore('"poison"')
    runtime = Runtime(store, checkpoint_seconds=0.2)
    await runtime.start()
    try:
        assert runtime.writer is not None
        first = asyncio.ensure_future(publish(runtime, "picky", "good"))
        poisoned = asyncio.ensure_future(publish(runtime, "picky", "poison"))
        for outcome in await asyncio.gather(first, poisoned, return_exceptions=True):
            assert isinstance(outcome, Unavailable)  # one commit: neither publisher is confirmed
        await publish(runtime, "picky", "after")  # not held up by a retry of the refused copy
        assert await rows("picky") == ['"good"', '"after"']
        writes = store.writes
        # A fixed wait: it checks that something does NOT happen, so there is nothing to poll for.
        await asyncio.sleep(0.7)  # past RETRY_SECONDS: nothing is retried for ever
        assert store.writes - writes <= 2  # at most the checkpoints, never the refused batch
        assert await rows("picky") == ['"good"', '"after"']
    finally:
        await runtime.stop()


@pytest.mark.django_db(transaction=True)
def test_the_orm_store_names_the_rows_the_database_refuses_and_writes_none() -> None:
    from django.db import connection

    from broker.engine.messages import make_message

    queue = Queue.objects.create(name="rows")
    good = StoredCopy(900, "rows", make_message(message_id="ok", exchange="", routing_key="rows", body_json="1", headers={}, persistent=True, published_at="t"))
    duplicate = StoredCopy(900, "rows", good.message)  # the same store id twice: a constraint says no
    store = OrmMessageStore()
    assert store.find_refused([good, duplicate]) == [900]
    assert not Message.objects.filter(queue=queue).exists()  # nothing written
    # A commit's own error is Django's, whether it came from an INSERT or a COPY
    # (PostgreSQL): the writer tells "refused" from "away" by it.
    with pytest.raises(IntegrityError) as refused_write:
        store.write([good, duplicate], [], [])
    assert store.refused(refused_write.value)
    assert not Message.objects.filter(queue=queue).exists()
    assert store.refused(DataError("x")) and not store.refused(OSError("x"))
    if connection.vendor == "postgresql":  # SQLite stores a NUL; PostgreSQL's text cannot
        nul = StoredCopy(901, "rows", make_message(message_id="a\x00b", exchange="", routing_key="rows", body_json="1", headers={}, persistent=True, published_at="t"))
        assert store.find_refused([nul, good]) == [901]
        assert not Message.objects.filter(queue=queue).exists()
    connection.close()


class ChangedWhileLoading(OrmMessageStore):
    """A change committed elsewhere while the router reads the topology (a failover's load)."""

    def load_topology(self) -> Any:
        from broker.engine.queues import QueueSpec
        from broker.protocol.topology import QueueSaved
        from storage.sync import broadcast

        topology = super().load_topology()
        broadcast(QueueSaved(QueueSpec("declared-during-load")))
        return topology


@pytest.mark.django_db(transaction=True)
async def test_a_change_sent_while_the_router_loads_is_applied_after_the_load() -> None:
    runtime = Runtime(ChangedWhileLoading(), checkpoint_seconds=0.2, layer=get_channel_layer())
    await runtime.start()
    try:
        await eventually(lambda: "declared-during-load" in runtime.broker.queues, what="the change applied after the load")
    finally:
        await runtime.stop()


class BlockingStore(MemoryStore):
    """A store whose commits wait until released: the writer holds what comes meanwhile."""

    def __init__(self) -> None:
        super().__init__(queues=[QueueSpec("q")])
        self.release = threading.Event()

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        self.release.wait(5)
        super().write(inserts, deletes, queues_to_delete)


async def test_a_publisher_that_gives_up_leaves_its_commit_to_the_others() -> None:
    store = BlockingStore()
    runtime = Runtime(store, checkpoint_seconds=0.2)
    await runtime.start()
    try:
        runtime.publish_nowait(PublishRequest("", "q", "0", {}, True, None))  # a commit that waits
        await asyncio.sleep(0.05)
        _, _, shared = runtime.publish_nowait(PublishRequest("", "q", "1", {}, True, None))
        giving_up = asyncio.create_task(runtime.publish(PublishRequest("", "q", "2", {}, True, None)))
        await asyncio.sleep(0)
        giving_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await giving_up
        assert shared is not None and not shared.cancelled()
        store.release.set()
        await asyncio.wait_for(shared, 5)  # committed, for the publisher that stayed
        assert sorted(message.body_json for _, message in store.rows.values()) == ["0", "1", "2"]
    finally:
        store.release.set()
        await runtime.stop()


async def test_a_dead_letter_s_origin_outlives_a_restart_and_a_publisher_s_x_death_is_none(runtime: Runtime) -> None:
    """The origin a replay follows is stored with the message (broker/runtime/browser.py):
    after a restart the broker's dead letter goes back where it died, and a message whose
    `x-death` came from its publisher, naming the same place, stays where it is."""
    from broker.runtime.browser import act

    dlx = await database_sync_to_async(Exchange.objects.create)(name="dlx", type="fanout")
    dead = await database_sync_to_async(Queue.objects.create)(name="dead")
    await database_sync_to_async(Binding.objects.create)(exchange=dlx, queue=dead)
    await database_sync_to_async(Queue.objects.create)(name="work", arguments={"x-dead-letter-exchange": "dlx"})
    await publish(runtime, "work", "died")
    connection = runtime.connect(Sink())
    runtime.subscribe(connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.CLIENT, prefetch=0,
                      queue="work")
    runtime.nack(connection, 1, multiple=False, requeue=False)
    runtime.disconnect(connection)
    death = {"queue": "work", "reason": "rejected", "exchange": "", "routing-keys": ["work"], "count": 1}
    await runtime.publish(PublishRequest("", "dead", dumps("forged"), {"x-death": [death]}, True, None))

    async def both_stored() -> bool:
        return len(await rows("dead")) == 2

    await eventually(both_stored, what="both stored")
    await runtime.stop()

    restarted = new_runtime()
    await restarted.start()
    try:
        assert [e.message.origin for e in restarted.broker.queues["dead"].ready] == [("", "work"), None]
        done = await act(restarted, "dead", "replay", ids=None, wanted={})
        assert (done["taken"], done["skipped"], done["routed"]) == (1, 1, 1)
        assert await rows("work") == ['"died"'] and await rows("dead") == ['"forged"']
    finally:
        await restarted.stop()
