"""An edge's side of the cluster: one link per process to whichever router is active.

WebSocket consumers and HTTP views of a process without the router talk to
the router through the `EdgeLink`. It batches what they send (one
channel-layer message per send, while the next batch fills), dispatches
what comes back in order, and remembers what each connection subscribed,
so that when a new router takes over the connections resume by themselves:
same subscriptions, delivery tags above any the client holds, and what was
in flight failed with `unavailable` rather than left hanging (issue 6).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol, TypeVar

from channels.exceptions import ChannelFull

from broker.engine.errors import BrokerError, Unavailable
from broker.protocol.publish import PublishRequest
from broker.runtime.stamps import new_message_id

from .wire import (
    ANSWER_TIMEOUT,
    BEAT,
    BEAT_SECONDS,
    CALL_TIMEOUT,
    EDGE_BATCH,
    EDGES_GROUP,
    HELLO,
    HELLO_CHANNEL,
    ROUTER_BATCH,
    ROUTER_TIMEOUT,
    Window,
    decode_error,
    publish_item,
    send_batch,
)

log = logging.getLogger("broker.cluster")

T = TypeVar("T")
SubscribeAnswer = Callable[[str | None, BrokerError | None], None]


class EdgeSink(Protocol):
    """A client connection on this edge (the WebSocket consumer)."""

    def deliver(self, frames: list[str]) -> None: ...

    def cancelled(self, subscription: str, reason: str) -> None: ...

    def unsubscribed(self, subscription: str) -> None:
        """The router has ended this subscription, after its last delivery."""


class _Connection:
    __slots__ = ("answers", "last_tag", "sink", "subscriptions", "watching")

    def __init__(self, sink: EdgeSink) -> None:
        self.sink = sink
        self.last_tag = 0
        self.subscriptions: dict[str, list[Any]] = {}  # key -> subscribe args, to resume
        self.watching = False
        self.answers: deque[tuple[list[Any], SubscribeAnswer, float]] = deque()  # + when asked


_current: EdgeLink | None = None


def current_link() -> EdgeLink | None:
    """The link of this process, if it runs one."""
    return _current


class EdgeLink:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        # Also waits for the router lease (a `runbroker` of a cluster, not an edge).
        self.candidate = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.channel = ""
        self.router_channel: str | None = None
        self.epoch: str | None = None
        self.generation = 0
        self._last_beat = 0.0
        self._last_sent = 0.0
        self._connections: dict[int, _Connection] = {}
        self._next_connection = 1
        self._outbox: list[list[Any]] = []
        self._batch: asyncio.Future[list[Any]] | None = None  # answers the outbox's publishes
        self._batch_size = 0
        self._awaiting: dict[int, asyncio.Future[list[Any]]] = {}  # batch seq -> its answer
        self._sent_at: dict[int, float] = {}  # batch seq -> when, while unanswered or awaited
        self._seq = 0
        self._window = Window()
        self._last_answer_check = 0.0
        self._router_seq = 0  # the router's last batch with items, which we ack
        self._owe_ack = False
        self._beat_due = False
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._next_call = 1
        self._wakeup = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._loop_thread: int | None = None

    @property
    def router_known(self) -> bool:
        return self.router_channel is not None

    # -- life cycle ------------------------------------------------------

    async def start(self) -> None:
        global _current
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(EDGES_GROUP, self.channel)
        self._main = asyncio.create_task(self._run(), name="edge-link")
        _current = self
        await self._hello()

    async def wait_for_router(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.router_known and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.router_known

    async def stop(self) -> None:
        global _current
        if _current is self:
            _current = None
        self._lose_router("this edge is stopping")
        if self._main is not None:
            self._main.cancel()
            try:
                await self._main
            except asyncio.CancelledError:
                pass
        try:
            await self.layer.group_discard(EDGES_GROUP, self.channel)
        except Exception:
            log.debug("leaving the edges' group failed", exc_info=True)

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._receive_forever(), name="edge-receive")
            group.create_task(self._send_forever(), name="edge-send")
            group.create_task(self._watch_router(), name="edge-watchdog")

    async def _hello(self) -> None:
        try:
            await self.layer.send(HELLO_CHANNEL, {"type": HELLO, "edge": self.channel})
        except ChannelFull:
            pass  # no router has read them for a while; its beat will come
        except Exception:
            log.exception("saying hello to the router failed")

    async def _watch_router(self) -> None:
        """Lose a router that went silent; beat towards it when we have nothing to send."""
        while True:
            await asyncio.sleep(BEAT_SECONDS)
            now = time.monotonic()
            if self.router_channel is None:
                await self._hello()
                continue
            if now - self._last_beat > ROUTER_TIMEOUT:
                log.warning("router %s silent for %.0f s: waiting for the next one", self.epoch, ROUTER_TIMEOUT)
                self._lose_router("the broker's router went away; a standby takes over")
            elif self._answer_lost(now):
                epoch, channel = self.epoch, self.router_channel
                log.warning("an answer of router %s is %.0f s late: resuming the connections", epoch, ANSWER_TIMEOUT)
                self._lose_router("an answer of the broker's router was lost; publish again")
                if epoch is not None and channel is not None:
                    self._follow(epoch, channel)
            elif now - self._last_sent >= BEAT_SECONDS:
                self._beat_due = True  # an empty batch says this edge lives
                self._wakeup.set()

    def _answer_lost(self, now: float) -> bool:
        """Is an ack, a publish's answer or a subscribe's answer overdue? Checked once a second."""
        if now - self._last_answer_check < 1.0:
            return False
        self._last_answer_check = now
        deadline = now - ANSWER_TIMEOUT
        if any(sent < deadline for sent in self._sent_at.values()):
            return True
        return any(
            connection.answers and connection.answers[0][2] < deadline for connection in self._connections.values()
        )

    def _lose_router(self, reason: str) -> None:
        """Fail what waits on the router; keep connections to resume on the next one."""
        self.router_channel = None
        self.epoch = None
        self._outbox = []
        self._window.clear()
        self._router_seq = 0
        self._owe_ack = False
        failure = Unavailable(reason)
        batches = list(self._awaiting.values())
        if self._batch is not None:
            batches.append(self._batch)
        self._awaiting.clear()
        self._sent_at.clear()
        self._batch = None
        self._batch_size = 0
        for future in batches + list(self._calls.values()):
            if not future.done():
                future.set_exception(failure)
        self._calls.clear()
        for connection in self._connections.values():
            answers, connection.answers = connection.answers, deque()
            for _, answer, _ in answers:
                answer(None, failure)

    def _follow(self, epoch: str, channel: str) -> None:
        """A router we do not follow yet: resume every connection on it."""
        if self.epoch is not None:
            log.warning("router %s replaced by %s", self.epoch[:8], epoch[:8])
            self._lose_router("the broker's router changed; publish again")
        else:
            log.info("following router %s", epoch[:8])
        self.epoch = epoch
        self.router_channel = channel
        self.generation += 1
        for conn, connection in self._connections.items():
            self._push(
                ["a", conn, connection.last_tag + 1, connection.watching, list(connection.subscriptions.values())]
            )

    # -- receiving -------------------------------------------------------

    async def _receive_forever(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
                kind = message.get("type")
                if kind == BEAT:
                    self._last_beat = time.monotonic()
                    if message["epoch"] != self.epoch:
                        self._follow(message["epoch"], message["channel"])
                elif kind == ROUTER_BATCH and message.get("epoch") == self.epoch:
                    self._last_beat = time.monotonic()
                    self._on_ack(message.get("ack", 0))
                    if message["items"]:
                        self._router_seq = message.get("seq", self._router_seq)  # a reset has none
                        self._owe_ack = True
                        self._wakeup.set()
                        self.on_batch(message["items"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a batch from the router failed")
                await asyncio.sleep(0.1)

    def on_batch(self, items: list[list[Any]]) -> None:
        connections = self._connections
        for item in items:
            kind = item[0]
            if kind == "d":
                connection = connections.get(item[1])
                if connection is not None:
                    connection.sink.deliver(item[2])
            elif kind == "P":
                future = self._awaiting.pop(item[1], None)
                if item[1] not in self._window:
                    self._sent_at.pop(item[1], None)
                if future is not None and not future.done():
                    future.set_result(item[2])
            elif kind == "t":
                connection = connections.get(item[1])
                if connection is not None and item[2] > connection.last_tag:
                    connection.last_tag = item[2]
            elif kind == "S":
                self._answer_subscribe(item[1], item[2], item[3])
            elif kind == "U":
                connection = connections.get(item[1])
                if connection is not None:
                    # Subscribed meanwhile (the answer crossed the unsubscribe): not to resume.
                    connection.subscriptions.pop(item[2], None)
                    connection.sink.unsubscribed(item[2])
            elif kind == "c":
                connection = connections.get(item[1])
                if connection is not None:
                    connection.subscriptions.pop(item[2], None)
                    connection.sink.cancelled(item[2], item[3])
            elif kind == "R":
                call = self._calls.pop(item[1], None)
                if call is not None and not call.done():
                    if item[2]:
                        call.set_result(item[3])
                    else:
                        call.set_exception(decode_error(item[3]))
            elif kind == "reset":
                # The router dropped this edge (it was silent too long) and ignores it
                # until it resumes its connections: what was in flight is lost. It answers
                # every batch of the dropped generation: a reset for one this edge has
                # resumed since is old news, not a reason to fail what is in flight again.
                if len(item) > 1 and item[1] != self.generation:
                    continue
                epoch, channel = self.epoch, self.router_channel
                if epoch is not None and channel is not None:
                    self._lose_router("the broker's router lost this edge for a while; publish again")
                    self._follow(epoch, channel)
                return

    def _answer_subscribe(self, conn: int, queue: str | None, error: list[Any] | None) -> None:
        connection = self._connections.get(conn)
        if connection is None or not connection.answers:
            return
        args, answer, _ = connection.answers.popleft()
        if error is not None:
            answer(None, decode_error(error))
            return
        connection.subscriptions[args[0]] = args
        answer(queue, None)

    # -- sending ---------------------------------------------------------

    def _push(self, item: list[Any]) -> None:
        self._outbox.append(item)
        self._wakeup.set()

    def _on_ack(self, seq: int) -> None:
        done = self._window.acked(seq)
        for answered in done:
            if answered not in self._awaiting:
                self._sent_at.pop(answered, None)
        if done:
            self._wakeup.set()

    async def _send_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            channel = self.router_channel
            if channel is None:
                continue
            items: list[list[Any]] = []
            if self._outbox and not self._window.full:
                items, self._outbox = self._outbox, []
                self._seq += 1
                self._window.sent(self._seq)
                self._sent_at[self._seq] = time.monotonic()
                if self._batch is not None:
                    self._awaiting[self._seq] = self._batch
                    self._batch, self._batch_size = None, 0
            elif not (self._owe_ack or self._beat_due):
                continue  # the window is full: the router's ack wakes us
            message = {
                "type": EDGE_BATCH,
                "edge": self.channel,
                "epoch": self.epoch,
                "gen": self.generation,
                "seq": self._seq,
                "ack": self._router_seq,
                "items": items,
            }
            self._owe_ack = self._beat_due = False
            self._last_sent = time.monotonic()
            await self._send(channel, message)

    async def _send(self, channel: str, message: dict[str, Any]) -> None:
        await send_batch(self.layer, channel, message, wanted=lambda: self.router_channel == channel)

    # -- what connections do (on the loop) --------------------------------

    def connect(self, sink: EdgeSink) -> int:
        conn = self._next_connection
        self._next_connection += 1
        self._connections[conn] = _Connection(sink)
        if self.router_channel is not None:
            self._push(["o", conn])
        return conn

    def disconnect(self, conn: int) -> None:
        if self._connections.pop(conn, None) is not None and self.router_channel is not None:
            self._push(["x", conn])

    def publish(self, conn: int, request: PublishRequest) -> tuple[str, asyncio.Future[list[Any]], int]:
        """Send a publish; returns (message_id, the future of its batch's answers, its slot there).
        The answer at the slot is the routed count, or an encoded error (wire.decode_error)."""
        message_id = request.message_id or new_message_id()
        if self.router_channel is None:
            failed: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            failed.add_done_callback(_retrieve)
            failed.set_exception(Unavailable("the broker's router is not reachable; a standby takes over"))
            return message_id, failed, 0
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
            self._batch.add_done_callback(_retrieve)
        slot = self._batch_size
        self._batch_size += 1
        self._push(publish_item(conn, request, message_id))
        return message_id, self._batch, slot

    async def publish_wait(self, request: PublishRequest) -> tuple[str, int]:
        """Publish from the HTTP API: (message_id, routed) once every durable copy is committed."""
        message_id, batch, slot = self.publish(0, request)
        answer = (await batch)[slot]
        if isinstance(answer, list):
            raise decode_error(answer)
        return message_id, int(answer)

    def subscribe(self, conn: int, args: list[Any], answer: SubscribeAnswer) -> None:
        """`args` as wire.py's "s" item after the connection; `answer` gets (queue, None) or
        (None, error) before any delivery of the new subscription."""
        connection = self._connections.get(conn)
        if connection is None:
            return
        if self.router_channel is None:
            answer(None, Unavailable("the broker's router is not reachable; a standby takes over"))
            return
        connection.answers.append((args, answer, time.monotonic()))
        self._push(["s", conn, *args])

    def unsubscribe(self, conn: int, key: str) -> None:
        """End a subscription; the sink's `unsubscribed` says when the router has."""
        connection = self._connections.get(conn)
        if connection is None:
            return
        connection.subscriptions.pop(key, None)
        if self.router_channel is not None:
            self._push(["u", conn, key])
        else:  # no router holds it: it has ended already
            connection.sink.unsubscribed(key)

    def ack(self, conn: int, frame_id: Any, tag: int, *, multiple: bool) -> None:
        if self.router_channel is not None:
            self._push(["k", conn, frame_id, tag, multiple])

    def nack(self, conn: int, frame_id: Any, tag: int, *, multiple: bool, requeue: bool) -> None:
        if self.router_channel is not None:
            self._push(["n", conn, frame_id, tag, multiple, requeue])

    def watch(self, conn: int, watching: bool) -> None:
        connection = self._connections.get(conn)
        if connection is not None:
            connection.watching = watching
        if self.router_channel is not None:
            self._push(["w" if watching else "W", conn])

    # -- calls of the HTTP API ------------------------------------------

    async def call(self, op: str, *args: Any) -> Any:
        if self.router_channel is None:
            raise Unavailable("the broker's router is not reachable; a standby takes over")
        request_id = self._next_call
        self._next_call += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[request_id] = future
        self._push(["r", request_id, op, list(args)])
        try:
            return await asyncio.wait_for(future, CALL_TIMEOUT)
        except TimeoutError:
            raise Unavailable("the broker's router did not answer in time") from None
        finally:
            self._calls.pop(request_id, None)

    def run_threadsafe(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of this link on its loop from a worker thread; its result."""
        loop = self.loop
        if loop is None or loop.is_closed() or threading.get_ident() == self._loop_thread:
            coroutine.close()
            raise Unavailable("the broker's router is not reachable from here")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(CALL_TIMEOUT + 1)
        except FutureTimeout:
            future.cancel()
            raise Unavailable("the broker's router did not answer in time") from None

def _retrieve(future: asyncio.Future[Any]) -> None:
    # Its publishers read the outcome; one that went away meanwhile must not make
    # asyncio log "exception was never retrieved".
    if not future.cancelled():
        future.exception()
