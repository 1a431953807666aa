"""A cluster in one event loop: routers (a `Runtime` and its `Hub`) and `EdgeLink`s
over channels' in-memory layer, for fast tests of the link (wire.py).

`WireLayer` is the in-memory layer with what channels-redis adds that matters
here: every message crosses as msgpack (only plain values survive, as over
Redis), what was sent is recorded, and an edge can be cut off. `MemoryStore`
keeps the stored messages in a dict that outlives a router, as the database
does, so a new router loads what the previous one left. No database, no Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgpack
from channels.layers import InMemoryChannelLayer
from channels.testing import WebsocketCommunicator

from broker.cluster.edge import EdgeLink
from broker.cluster.hub import Hub
from broker.cluster.wire import EDGE_BATCH, ROUTER_BATCH
from broker.engine.errors import BrokerError
from broker.engine.exchanges import ExchangeSpec
from broker.engine.jsoncodec import dumps, loads
from broker.engine.messages import BacklogRows, Message, StoredCopy
from broker.engine.queues import AckMode, QueueSpec
from broker.engine.routing import BindingSpec
from broker.protocol.client_frames import SubscribeRequest
from broker.protocol.publish import PublishRequest
from broker.protocol.topology import Topology
from broker.router.local import LocalRouter
from broker.runtime.outbox import OutboxDrain, OutboxEntry
from broker.runtime.runtime import Runtime
from subscriptions.consumers import BrokerConsumer
from tests.eventually import eventually


class MemoryStore:
    """The router's message store in memory; survives the router as a database would."""

    def __init__(
        self,
        *,
        exchanges: Iterable[ExchangeSpec] = (),
        queues: Iterable[QueueSpec] = (),
        bindings: Iterable[BindingSpec] = (),
    ) -> None:
        self.topology = Topology(list(exchanges), list(queues), list(bindings))
        self.rows: dict[int, tuple[str, Message]] = {}
        self.refuse_inserts = False  # a database that is away
        self._lock = threading.Lock()

    def drop_transient_queues(self) -> list[str]:
        dropped = [queue.name for queue in self.topology.queues if not queue.durable]
        self.topology = Topology(
            self.topology.exchanges,
            [queue for queue in self.topology.queues if queue.durable],
            [binding for binding in self.topology.bindings if binding.to_exchange or binding.destination not in dropped],
        )
        return dropped

    def load_topology(self) -> Topology:
        return self.topology

    def message_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(queue for queue, _ in self.rows.values()))

    def read_backlog(self, queue: str, after: int, below: int, limit: int) -> list[tuple[int, Message]]:
        with self._lock:
            found = sorted(
                (store_id, message) for store_id, (name, message) in self.rows.items()
                if name == queue and after < store_id < below
            )
        return found[:limit]

    def delete_backlogs(self, backlogs: Sequence[BacklogRows]) -> None:
        with self._lock:
            for rows in backlogs:
                for store_id in [i for i, (name, _) in self.rows.items() if name == rows.queue and rows.after < i < rows.below]:
                    del self.rows[store_id]

    def max_store_id(self) -> int:
        with self._lock:
            return max(self.rows, default=0)

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        if inserts and self.refuse_inserts:
            raise OSError("the database is away")
        with self._lock:
            for copy in inserts:
                self.rows[copy.store_id] = (copy.queue, copy.message)
            for store_id in deletes:
                self.rows.pop(store_id, None)

    def close(self) -> None:
        pass

    def ping(self) -> None:
        if self.refuse_inserts:
            raise OSError("the database is away")

    def refused(self, error: BaseException) -> bool:
        return False  # this store only ever fails by being away

    # The outbox: none here (tests/pubsub use the database's).
    def read_outbox(self, limit: int) -> list[OutboxEntry]:
        return []

    def drain_outbox(self, rows: Sequence[OutboxDrain]) -> list[int]:
        self.write([copy for _, copies in rows for copy in copies], [], [])
        return [row_id for row_id, _ in rows]

    async def outbox_signal(self) -> NoSignal:
        return NoSignal()

    def outbox_state(self) -> tuple[int, float | None]:
        return 0, None

    def stored_copies(self, store_ids: Sequence[int]) -> list[int]:
        with self._lock:
            return [store_id for store_id in store_ids if store_id in self.rows]

    def rows_in_doubt(self, store_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        return self.stored_copies(store_ids), []

    def handler_state(self) -> list[Any]:
        return []

    def find_refused(self, inserts: Sequence[StoredCopy]) -> list[int]:
        return []


class NoSignal:
    hears_every_commit = False

    async def wait(self, timeout: float) -> None:
        await asyncio.sleep(timeout)

    async def close(self) -> None:
        pass


class WireLayer(InMemoryChannelLayer):  # type: ignore[misc]
    """The in-memory layer, serializing as channels-redis does, recording what is sent."""

    def __init__(self) -> None:
        super().__init__(capacity=1000, expiry=60)
        self.sent: list[dict[str, Any]] = []
        self.cut_off: set[str] = set()  # edge channels whose batches are lost on the way
        self.held: dict[str, list[dict[str, Any]]] = {}  # channel -> what waits on a slow link

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if message.get("type") == EDGE_BATCH and message.get("edge") in self.cut_off:
            return
        message = msgpack.unpackb(msgpack.packb(message))
        self.sent.append(message)
        if channel in self.held:
            self.held[channel].append(message)
            return
        await super().send(channel, message)

    def hold(self, channel: str) -> None:
        """Keep what is sent to `channel` until `release`: a slow link, nothing lost."""
        self.held.setdefault(channel, [])

    async def release(self, channel: str) -> None:
        for message in self.held.pop(channel, []):
            await super().send(channel, message)

    def batches(self, kind: str, item: str) -> list[list[list[Any]]]:
        """The item lists of the sent batches of `kind` (EDGE_BATCH, ROUTER_BATCH) that hold
        at least one item named `item`."""
        return [
            message["items"]
            for message in self.sent
            if message["type"] == kind and any(entry[0] == item for entry in message["items"])
        ]

    def items(self, kind: str, item: str) -> list[list[Any]]:
        return [entry for items in self.batches(kind, item) for entry in items if entry[0] == item]

    def edge_items(self, item: str) -> list[list[Any]]:
        return self.items(EDGE_BATCH, item)

    def router_items(self, item: str) -> list[list[Any]]:
        return self.items(ROUTER_BATCH, item)


class EdgeSink:
    """A client connection on an edge: what reaches it, decoded, in order; subscribe
    answers go into the same record, so their place among deliveries shows."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def deliver(self, frames: list[str], counted: bool = False) -> None:
        self.events.extend(loads(frame) for frame in frames)

    def cancelled(self, subscription: str, reason: str) -> None:
        self.events.append({"type": "cancelled", "subscription": subscription, "reason": reason})

    def unsubscribed(self, subscription: str) -> None:
        self.events.append({"type": "unsubscribed", "subscription": subscription})

    def refused(self, frame_id: Any, error: BrokerError) -> None:
        self.events.append({"type": "error", "id": frame_id, "code": error.code, "message": error.message})

    def answer(self, key: str) -> Callable[[str | None, BrokerError | None], None]:
        def answered(queue: str | None, error: BrokerError | None) -> None:
            self.events.append({"type": "answer", "subscription": key, "queue": queue, "error": error})

        return answered

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]

    def messages(self) -> list[dict[str, Any]]:
        return self.of_type("message")


def subscribe_args(
    key: str,
    *,
    queue: str | None = None,
    exchange: str | None = None,
    ack: str = "client",
    prefetch: int = 100,
    shown: Any = None,
) -> SubscribeRequest:
    """A subscribe as the WebSocket session asks it."""
    return SubscribeRequest(key, dumps(key if shown is None else shown), AckMode(ack), prefetch, queue, exchange)


def publish_request(routing_key: str, body: Any, *, exchange: str = "", persistent: bool = True) -> PublishRequest:
    return PublishRequest(exchange, routing_key, dumps(body), {}, persistent, None)


class Router:
    """What a `runbroker` router of another process runs: the runtime, and the hub serving
    edges from it. Not this process's router: clients here reach it through an edge."""

    def __init__(self, store: MemoryStore, layer: WireLayer, *, term: int = 0) -> None:
        # A short checkpoint: acknowledged rows leave the store quickly.
        self.runtime = Runtime(store, checkpoint_seconds=0.2)
        self.hub = Hub(LocalRouter(self.runtime), layer, term=term)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.runtime.start()
        self._task = asyncio.create_task(self.hub.run(), name="test-hub")
        await eventually(lambda: bool(self.hub.channel), what="the hub has a channel")

    async def stop(self) -> None:
        """As a killed router: no goodbye to the edges; pending commits are flushed."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.runtime.stop()


class Cluster:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.layer = WireLayer()
        self.router: Router | None = None
        self.edges: list[EdgeLink] = []

    @property
    def runtime(self) -> Runtime:
        assert self.router is not None, "no router runs"
        return self.router.runtime

    async def start_router(self) -> Router:
        router = Router(self.store, self.layer)
        await router.start()
        self.router = router
        return router

    async def stop_router(self) -> None:
        if self.router is not None:
            await self.router.stop()
            self.router = None

    async def replace_router(self) -> Router:
        """The router dies and a standby takes over on the same store (a new epoch)."""
        await self.stop_router()
        return await self.start_router()

    async def edge(self) -> EdgeLink:
        link = EdgeLink(self.layer)
        await link.start()
        self.edges.append(link)
        await eventually(lambda: link.available, what="the edge follows the router")
        return link

    async def subscriber(self, key: str, *, queue: str, ack: str = "client") -> tuple[EdgeLink, EdgeSink, int]:
        """A new edge with one connection subscribed to `queue` (answered): (edge, sink, conn)."""
        edge = await self.edge()
        sink = EdgeSink()
        conn = edge.connect(sink)
        edge.subscribe(conn, subscribe_args(key, queue=queue, ack=ack), sink.answer(key))
        await eventually(lambda: bool(sink.of_type("answer")), what=f"subscribed to {queue}")
        return edge, sink, conn

    async def publish(self, queue: str, body: Any, *, persistent: bool = True) -> None:
        """Publish on the router itself, to a queue through the default exchange."""
        publishing = self.runtime.publish(publish_request(queue, body, persistent=persistent))
        _, routed = await asyncio.wait_for(publishing, 2)
        assert routed == 1

    async def close(self) -> None:
        for link in reversed(self.edges):
            await link.stop()
        await self.stop_router()


async def ws_client() -> WebsocketCommunicator:
    client = WebsocketCommunicator(BrokerConsumer.as_asgi(), "/ws")
    connected, _ = await client.connect()
    assert connected
    return client


async def receive(client: WebsocketCommunicator, count: int) -> list[dict[str, Any]]:
    return [await client.receive_json_from(timeout=2) for _ in range(count)]


def counts(cluster: Cluster, queue: str) -> tuple[int, int, int]:
    found = cluster.runtime.queue_counts([queue])[queue]
    return found.messages_ready, found.messages_unacknowledged, found.consumers
