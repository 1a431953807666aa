"""The router's side of the cluster: serves the connections of every edge.

Runs on the router's loop, in front of the `LocalRouter` that this process's
own clients use: each item from an edge becomes the same call on it, so a
connection behaves alike wherever it is. A connection on an edge is a
`RemoteSink` here: what the router sends it goes into its edge's outbox, and
one sender task per edge ships the outbox as one batch per send, while the
next batch fills (wire.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from broker.engine.errors import BrokerError, Unavailable
from broker.protocol.calls import QueueGetCall, decode_call
from broker.protocol.client_frames import FrameId
from broker.protocol.link import (
    AckItem,
    AnswerItem,
    CallItem,
    CancelledItem,
    CloseItem,
    FramesItem,
    GiveBackItem,
    LastTagItem,
    NackItem,
    OpenItem,
    PublishedItem,
    PublishItem,
    RefusedItem,
    ResetItem,
    ResumeItem,
    RouterItem,
    SubscribedItem,
    SubscribeItem,
    UnsubscribedItem,
    UnsubscribeItem,
    WatchItem,
    WrittenItem,
    decode_edge_item,
    encode_error,
)
from broker.router.interface import Publishing
from broker.router.local import LocalRouter
from broker.runtime import memory
from broker.runtime.calls import execute
from broker.runtime.timeouts import within

from .redis_link import encodes
from .wire import (
    ANSWER_TIMEOUT,
    BEAT,
    BEAT_SECONDS,
    EDGE_BATCH,
    EDGE_TIMEOUT,
    EDGES_GROUP,
    HELLO,
    HELLO_CHANNEL,
    LINK_VERSION,
    ROUTER_BATCH,
    UNENCODABLE_ANSWER,
    Window,
    error_instead,
    send_batch,
)

log = logging.getLogger("broker.cluster")


class RemoteSink:
    """A client connection on an edge, as the router's `ConnectionSink`."""

    __slots__ = ("conn", "edge", "id", "sent", "written")

    def __init__(self, edge: Edge, conn: int) -> None:
        self.edge = edge
        self.conn = conn  # the edge's number for it
        self.id = 0  # the runtime's, once connected
        self.sent = 0  # counted batches of frames sent, numbered from 1
        self.written = 0  # the last of them the edge said is written

    def deliver(self, frames: list[str], counted: bool = False) -> None:
        if counted:
            self.sent += 1
        self.edge.push(FramesItem("d", self.conn, frames, self.sent if counted else 0))
        self.edge.delivered.add(self.conn)

    def written_upto(self, batch: int) -> int:
        """The edge has written the batches up to `batch`: how many of them are new."""
        if batch <= self.written:
            return 0
        new = min(batch, self.sent) - self.written
        self.written += new
        return new

    def cancelled(self, subscription: str, reason: str) -> None:
        self.edge.push(CancelledItem("c", self.conn, subscription, reason))

    def unsubscribed(self, subscription: str) -> None:
        self.edge.push(UnsubscribedItem("U", self.conn, subscription))

    def refused(self, frame_id: FrameId | None, error: BrokerError) -> None:
        self.edge.push(RefusedItem("f", self.conn, frame_id, encode_error(error)))


class Edge:
    """One edge process as the router knows it: its connections and its outbox."""

    def __init__(
        self, channel: str, generation: int, first: int, give_back: Callable[[int], None] = lambda holder: None
    ) -> None:
        """`first`: the sequence number of the generation's first batch with items;
        `give_back`: what a holder's messages go back to their queues through."""
        self.channel = channel
        self.generation = generation
        self.last_seen = time.monotonic()
        self.connections: dict[int, RemoteSink] = {}  # by the edge's connection id
        self.outbox: list[RouterItem] = []
        self.delivered: set[int] = set()  # connections given deliveries since the last send
        self.seq = 0  # of our last batch with items
        self.window = Window()
        self.edge_seq = first - 1  # the edge's last batch with items, which we ack
        self.ack_asked = False  # the edge's last batch asked for our ack at once
        self.wakeup = asyncio.Event()
        self.sender: asyncio.Task[None] | None = None
        # The holders (Runtime.open_holder) of what gets with ack took, by the request id of
        # the answer in the outbox, then by the number of our batch that carries it: acked
        # once the edge acks that batch, given back if the edge is dropped before, or says
        # it had no call left for the answer (`GiveBackItem`, no later than its ack).
        self.held: dict[int, int] = {}
        self.held_in: dict[int, dict[int, int]] = {}
        self.give_back = give_back

    def carried(self, items: list[RouterItem]) -> None:
        """Batch `seq` takes `items` from the outbox: the held answers among them ride on it."""
        for item in items:
            if isinstance(item, AnswerItem) and item.request_id in self.held:
                self.held_in.setdefault(self.seq, {})[item.request_id] = self.held.pop(item.request_id)

    def unwanted(self, request_id: int) -> int | None:
        """The holder of an answer the edge had no call for any more, forgotten here."""
        for held in self.held_in.values():
            if request_id in held:
                return held.pop(request_id)
        return self.held.pop(request_id, None)

    def holders(self) -> list[int]:
        """Every holder of this edge's, forgotten: the edge is dropped."""
        found = list(self.held.values()) + [holder for held in self.held_in.values() for holder in held.values()]
        self.held.clear()
        self.held_in.clear()
        return found

    def push(self, item: RouterItem) -> None:
        self.outbox.append(item)
        self.wakeup.set()

    def salvage(self, message: dict[str, Any]) -> dict[str, Any]:
        """Batch `message` without its items that cannot be encoded (wire.send_batch): an
        answer becomes an error; an item that answers nothing is dropped. An ack alone when
        none is left, its number given back (the edge would see a gap)."""
        kept: list[RouterItem] = []
        for item in message["items"]:
            if not encodes(item) and isinstance(item, AnswerItem):
                self._give_back_answer(message["seq"], item.request_id)
            instead = item if encodes(item) else error_instead(item, BrokerError(UNENCODABLE_ANSWER))
            if instead is not None and encodes(instead):
                kept.append(instead)
            else:
                log.error("a %r item for edge %s cannot be encoded: dropped", item[0], self.channel)
        if kept:
            return {**message, "items": kept}
        seq = message["seq"]
        if seq == self.seq:
            self.seq -= 1
            self.window.withdraw(seq)
        return {**message, "seq": self.seq, "items": [], "now": False}

    def _give_back_answer(self, seq: int, request_id: int) -> None:
        """A get's answer that cannot be sent: the edge's client gets an error instead, and
        what it took goes back to its queue."""
        holder = self.held_in.get(seq, {}).pop(request_id, None)
        if holder is not None:
            self.give_back(holder)


class Hub:
    def __init__(self, router: LocalRouter, layer: Any, *, term: int = 0) -> None:
        """`term`: the router lease's term (lease.py); edges follow no router of a lower one."""
        self.router = router
        self.layer = layer
        self.term = term
        self.epoch = uuid.uuid4().hex
        self.channel = ""
        self._edges: dict[str, Edge] = {}
        self._dropped: dict[str, tuple[int, float]] = {}  # edge channel -> (generation dropped, when)
        self._other_versions: set[object] = set()  # edges of another release, logged once
        self._answering: set[asyncio.Future[None]] = set()  # calls answered once they are done

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
        # `alarm`: this router is over its memory limit; edges hold their publishers back too.
        # `store`: its message store answers (edges say so in /health).
        guard = memory.guard()
        alarm = guard is not None and guard.local_alarm
        return {
            "type": BEAT, "epoch": self.epoch, "term": self.term, "channel": self.channel, "link": LINK_VERSION,
            "alarm": alarm, "store": self.router.store_reachable,
        }

    async def _beat_forever(self) -> None:
        """A beat every BEAT_SECONDS, and at once when the memory alarm rises or clears."""
        changed = asyncio.Event()
        guard = memory.guard()
        if guard is not None:
            guard.on_change(changed.set)
        while True:
            try:
                await self.layer.group_send(EDGES_GROUP, self._beat_message())
            except Exception:
                log.exception("router beat failed")
            try:
                await within(changed.wait(), BEAT_SECONDS)
            except TimeoutError:
                pass
            changed.clear()

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
        for sink in edge.connections.values():
            self._guard(self.router.disconnect, sink.id)
        for holder in edge.holders():  # answers the edge never had: their messages go back
            self._give_back(holder)

    def _give_back(self, holder: int) -> None:
        self._guard(lambda: self.router.runtime.release_held(holder, delivered=False))

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
        if message.get("link") != LINK_VERSION:
            self._log_other_version(message.get("edge"), message.get("link"))
            return
        # A batch after one with items of its generation (an empty one: its last with items).
        served_before = message["seq"] >= message["first"] + bool(message["items"])
        edge = self._edge_for(message["edge"], message["gen"], message["first"], served_before)
        if edge is None:
            return
        edge.last_seen = time.monotonic()
        acked = edge.window.acked(message.get("ack", 0))
        try:
            self._carry_out(edge, message, acked)
        finally:
            # The edge has the answers of gets that the batches it acked carried; after the
            # items of its batch, whose give-backs (answers it had no call for) come first.
            # Nothing is left of an edge dropped meanwhile: its holders were given back.
            for seq in acked:
                for holder in edge.held_in.pop(seq, {}).values():
                    self._guard(lambda held=holder: self.router.runtime.release_held(held, delivered=True))

    def _carry_out(self, edge: Edge, message: dict[str, Any], acked: list[int]) -> None:
        """The rest of a batch, once the router's batches up to `acked` are acked."""
        if acked:
            edge.wakeup.set()  # the window may have room for what waits
        elif edge.window.unanswered_since(edge.last_seen - ANSWER_TIMEOUT):
            # The edge speaks, but has not carried out a batch of ours sent this long ago: it
            # was lost on the way (Redis restarted), and our window stays full for ever. Its
            # connections resume, and what they held goes back to their queues.
            log.warning("edge %s never acked a batch of this router: it resumes its connections", edge.channel)
            self._drop(edge)
            self._send_now(edge.channel, [ResetItem("reset", edge.generation)])
            return
        if message.get("now"):  # it filled the edge's window, or a beat waits for our ack
            edge.ack_asked = True
            edge.wakeup.set()
        seq = message["seq"]
        if seq > edge.edge_seq + bool(message["items"]):
            # The edge numbers its batches with items one by one, and a beat carries the number
            # of its last: one between was lost on the way (a Redis restarted empty, a read
            # whose reply was lost), with what it held (closes, acks, unsubscribes, give-backs).
            # Served on, the edge's connections would differ from what the router holds; what
            # its gets took goes back too, also for the answers this batch acks (a give-back of
            # one of them may have been lost): delivered again rather than lost.
            log.warning("edge %s: its batch %d came after %d, one between was lost: it resumes its connections",
                        edge.channel, seq, edge.edge_seq)
            self._drop(edge)
            self._send_now(edge.channel, [ResetItem("reset", edge.generation)])
            return
        if not message["items"] or seq <= edge.edge_seq:
            return  # a beat, or a batch sent twice (a send retried after Redis took it)
        edge.edge_seq = seq
        publishes: list[Publishing] = []
        for raw in message["items"]:
            try:
                item = decode_edge_item(raw)
                if isinstance(item, PublishItem):
                    sink = edge.connections.get(item.conn)
                    publishes.append(self.router.publish(0 if sink is None else sink.id, item.request()))
                else:
                    self._apply(edge, item)
            except Exception:
                # A bug, not a refusal: the rest of the batch goes on, and a publish still
                # gets an answer, so no publisher waits for ever. The item may be anything
                # (not even a list): nothing here may raise.
                kind = _item_kind(raw)
                log.exception("item %r from edge %s failed", kind, edge.channel)
                if kind == "p":
                    publishes.append(Publishing("", 0, None, error=Unavailable("the router failed to route the message")))
        if publishes:
            self._answer_publishes(edge, seq, publishes)

    def _edge_for(self, channel: str, generation: int, first: int, served_before: bool) -> Edge | None:
        """`first`: the number of the generation's first batch with items; `served_before`:
        the batch follows one with items of its generation, which this router should have seen."""
        edge = self._edges.get(channel)
        if edge is not None and generation == edge.generation:
            return edge
        if edge is not None and generation < edge.generation:
            return None  # sent before the edge resumed: stale
        dropped = edge is None and self._dropped.get(channel, (-1, 0.0))[0] >= generation
        if dropped or (edge is None and served_before):
            # Dropped while silent (or dropped so long ago that it was forgotten, and it still
            # speaks to us of connections we no longer know): it must resume them first.
            self._send_now(channel, [ResetItem("reset", generation)])
            return None
        if edge is not None:  # the edge resumed (it lost sight of this router for a while)
            self._drop(edge)
        edge = Edge(channel, generation, first, self._give_back)
        edge.sender = asyncio.create_task(self._send_forever(edge), name=f"hub-send-{channel}")
        edge.sender.add_done_callback(lambda task: self._sender_ended(edge, task))
        self._edges[channel] = edge
        self._dropped.pop(channel, None)
        return edge

    @staticmethod
    def _answer_publishes(edge: Edge, seq: int, publishes: list[Publishing]) -> None:
        """One answer for the batch's publishes, once every one of them has settled."""
        waiting = {id(p.settled): p.settled for p in publishes if p.settled is not None and not p.settled.done()}

        def answer(_: object = None) -> None:
            if all(future.done() for future in waiting.values()):
                results = [_encoded(publishing.outcome()) for publishing in publishes]
                edge.push(PublishedItem("P", seq, results))

        if not waiting:
            answer()
        for future in waiting.values():
            future.add_done_callback(answer)

    def _apply(self, edge: Edge, item: Any) -> None:
        router = self.router
        match item:
            case CallItem():
                self._call(edge, item)
            case GiveBackItem(request_id=request_id):
                holder = edge.unwanted(request_id)
                if holder is not None:
                    self._give_back(holder)
            case OpenItem(conn=conn):
                sink = RemoteSink(edge, conn)
                sink.id = router.connect(sink)
                edge.connections[conn] = sink
            case ResumeItem(conn=conn, first_tag=first_tag, watching=watching, subscriptions=subscriptions):
                # Known to the edge's map before anything can fail: a close reaches it.
                sink = RemoteSink(edge, conn)
                sink.id = router.connect(sink, first_tag=first_tag)
                edge.connections[conn] = sink
                router.restore(sink.id, watching=watching, subscriptions=[args.request() for args in subscriptions])
            case _:
                found = edge.connections.get(item.conn)
                if found is None:
                    return  # closed meanwhile
                self._on_connection(edge, found, item)

    def _on_connection(self, edge: Edge, sink: RemoteSink, item: Any) -> None:
        router = self.router
        connection_id = sink.id
        match item:
            case CloseItem(conn=conn):
                del edge.connections[conn]
                router.disconnect(connection_id)
            case SubscribeItem(conn=conn):
                def answered(queue: str | None, error: BrokerError | None) -> None:
                    # Before the deliveries that subscribing starts, which follow it in the outbox.
                    edge.push(SubscribedItem("S", conn, queue, None if error is None else encode_error(error)))

                router.subscribe(connection_id, item.request(), answered)
            case UnsubscribeItem(key=key):
                router.unsubscribe(connection_id, key)
            case AckItem(frame_id=frame_id, tag=tag, multiple=multiple):
                router.ack(connection_id, frame_id, tag, multiple=multiple)
            case NackItem(frame_id=frame_id, tag=tag, multiple=multiple, requeue=requeue):
                router.nack(connection_id, frame_id, tag, multiple=multiple, requeue=requeue)
            case WatchItem(watching=watching):
                router.watch(connection_id, watching)
            case WrittenItem(upto=upto):
                batches = sink.written_upto(upto)
                if batches:
                    router.written(connection_id, batches)
            case _:
                log.error("unexpected item %r from edge %s", item[:1], edge.channel)

    def _call(self, edge: Edge, item: CallItem) -> None:
        """A call of the edge's HTTP API. What a get with ack takes is held (`Edge.held`)
        until the edge acks the batch with its answer: an answer the edge never had (it
        resumed meanwhile, or was dropped) would otherwise take the messages with it."""
        runtime, holder = self.router.runtime, None
        try:
            call = decode_call(item.op, item.args)
            if isinstance(call, QueueGetCall) and call.ack:
                holder = runtime.open_holder()
            result = execute(runtime, call, holder=holder)
        except Exception as error:
            self._answer(edge, item, None, error, holder)
            return
        if inspect.isawaitable(result):  # a get waiting for its queue's window
            task = asyncio.ensure_future(self._answer_later(edge, item, result, holder))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        else:
            self._answer(edge, item, result, None, holder)

    async def _answer_later(self, edge: Edge, item: CallItem, result: Awaitable[Any], holder: int | None) -> None:
        try:
            value = await result
        except Exception as error:
            self._answer(edge, item, None, error, holder)
            return
        self._answer(edge, item, value, None, holder)

    def _answer(self, edge: Edge, item: CallItem, result: Any, error: Exception | None, holder: int | None) -> None:
        if holder is not None:
            if error is None and self._edges.get(edge.channel) is edge:
                edge.held[item.request_id] = holder
            else:  # nothing to answer with, or the edge was dropped meanwhile: none will have them
                self._give_back(holder)
        if error is None:
            edge.push(AnswerItem("R", item.request_id, True, result))
        elif isinstance(error, BrokerError):
            edge.push(AnswerItem("R", item.request_id, False, encode_error(error)))
        else:
            log.error("router call %s failed", item.op, exc_info=error)
            failure = Unavailable(f"the router failed to carry out {item.op}")
            edge.push(AnswerItem("R", item.request_id, False, encode_error(failure)))

    # -- sending ---------------------------------------------------------

    async def _send_forever(self, edge: Edge) -> None:
        runtime = self.router.runtime
        while True:
            await edge.wakeup.wait()
            edge.wakeup.clear()
            items: list[RouterItem] = []
            if edge.outbox and not edge.window.full:
                items, edge.outbox = edge.outbox, []
                for conn in edge.delivered:
                    sink = edge.connections.get(conn)
                    tag = None if sink is None else runtime.last_tag(sink.id)
                    if tag is not None:
                        items.append(LastTagItem("t", conn, tag))
                edge.delivered.clear()
                edge.seq += 1
                edge.window.sent(edge.seq)
                edge.carried(items)
            elif not edge.ack_asked:
                continue  # nothing to say, the window is full (the edge's ack wakes us), or the ack can wait
            edge.ack_asked = False
            message = {
                "type": ROUTER_BATCH, "epoch": self.epoch, "gen": edge.generation, "seq": edge.seq,
                "ack": edge.edge_seq, "items": items, "now": bool(items) and edge.window.full,
            }
            await self._send(edge, message)

    def _sender_ended(self, edge: Edge, task: asyncio.Task[None]) -> None:
        """An edge's sender ends only when cancelled (the edge dropped), or by a bug: then
        nothing would reach the edge again, and its clients would wait for ever. Dropped
        instead, and reset: its connections resume with a new sender."""
        if task.cancelled():
            return
        error = task.exception()
        log.error("the sender to edge %s failed: the edge resumes its connections", edge.channel, exc_info=error)
        if self._edges.get(edge.channel) is not edge:
            return  # dropped meanwhile
        self._drop(edge)
        self._send_now(edge.channel, [ResetItem("reset", edge.generation)])

    async def _send(self, edge: Edge, message: dict[str, Any]) -> None:
        # Until sent: a dead edge's sender is cancelled when the edge is dropped.
        await send_batch(self.layer, edge.channel, message, wanted=lambda: True, salvage=edge.salvage)

    def _send_now(self, channel: str, items: list[RouterItem]) -> None:
        message = {"type": ROUTER_BATCH, "epoch": self.epoch, "items": items}
        task = asyncio.create_task(self.layer.send(channel, message))
        task.add_done_callback(_log_failure)

    def _log_other_version(self, channel: object, version: object) -> None:
        if channel not in self._other_versions:
            self._other_versions.add(channel)
            log.error("edge %s speaks cluster link version %r, this router %d: ignored", channel, version, LINK_VERSION)

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("a router call for an edge failed")


def _item_kind(raw: object) -> object:
    """An item's kind, its first element, for a log; None for what is not an item."""
    return raw[0] if isinstance(raw, list | tuple) and raw else None


def _encoded(outcome: int | BrokerError) -> int | list[Any]:
    return encode_error(outcome) if isinstance(outcome, BrokerError) else outcome


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sending to an edge failed: %r", task.exception())
