"""The router's side of the cluster: serves the connections of every edge.

Runs on the router's loop next to the `Runtime`. A connection on an edge is a
`RemoteSink` here: what the runtime delivers to it goes into its edge's
outbox, and one sender task per edge ships the outbox as one batch per send,
while the next batch fills (wire.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any


from broker.engine.errors import BrokerError, Unavailable
from broker.engine.jsoncodec import dumps
from broker.engine.queues import AckMode
from broker.router.calls import ROUTER_OPS
from broker.runtime.runtime import Runtime

from .wire import (
    BEAT,
    BEAT_SECONDS,
    EDGE_BATCH,
    EDGE_TIMEOUT,
    EDGES_GROUP,
    HELLO,
    HELLO_CHANNEL,
    ROUTER_BATCH,
    Window,
    encode_error,
    publish_request,
    send_batch,
)

log = logging.getLogger("broker.cluster")


class RemoteSink:
    """A client connection on an edge, as the runtime's `DeliverySink`."""

    __slots__ = ("conn", "edge")

    def __init__(self, edge: Edge, conn: int) -> None:
        self.edge = edge
        self.conn = conn

    def deliver(self, frames: list[str]) -> None:
        self.edge.push(["d", self.conn, frames])
        self.edge.delivered.add(self.conn)

    def cancelled(self, subscription: str, reason: str) -> None:
        self.edge.push(["c", self.conn, subscription, reason])


class Edge:
    """One edge process as the router knows it: its connections and its outbox."""

    def __init__(self, channel: str, generation: int) -> None:
        self.channel = channel
        self.generation = generation
        self.last_seen = time.monotonic()
        self.connections: dict[int, int] = {}  # the edge's connection id -> the runtime's
        self.outbox: list[list[Any]] = []
        self.delivered: set[int] = set()  # connections given deliveries since the last send
        self.seq = 0  # of our last batch with items
        self.window = Window()
        self.edge_seq = 0  # the edge's last batch with items, which we ack
        self.owe_ack = False
        self.wakeup = asyncio.Event()
        self.sender: asyncio.Task[None] | None = None

    def push(self, item: list[Any]) -> None:
        self.outbox.append(item)
        self.wakeup.set()


class Hub:
    def __init__(self, runtime: Runtime, layer: Any) -> None:
        self.runtime = runtime
        self.layer = layer
        self.epoch = uuid.uuid4().hex
        self.channel = ""
        self._edges: dict[str, Edge] = {}
        self._dropped: dict[str, tuple[int, float]] = {}  # edge channel -> (generation dropped, when)

    async def run(self) -> None:
        self.channel = await self.layer.new_channel()
        log.info("router %s serves edges on %s", self.epoch[:8], self.channel)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._receive_forever(), name="hub-receive")
                group.create_task(self._answer_hellos(), name="hub-hello")
                group.create_task(self._beat_forever(), name="hub-beat")
                group.create_task(self._reap_forever(), name="hub-reap")
        finally:
            for edge in list(self._edges.values()):
                if edge.sender is not None:
                    edge.sender.cancel()

    def _beat_message(self) -> dict[str, Any]:
        return {"type": BEAT, "epoch": self.epoch, "channel": self.channel}

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self.layer.group_send(EDGES_GROUP, self._beat_message())
            except Exception:
                log.exception("router beat failed")
            await asyncio.sleep(BEAT_SECONDS)

    async def _answer_hellos(self) -> None:
        while True:
            try:
                message = await self.layer.receive(HELLO_CHANNEL)
                if message.get("type") == HELLO:
                    await self.layer.send(message["edge"], self._beat_message())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("answering an edge's hello failed")
                await asyncio.sleep(BEAT_SECONDS)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for edge in [edge for edge in self._edges.values() if edge.last_seen < now - EDGE_TIMEOUT]:
                log.warning("edge %s silent for %.0f s: its connections are closed", edge.channel, EDGE_TIMEOUT)
                self._drop(edge)
            # An edge that came back has long resumed; one that did not never will.
            forgotten = now - 10 * EDGE_TIMEOUT
            for channel in [channel for channel, (_, when) in self._dropped.items() if when < forgotten]:
                del self._dropped[channel]

    def _drop(self, edge: Edge) -> None:
        self._edges.pop(edge.channel, None)
        self._dropped[edge.channel] = (edge.generation, time.monotonic())
        if edge.sender is not None:
            edge.sender.cancel()
        for connection_id in edge.connections.values():
            self._guard(self.runtime.disconnect, connection_id)

    async def _receive_forever(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
                if message.get("type") == EDGE_BATCH and message.get("epoch") == self.epoch:
                    self.on_batch(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad batch or a lost Redis: log, wait, go on
                log.exception("edge batch failed")
                await asyncio.sleep(0.1)

    # -- one batch from an edge ------------------------------------------

    def on_batch(self, message: dict[str, Any]) -> None:
        edge = self._edge_for(message["edge"], message["gen"])
        if edge is None:
            return
        edge.last_seen = time.monotonic()
        acked = message.get("ack", 0)
        edge.window.acked(acked)
        # Every batch is answered, a beat too: an edge whose ack was lost (Redis restarted,
        # say) learns from the next one where the router stands instead of waiting for ever.
        edge.owe_ack = True
        edge.wakeup.set()
        if not message["items"]:
            return
        edge.edge_seq = message["seq"]
        results: list[Any] = []
        commits: list[tuple[int, asyncio.Future[None]]] = []
        for item in message["items"]:
            kind = item[0]
            try:
                if kind == "p":
                    self._publish(item, results, commits)
                else:
                    self._apply(edge, item)
            except Exception:
                # A bug, not a refusal: the rest of the batch goes on, and a publish still
                # gets an answer, so no publisher waits for ever.
                log.exception("item %r from edge %s failed", kind, edge.channel)
                if kind == "p":
                    results.append(encode_error(Unavailable("the router failed to route the message")))
        if results:
            self._answer_publishes(edge, message["seq"], results, commits)

    def _edge_for(self, channel: str, generation: int) -> Edge | None:
        edge = self._edges.get(channel)
        if edge is not None and generation == edge.generation:
            return edge
        if edge is not None and generation < edge.generation:
            return None  # sent before the edge resumed: stale
        if edge is None and self._dropped.get(channel, (-1, 0.0))[0] >= generation:
            # Dropped while silent: it must resume its connections before anything else.
            self._send_now(channel, [["reset", generation]])
            return None
        if edge is not None:  # the edge resumed (it lost sight of this router for a while)
            self._drop(edge)
        edge = Edge(channel, generation)
        edge.sender = asyncio.create_task(self._send_forever(edge), name=f"hub-send-{channel}")
        self._edges[channel] = edge
        self._dropped.pop(channel, None)
        return edge

    def _publish(
        self, item: list[Any], results: list[Any], commits: list[tuple[int, asyncio.Future[None]]]
    ) -> None:
        try:
            _, routed, committed = self.runtime.publish_nowait(publish_request(item))
        except BrokerError as error:
            results.append(encode_error(error))
            return
        if committed is not None:
            commits.append((len(results), committed))
        results.append(routed)

    def _answer_publishes(
        self, edge: Edge, seq: int, results: list[Any], commits: list[tuple[int, asyncio.Future[None]]]
    ) -> None:
        if not commits:
            edge.push(["P", seq, results])
            return
        waiting = {id(future): future for _, future in commits}

        def on_commit(_: asyncio.Future[None]) -> None:
            if not all(future.done() for future in waiting.values()):
                return
            for slot, future in commits:
                error = _commit_error(future)
                if error is not None:
                    results[slot] = encode_error(error)
            edge.push(["P", seq, results])

        for future in waiting.values():
            future.add_done_callback(on_commit)

    def _apply(self, edge: Edge, item: list[Any]) -> None:
        kind, conn = item[0], item[1]
        runtime = self.runtime
        if kind == "r":
            self._call(edge, item)
            return
        if kind == "o":
            edge.connections[conn] = runtime.connect(RemoteSink(edge, conn))
            return
        if kind == "a":
            self._resume(edge, item)
            return
        connection_id = edge.connections.get(conn)
        if connection_id is None:
            return  # closed meanwhile
        try:
            match kind:
                case "x":
                    del edge.connections[conn]
                    runtime.disconnect(connection_id)
                case "s":
                    # The answer goes before the deliveries that subscribing starts.
                    mark = len(edge.outbox)
                    try:
                        queue = self._subscribe(connection_id, item[2:])
                        answer = ["S", conn, queue, None]
                    except BrokerError as error:
                        answer = ["S", conn, None, encode_error(error)]
                    edge.outbox.insert(mark, answer)
                    edge.wakeup.set()
                case "u":
                    try:
                        runtime.unsubscribe(connection_id, item[2])
                    finally:  # cancelled meanwhile by the router or not: it has ended
                        edge.push(["U", conn, item[2]])
                case "k":
                    runtime.ack(connection_id, item[3], multiple=item[4])
                case "n":
                    runtime.nack(connection_id, item[3], multiple=item[4], requeue=item[5])
                case "w":
                    edge.push(["d", conn, [runtime.watch(connection_id)]])
                case "W":
                    runtime.unwatch(connection_id)
                case _:
                    log.error("unknown item %r from edge %s", kind, edge.channel)
        except BrokerError as error:
            if kind in ("k", "n"):
                from broker.protocol.frames import error_frame

                edge.push(["d", conn, [dumps(error_frame(item[2], error))]])
            # An unsubscribe that crossed the router's cancel has nothing left to say.

    def _subscribe(self, connection_id: int, args: list[Any]) -> str:
        key, subscription_json, ack, prefetch, queue, exchange, binding_key, arguments = args
        return self.runtime.subscribe(
            connection_id,
            subscription=key,
            subscription_json=subscription_json,
            ack_mode=AckMode(ack),
            prefetch=prefetch,
            queue=queue,
            exchange=exchange,
            binding_key=binding_key,
            arguments=arguments,
        )

    def _resume(self, edge: Edge, item: list[Any]) -> None:
        """A connection that lived on the previous router: its subscriptions, silently."""
        _, conn, first_tag, watching, subscriptions = item
        connection_id = self.runtime.connect(RemoteSink(edge, conn), first_tag=first_tag)
        edge.connections[conn] = connection_id
        if watching:
            self.runtime.watch(connection_id)
        for args in subscriptions:
            try:
                self._subscribe(connection_id, args)
            except BrokerError as error:
                edge.push(["c", conn, args[0], error.message])

    def _call(self, edge: Edge, item: list[Any]) -> None:
        _, request_id, op, args = item
        try:
            fn = ROUTER_OPS[op]
            edge.push(["R", request_id, True, fn(self.runtime, *args)])
        except BrokerError as error:
            edge.push(["R", request_id, False, encode_error(error)])
        except Exception:
            log.exception("router call %s failed", op)
            edge.push(["R", request_id, False, encode_error(Unavailable(f"the router failed to carry out {op}"))])

    # -- sending ---------------------------------------------------------

    async def _send_forever(self, edge: Edge) -> None:
        broker = self.runtime.broker
        while True:
            await edge.wakeup.wait()
            edge.wakeup.clear()
            items: list[list[Any]] = []
            if edge.outbox and not edge.window.full:
                items, edge.outbox = edge.outbox, []
                for conn in edge.delivered:
                    connection = broker.connections.get(edge.connections.get(conn, -1))
                    if connection is not None:
                        items.append(["t", conn, connection.next_tag - 1])
                edge.delivered.clear()
                edge.seq += 1
                edge.window.sent(edge.seq)
            elif not edge.owe_ack:
                continue  # nothing to say, or the window is full: the edge's ack wakes us
            edge.owe_ack = False
            message = {"type": ROUTER_BATCH, "epoch": self.epoch, "seq": edge.seq, "ack": edge.edge_seq, "items": items}
            await self._send(edge.channel, message)

    async def _send(self, channel: str, message: dict[str, Any]) -> None:
        # Until sent: a dead edge's sender is cancelled when the edge is dropped.
        await send_batch(self.layer, channel, message, wanted=lambda: True)

    def _send_now(self, channel: str, items: list[list[Any]]) -> None:
        message = {"type": ROUTER_BATCH, "epoch": self.epoch, "items": items}
        task = asyncio.create_task(self.layer.send(channel, message))
        task.add_done_callback(_log_failure)

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("router call failed while dropping an edge")


def _commit_error(future: asyncio.Future[None]) -> BrokerError | None:
    if future.cancelled():
        return Unavailable("the message store stopped before the message was committed")
    error = future.exception()
    if error is None:
        return None
    return error if isinstance(error, BrokerError) else Unavailable("the message store failed to commit the message")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sending to an edge failed: %r", task.exception())
