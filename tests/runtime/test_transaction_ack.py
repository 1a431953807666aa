"""Transaction-ack subscriptions: each delivery names its stored copy, and is sent
only once that copy is committed (a handler deletes the row in its own transaction)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from broker.engine.broker import QueueCounts
from broker.engine.jsoncodec import loads
from broker.engine.messages import StoredCopy
from broker.engine.queues import AckMode, QueueSpec
from broker.protocol.publish import PublishRequest
from broker.runtime.runtime import Runtime
from tests.conftest import Sink
from tests.eventually import eventually

from .cluster_harness import MemoryStore


class HeldStore(MemoryStore):
    """Commits wait until released; a commit may also fail while the database is away."""

    def __init__(self) -> None:
        super().__init__(queues=[QueueSpec("q")])
        self.release = threading.Event()

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        self.release.wait(5)
        super().write(inserts, deletes, queues_to_delete)


def request(body: str, *, persistent: bool = True) -> PublishRequest:
    return PublishRequest("", "q", body, {}, persistent, None)


async def started(store: MemoryStore) -> Runtime:
    runtime = Runtime(store, checkpoint_seconds=0.2)
    await runtime.start()
    return runtime


def transaction_consumer(runtime: Runtime, *, prefetch: int) -> tuple[Sink, int]:
    """A transaction-ack subscription to queue q on a connection of its own: (its sink, the connection)."""
    sink = Sink()
    connection = runtime.connect(sink)
    runtime.subscribe(
        connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.TRANSACTION, prefetch=prefetch, queue="q"
    )
    return sink, connection


def consume(runtime: Runtime, ack_mode: AckMode) -> Sink:
    sink = Sink()
    connection = runtime.connect(sink)
    runtime.subscribe(
        connection, subscription="s", subscription_json='"s"', ack_mode=ack_mode, prefetch=10, queue="q"
    )
    return sink


async def test_a_transaction_delivery_waits_for_its_copy_to_be_committed() -> None:
    store = HeldStore()
    runtime = await started(store)
    try:
        handler = consume(runtime, AckMode.TRANSACTION)
        runtime.publish_nowait(request("1"))
        await asyncio.sleep(0.1)
        assert handler.frames == []  # not committed yet
        store.release.set()
        await eventually(lambda: len(handler.frames) == 1, what="the delivery after the commit")
        frame = loads(handler.frames[0])
        (store_id, (queue, message)), = store.rows.items()
        assert (frame["store_id"], frame["body"], queue) == (store_id, 1, "q")
    finally:
        store.release.set()
        await runtime.stop()


async def test_a_client_ack_delivery_does_not_wait_and_names_no_row() -> None:
    store = HeldStore()
    runtime = await started(store)
    try:
        client = consume(runtime, AckMode.CLIENT)
        runtime.publish_nowait(request("1"))
        await eventually(lambda: len(client.frames) == 1, what="the delivery before the commit")
        assert not store.rows and "store_id" not in loads(client.frames[0])
    finally:
        store.release.set()
        await runtime.stop()


async def test_frames_keep_their_order_and_a_failed_commit_holds_them_until_its_retry() -> None:
    store = HeldStore()
    store.release.set()
    store.refuse_inserts = True  # the database is away: commits fail and are retried
    runtime = await started(store)
    try:
        handler = consume(runtime, AckMode.TRANSACTION)
        for body in ("1", "2", "3"):
            runtime.publish_nowait(request(body))
        await asyncio.sleep(0.3)
        assert handler.frames == []
        store.refuse_inserts = False
        await eventually(lambda: len(handler.frames) == 3, what="the deliveries after the retried commit")
        frames = [loads(frame) for frame in handler.frames]
        assert [frame["body"] for frame in frames] == [1, 2, 3]
        assert all(frame["store_id"] in store.rows for frame in frames)
    finally:
        await runtime.stop()


async def test_a_copy_kept_in_memory_only_is_delivered_at_once_with_no_row() -> None:
    store = HeldStore()
    store.release.set()
    runtime = await started(store)
    try:
        handler = consume(runtime, AckMode.TRANSACTION)
        runtime.publish_nowait(request("1", persistent=False))
        await eventually(lambda: len(handler.frames) == 1, what="the delivery")
        assert loads(handler.frames[0])["store_id"] is None
    finally:
        await runtime.stop()


async def test_transaction_deliveries_are_acknowledged_like_client_ones() -> None:
    store = MemoryStore(queues=[QueueSpec("q")])
    runtime = await started(store)
    try:
        sink, connection = transaction_consumer(runtime, prefetch=1)
        for body in ("1", "2"):
            await runtime.publish(request(body))
        await eventually(lambda: len(sink.frames) == 1, what="one delivery: prefetch 1")
        await asyncio.sleep(0.05)
        assert len(sink.frames) == 1
        runtime.ack(connection, loads(sink.frames[0])["delivery_tag"], multiple=False)
        await eventually(lambda: len(sink.frames) == 2, what="the next after the ack")
        runtime.disconnect(connection)  # the second, unacknowledged, goes back once its row is seen
        await eventually(
            lambda: runtime.broker.queue_counts("q") == QueueCounts(1, 0, 0), what="the second back, ready"
        )
    finally:
        await runtime.stop()


async def test_a_copy_whose_row_its_consumer_deleted_before_going_away_is_not_given_back() -> None:
    """A handler's transaction deleted the first copy's row (handled), and its process died
    before the ack: that copy is done. The second's row is there: it comes back, and with
    `x-delivery-limit` 0 it is dead-lettered; the first never is."""
    arguments = {"x-delivery-limit": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
    store = MemoryStore(queues=[QueueSpec("q", arguments=arguments), QueueSpec("dead")])
    runtime = await started(store)
    try:
        sink, connection = transaction_consumer(runtime, prefetch=2)
        for body in ("1", "2"):
            await runtime.publish(request(body))
        await eventually(lambda: len(sink.frames) == 2, what="both deliveries")
        handled = loads(sink.frames[0])["store_id"]
        store.write([], [handled], [])  # the handler's transaction, committed

        runtime.disconnect(connection)

        await eventually(lambda: runtime.broker.queue_counts("dead") == QueueCounts(1, 0, 0), what="the second dead-lettered")
        assert runtime.broker.queue_counts("q") == QueueCounts(0, 0, 0)
        assert [loads(envelope.message.body_json) for envelope in runtime.broker.queues["dead"].ready] == [2]
    finally:
        await runtime.stop()


async def test_a_copy_not_yet_committed_when_its_consumer_went_away_comes_back_once_it_is() -> None:
    """Its row is looked for only once the copy's commit landed: looked for before, it was
    missing, and the message taken for handled."""
    store = HeldStore()
    store.release.set()
    store.refuse_inserts = True  # the commit fails, and is retried
    runtime = await started(store)
    try:
        sink, connection = transaction_consumer(runtime, prefetch=1)
        runtime.publish_nowait(request("1"))
        assert runtime.broker.queue_counts("q") == QueueCounts(0, 1, 1)  # delivered, its frame held back
        runtime.disconnect(connection)
        await asyncio.sleep(0.3)
        assert runtime.broker.queue_counts("q") == QueueCounts(0, 1, 0)  # in doubt
        store.refuse_inserts = False
        await eventually(lambda: runtime.broker.queue_counts("q") == QueueCounts(1, 0, 0), what="the copy back")
        assert sink.frames == []
    finally:
        await runtime.stop()


class RefusingStore(MemoryStore):
    """A database that refuses one body for good (an operator's constraint or trigger)."""

    def __init__(self, refused_body: str) -> None:
        super().__init__(queues=[QueueSpec("q")])
        self.refused_body = refused_body

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        if any(copy.message.body_json == self.refused_body for copy in inserts):
            raise ValueError("the check constraint says no")
        super().write(inserts, deletes, queues_to_delete)

    def refused(self, error: BaseException) -> bool:
        return isinstance(error, ValueError)

    def find_refused(self, inserts: Sequence[StoredCopy]) -> list[int]:
        return [copy.store_id for copy in inserts if copy.message.body_json == self.refused_body]


async def test_a_delivery_made_before_its_copy_is_refused_names_no_row() -> None:
    store = RefusingStore('"poison"')
    runtime = await started(store)
    try:
        handler = consume(runtime, AckMode.TRANSACTION)
        for body in ('"good"', '"poison"'):  # one commit: the poison's delivery is held with the good one's
            runtime.publish_nowait(request(body))
        await eventually(lambda: len(handler.frames) == 2, what="both deliveries after the commit")
        good, poison = (loads(frame) for frame in handler.frames)
        assert good["store_id"] in store.rows
        # Named, the missing row would say "handled before": the handler would acknowledge it unrun.
        assert poison["body"] == "poison" and poison["store_id"] is None
    finally:
        await runtime.stop()


async def test_a_refused_copy_waiting_in_the_queue_is_delivered_later_naming_no_row() -> None:
    store = RefusingStore('"poison"')
    runtime = await started(store)
    try:
        runtime.publish_nowait(request('"poison"'))
        assert runtime.writer is not None
        await runtime.writer.flush()
        assert not store.rows
        handler = consume(runtime, AckMode.TRANSACTION)
        await eventually(lambda: len(handler.frames) == 1, what="the delivery")
        assert loads(handler.frames[0])["store_id"] is None
    finally:
        await runtime.stop()


async def test_a_refused_copy_given_back_by_another_consumer_names_no_row() -> None:
    store = RefusingStore('"poison"')
    runtime = await started(store)
    try:
        other = Sink()
        connection = runtime.connect(other)
        runtime.subscribe(connection, subscription="c", subscription_json='"c"', ack_mode=AckMode.CLIENT, prefetch=1, queue="q")
        runtime.publish_nowait(request('"poison"'))
        assert len(other.frames) == 1  # a client-ack delivery goes out before the commit
        assert runtime.writer is not None
        await runtime.writer.flush()
        runtime.disconnect(connection)  # unacknowledged: back to the queue
        handler = consume(runtime, AckMode.TRANSACTION)
        await eventually(lambda: len(handler.frames) == 1, what="the redelivery")
        redelivered = loads(handler.frames[0])
        assert redelivered["redelivered"] and redelivered["store_id"] is None
    finally:
        await runtime.stop()
