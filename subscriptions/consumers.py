"""The WebSocket protocol at /ws (PROTOCOL.md, "WebSocket (/ws)").

`BrokerConsumer` is one client connection: it parses frames (broker/protocol/frames.py),
calls the router (broker/runtime/runtime.py) on this same event loop, and is
the router's `DeliverySink` for that connection. It does no ORM work and never
blocks the loop: every frame to the client, replies and deliveries alike, goes
through one outbox drained by one sender task, so reading the next frame never
waits for a send and the client sees frames in the order they were produced.

In an edge process (issue 6) the router runs elsewhere: the same frames go
to it through the process's `EdgeLink`, in batches, and its answers come back
in order; the connection does not know the difference beyond that.

Authentication and permissions (access/asgi.py) are settled once, at connect;
each publish and subscribe frame is then checked against them before either
router path, at the cost of a dict lookup per name.

Imports the runtime, the cluster link, the frame parser and access's checks; no models, no services.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from access.asgi import authorize_frame, websocket_permissions
from access.rules import ANONYMOUS_ALL, NOBODY, Permissions
from broker.cluster.edge import EdgeLink, current_link
from broker.cluster.wire import decode_error
from broker.engine.errors import (
    BrokerError,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from broker.engine.jsoncodec import dumps, loads
from broker.protocol.publish import FRAME_OVERHEAD
from broker.runtime.runtime import Runtime, current_runtime

from broker.protocol.frames import (
    Ack,
    CancelledFrame,
    ClientFrame,
    ConfirmFrame,
    FrameError,
    FrameId,
    Nack,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    UnsubscribedFrame,
    Unwatch,
    Watch,
    error_frame,
    parse_frame,
    pong_frame,
    reply_frame,
    subscribed_frame,
)
from broker.transport.limits import (
    ABUSIVE,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    REASON_CONNECTIONS,
    REASON_RATE,
    REASON_SLOW,
    FrameBudget,
    close_firmly,
    frame_id_of,
    text_bytes,
    user_connections,
)

log = logging.getLogger("broker.ws")

# RFC 6455 close codes.
CLOSE_TOO_BIG: Final = 1009  # PROTOCOL.md: a frame over the size limit
CLOSE_INTERNAL_ERROR: Final = 1011  # no router, or a bug: logged, never swallowed
# Private-use close code (4000-4999): 4000 + HTTP's 401, after an `unauthorized` error frame.
CLOSE_UNAUTHORIZED: Final = 4401


@dataclass(slots=True)
class _PendingConfirm:
    """A publish waiting for its durable copies to commit; confirms leave in publish order.

    Through an edge, `committed` is the answer to the publish's batch, and `slot` the
    publish's place in it: its routed count, or its error."""

    frame_id: FrameId | None
    message_id: str
    routed: int
    committed: asyncio.Future[Any] | None
    slot: int = -1
    error: BrokerError | None = None  # refused at once, answered in its turn


class BrokerConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._runtime: Runtime | None = None
        self._link: EdgeLink | None = None
        self._connection_id: int | None = None
        self._closed = False
        self._max_bytes = 0
        self._outbox: deque[str] = deque()
        # Limits (broker/transport/limits.py): UTF-8 bytes in the outbox plus the frame being
        # sent, kept on append and pop; past WS_MAX_BUFFERED_BYTES the client is too slow.
        self._buffered = 0
        self._max_buffered = settings.WS_MAX_BUFFERED_BYTES
        self._budget = FrameBudget.from_settings()
        self._closing: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._confirms: deque[_PendingConfirm] = deque()
        self._awaited_commit: asyncio.Future[Any] | None = None
        # The router names a subscription by a string; the client's id may be a
        # number, echoed as a number: router key -> id as the client sent it.
        self._subscriptions: dict[str, FrameId] = {}
        # Through an edge: subscribes not answered yet, and unsubscribes not carried out yet.
        self._subscribing: set[str] = set()
        self._unsubscribing: dict[str, FrameId] = {}
        self._generated = 0
        self._permissions: Permissions = NOBODY  # set at connect
        self._counted_as: str | None = None  # the user whose connection count this one holds

    # -- Channels plumbing -------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' loop, without a channel layer: deliveries come from the router through
        `deliver`, never over the layer (DESIGN.md); a layer channel per connection also
        made the in-memory layer's expiry scan grow with the square of the connections.
        With one source of events left, read them in turn: no task and `asyncio.wait`
        per event as in Channels' await_many_dispatch (issue 5's profiles)."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.receive":  # the hot path: no dispatch
                    waiting = self._on_frame(message.get("text"), message.get("bytes"))
                    if waiting is not None:
                        await waiting
                else:
                    await self.dispatch(message)
        except StopConsumer:
            pass
        finally:
            # Whatever ended the loop (the client left during connect, a bug), the
            # router connection and the per-user count are given back.
            self._shutdown()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels calls `aclose_old_connections()` (a hop to a database thread)
        # before every event, for consumers that use the ORM. This one never
        # does: skipping it keeps each frame on the loop.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        # As the base class, minus groups (none) and the database hop (see `dispatch`).
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    # -- life cycle --------------------------------------------------------

    async def connect(self) -> None:
        try:
            self._permissions = await websocket_permissions(self.scope)
        except Unauthorized as error:
            # Accepted first, so the client can read why before the close.
            self._closed = True
            await self.accept()
            await self.send(text_data=dumps(error_frame(None, error)))
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        who = self._permissions.who
        if self._permissions is not ANONYMOUS_ALL:
            if not user_connections.take(who):
                self._closed = True
                await self.accept()
                await self.close(code=CLOSE_TRY_LATER, reason=REASON_CONNECTIONS)
                return
            self._counted_as = who
        loop = asyncio.get_running_loop()
        runtime, link = current_runtime(), current_link()
        await self.accept()
        if runtime is not None and runtime.loop is loop:
            self._runtime = runtime
            self._connection_id = runtime.connect(self)
        elif link is not None and link.loop is loop:
            self._link = link
            self._connection_id = link.connect(self)
        else:
            # Served without a router or a link on this loop: say so with a close code
            # rather than an HTTP 403 a browser cannot tell apart from a refused origin.
            log.error("WebSocket connection refused: no router or cluster link runs on this event loop")
            self._closed = True
            await self.close(code=CLOSE_INTERNAL_ERROR)
            return
        self._max_bytes = settings.MAX_MESSAGE_BYTES
        self._sender = asyncio.create_task(self._send_loop(), name=f"ws-sender-{self._connection_id}")

    async def disconnect(self, code: int) -> None:
        self._shutdown()
        sender = self._sender
        if sender is not None and sender is not asyncio.current_task():
            try:
                await sender
            except asyncio.CancelledError:
                pass

    def _shutdown(self) -> None:
        """Leave the router (unacknowledged messages are requeued) and stop sending. Idempotent."""
        if self._counted_as is not None:
            user_connections.give_back(self._counted_as)
            self._counted_as = None
        if self._closed and self._connection_id is None:
            return
        self._closed = True
        self._outbox.clear()
        self._buffered = 0
        self._confirms.clear()
        runtime, link, connection_id = self._runtime, self._link, self._connection_id
        self._connection_id = None
        if connection_id is not None:
            try:
                if runtime is not None:
                    runtime.disconnect(connection_id)
                elif link is not None:
                    link.disconnect(connection_id)
            except Exception:
                log.exception("router failed to close connection %d", connection_id)
        if self._sender is not None and self._sender is not asyncio.current_task():
            self._sender.cancel()

    async def _close(self, code: int) -> None:
        """Close from the server side: nothing queued is sent after the close frame."""
        self._shutdown()
        await self.close(code=code)

    # -- the DeliverySink protocol (called by the router, on this loop) ---

    def deliver(self, frames: list[str]) -> None:
        if self._closed:
            return
        self._outbox.extend(frames)
        size = self._buffered
        for frame in frames:
            size += len(frame) if frame.isascii() else text_bytes(frame)
        self._buffered = size
        if size > self._max_buffered:
            self._too_slow()
            return
        self._wakeup.set()

    def unsubscribed(self, subscription: str) -> None:
        """Through an edge: the router has ended the subscription (`_handle_remote`)."""
        self._subscriptions.pop(subscription, None)
        frame_id = self._unsubscribing.pop(subscription, None)
        if frame_id is not None:
            self._push(UnsubscribedFrame(type="unsubscribed", id=frame_id))

    def cancelled(self, subscription: str, reason: str) -> None:
        shown = self._subscriptions.pop(subscription, subscription)
        self._push(CancelledFrame(type="cancelled", subscription=shown, reason=reason))

    def _push(self, frame: Any) -> None:
        if self._closed:
            return
        text = dumps(frame)
        self._outbox.append(text)
        self._buffered += text_bytes(text)
        if self._buffered > self._max_buffered:
            self._too_slow()
            return
        self._wakeup.set()

    async def _send_loop(self) -> None:
        """The only writer of this socket: one WebSocket frame per outbox entry, in order."""
        outbox, wakeup = self._outbox, self._wakeup
        while True:
            # No timeout: this task waits for frames as long as the connection lives,
            # and `_shutdown` cancels it.
            await wakeup.wait()
            wakeup.clear()
            send = self.base_send  # the server's ASGI send: Channels' wrappers add nothing here
            try:
                while outbox:
                    text = outbox.popleft()
                    await send({"type": "websocket.send", "text": text})
                    # Counted until sent: a client that does not read holds up this send.
                    self._buffered -= len(text) if text.isascii() else text_bytes(text)
            except OSError:
                # The client closed or went away while frames were queued (uvicorn's
                # ClientDisconnected is an OSError): no fault, nothing left to tell it.
                log.debug("WebSocket connection %s went away while being sent to", self._connection_id)
                self._shutdown()
                return
            except Exception:
                log.exception("sending to WebSocket connection %s failed; closing it", self._connection_id)
                self._shutdown()
                try:
                    await self.close(code=CLOSE_INTERNAL_ERROR)
                except Exception:  # the socket is already gone: nothing left to tell
                    log.debug("close after a failed send failed too", exc_info=True)
                return

    def _too_slow(self) -> None:
        """Over WS_MAX_BUFFERED_BYTES: drop what is queued and close (README, "Limits")."""
        log.info("WebSocket connection %s closed: over WS_MAX_BUFFERED_BYTES unsent (slow consumer)", self._connection_id)
        self._closed = True  # nothing more is queued; the memory goes now
        self._outbox.clear()
        self._buffered = 0
        # Left on the next turn of the loop, not inside the router's call that delivered:
        # leaving requeues this connection's unacknowledged messages to others.
        asyncio.get_running_loop().call_soon(self._shutdown)
        self._closing = asyncio.ensure_future(close_firmly(self.base_send, CLOSE_POLICY, REASON_SLOW))

    async def _refuse_over_rate(self, text: str, verdict: int) -> None:
        """A frame over WS_MAX_FRAMES_PER_SECOND: not carried out; a flooding client is closed."""
        if verdict == ABUSIVE:
            log.info("WebSocket connection %s closed: frames at over ten times WS_MAX_FRAMES_PER_SECOND", self._connection_id)
            self._shutdown()
            await close_firmly(self.base_send, CLOSE_POLICY, REASON_RATE)
            return
        refused = RateLimited(f"over {self._budget.rate:g} frames per second: frame not carried out")
        self._push(error_frame(frame_id_of(text), refused))

    # -- receiving ---------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        waiting = self._on_frame(text_data, bytes_data)
        if waiting is not None:
            await waiting

    def _on_frame(self, text_data: str | None, bytes_data: bytes | None) -> Coroutine[Any, Any, None] | None:
        """One client frame, carried out before it returns. Only what must wait (a close,
        a refusal over the rate) comes back as a coroutine: on the hot path no coroutine
        is made per frame, nor a handler looked up (issue 5's profiles)."""
        if self._closed:
            return None
        limit = self._max_bytes + FRAME_OVERHEAD
        budget = self._budget
        budget.tokens -= 1.0  # the refill reads the clock only when the bucket runs dry
        if budget.tokens < 0.0:
            verdict = budget.refill()
            if verdict:
                return self._refuse_over_rate(text_data or "", verdict)
        if text_data is None:
            if bytes_data is not None and len(bytes_data) > limit:
                return self._close(CLOSE_TOO_BIG)
            self._push(error_frame(None, FrameError("binary frames are not supported: send JSON text frames")))
            return None
        # Bytes, not characters, count; `isascii` is O(1), so most frames are not re-encoded.
        if len(text_data) > limit // 4 and (
            len(text_data) if text_data.isascii() else len(text_data.encode("utf-8", "surrogatepass"))
        ) > limit:
            return self._close(CLOSE_TOO_BIG)
        try:
            data = loads(text_data)
        except ValueError as error:  # orjson's and json's decode errors are ValueErrors
            self._push(error_frame(None, FrameError(f"the frame is not JSON: {error}")))
            return None
        try:
            frame = parse_frame(data, max_bytes=self._max_bytes)
        except TooLarge:
            return self._close(CLOSE_TOO_BIG)
        except FrameError as error:
            self._refuse(error.frame_id, error, publish=isinstance(data, dict) and data.get("type") == "publish")
            return None
        try:
            if not self._permissions.everything:
                authorize_frame(self._permissions, frame)
            self._handle(frame)
        except BrokerError as error:
            self._refuse(frame.id, error, publish=type(frame) is Publish)
        except Exception:
            log.exception("WebSocket frame %r failed", type(frame).__name__)
            return self._close(CLOSE_INTERNAL_ERROR)
        return None

    def _refuse(self, frame_id: FrameId | None, error: BrokerError, *, publish: bool) -> None:
        if publish and self._confirms:
            # Behind earlier publishes still waiting for their commit: a publisher gets
            # its answers in publish order, refusals included. (A frame refused unread,
            # over the rate, is answered at once.) Kept without its traceback, which
            # holds the frame and the stack that refused it.
            self._confirms.append(_PendingConfirm(frame_id, "", 0, None, error=error.with_traceback(None)))
        else:
            self._push(error_frame(frame_id, error))

    def _handle(self, frame: ClientFrame) -> None:
        """Carry out one frame on the router; synchronous, so no other frame interleaves."""
        runtime, connection_id = self._runtime, self._connection_id
        if connection_id is None:
            return
        if runtime is None:
            if self._link is not None:
                self._handle_remote(self._link, connection_id, frame)
            return
        match frame:
            case Publish(request=request):
                message_id, routed, committed = runtime.publish_nowait(request)
                if frame.id is not None or committed is not None:
                    self._confirms.append(_PendingConfirm(frame.id, message_id, routed, committed))
                    if committed is not None and committed is not self._awaited_commit:
                        # Publishes that share a commit share its future: one callback each.
                        committed.add_done_callback(self._on_commit)
                        self._awaited_commit = committed
                    self._flush_confirms()
            case Ack(delivery_tag=tag, multiple=multiple):
                runtime.ack(connection_id, tag, multiple=multiple)
            case Nack(delivery_tag=tag, multiple=multiple, requeue=requeue):
                runtime.nack(connection_id, tag, multiple=multiple, requeue=requeue)
            case Subscribe():
                self._subscribe(runtime, connection_id, frame)
            case Unsubscribe(id=frame_id):
                key = self._key(frame_id)
                runtime.unsubscribe(connection_id, key)
                self._subscriptions.pop(key, None)
                self._push(UnsubscribedFrame(type="unsubscribed", id=frame_id))
            case Ping(id=frame_id):
                self._push(pong_frame(frame_id))
            case Watch(id=frame_id):
                first = runtime.watch(connection_id)
                self._push(reply_frame("watching", frame_id))
                self.deliver([first])
            case Unwatch(id=frame_id):
                runtime.unwatch(connection_id)
                self._push(reply_frame("unwatched", frame_id))

    def _handle_remote(self, link: EdgeLink, conn: int, frame: ClientFrame) -> None:
        """`_handle` through the cluster link: the same frames, answered when the router has."""
        match frame:
            case Publish(request=request):
                message_id, batch, slot = link.publish(conn, request)
                self._confirms.append(_PendingConfirm(frame.id, message_id, 0, batch, slot))
                if batch is not self._awaited_commit:
                    batch.add_done_callback(self._on_commit)
                    self._awaited_commit = batch
                self._flush_confirms()
            case Ack(delivery_tag=tag, multiple=multiple):
                link.ack(conn, frame.id, tag, multiple=multiple)
            case Nack(delivery_tag=tag, multiple=multiple, requeue=requeue):
                link.nack(conn, frame.id, tag, multiple=multiple, requeue=requeue)
            case Subscribe():
                self._subscribe_remote(link, conn, frame)
            case Unsubscribe(id=frame_id):
                # Answered when the router has ended it (`unsubscribed`), after the
                # deliveries it made before: as on one node, nothing follows the answer.
                key = self._key(frame_id)
                if key not in self._subscriptions and key not in self._subscribing:
                    raise NotFound(f"subscription {key!r} does not exist")
                self._unsubscribing[key] = frame_id
                link.unsubscribe(conn, key)
            case Ping(id=frame_id):
                self._push(pong_frame(frame_id))
            case Watch(id=frame_id):
                link.watch(conn, True)
                self._push(reply_frame("watching", frame_id))
            case Unwatch(id=frame_id):
                link.watch(conn, False)
                self._push(reply_frame("unwatched", frame_id))

    def _subscribe_remote(self, link: EdgeLink, conn: int, frame: Subscribe) -> None:
        subscription = self._subscription_id(frame)
        key = self._key(subscription)

        self._subscribing.add(key)

        def answered(queue: str | None, error: BrokerError | None) -> None:
            self._subscribing.discard(key)
            if error is not None or queue is None:
                self._push(error_frame(frame.id, error or Unavailable("the router did not subscribe")))
                return
            self._subscriptions[key] = subscription
            if not frame.legacy:
                self._push(subscribed_frame(frame.id, subscription, queue))

        args = [
            key,
            dumps(subscription),
            str(frame.ack),
            frame.prefetch,
            frame.queue,
            frame.exchange,
            frame.binding_key,
            frame.arguments,
        ]
        link.subscribe(conn, args, answered)

    def _subscription_id(self, frame: Subscribe) -> FrameId:
        if frame.id is None or frame.legacy:
            return self._generate_id()
        return frame.id

    def _subscribe(self, runtime: Runtime, connection_id: int, frame: Subscribe) -> None:
        subscription = self._subscription_id(frame)
        key = self._key(subscription)
        # The router hands out messages inside `subscribe`, before it returns: the
        # reply must still reach the client first (PROTOCOL.md, "WebSocket").
        mark = len(self._outbox)
        queue = runtime.subscribe(
            connection_id,
            subscription=key,
            subscription_json=dumps(subscription),
            ack_mode=frame.ack,
            prefetch=frame.prefetch,
            queue=frame.queue,
            exchange=frame.exchange,
            binding_key=frame.binding_key,
            arguments=frame.arguments,
        )
        self._subscriptions[key] = subscription
        if frame.legacy or self._closed:
            return  # the original service's clients would take a reply for a message
        reply = dumps(subscribed_frame(frame.id, subscription, queue))
        self._outbox.insert(mark, reply)
        self._buffered += text_bytes(reply)
        self._wakeup.set()

    @staticmethod
    def _key(subscription: FrameId) -> str:
        """The router's name for a subscription: a string id as is, a number as its JSON text."""
        return subscription if isinstance(subscription, str) else dumps(subscription)

    def _generate_id(self) -> str:
        while True:
            self._generated += 1
            candidate = f"sub-{self._generated}"
            if candidate not in self._subscriptions:
                return candidate

    # -- publisher confirms --------------------------------------------------

    def _on_commit(self, future: asyncio.Future[Any]) -> None:
        # A failure is read by `_flush_confirms`; the writer's own callback has retrieved it.
        self._flush_confirms()

    def _flush_confirms(self) -> None:
        """Send the confirms (or errors) of the oldest publishes whose commit is decided."""
        pending = self._confirms
        while pending and (pending[0].committed is None or pending[0].committed.done()):
            item = pending.popleft()
            failure = item.error or _commit_failure(item.committed)
            routed = item.routed
            if failure is None and item.slot >= 0:
                assert item.committed is not None
                answer = item.committed.result()[item.slot]
                if isinstance(answer, list):
                    failure = decode_error(answer)
                else:
                    routed = answer
            if failure is not None:
                self._push(error_frame(item.frame_id, failure))
            elif item.frame_id is not None:
                self._push(ConfirmFrame(type="confirm", id=item.frame_id, message_id=item.message_id, routed=routed))


def _commit_failure(committed: asyncio.Future[Any] | None) -> BrokerError | None:
    if committed is None:
        return None
    if committed.cancelled():
        return Unavailable("the message store stopped before the message was committed")
    error = committed.exception()
    if error is None:
        return None
    if isinstance(error, BrokerError):
        return error
    log.error("commit failed unexpectedly: %r", error)
    return Unavailable("the message store failed to commit the message")
