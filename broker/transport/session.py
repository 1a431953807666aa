"""One WebSocket client at /ws speaking our JSON frames (docs/protocol.md, "WebSocket").

A `Session` parses the client's frames, checks them against the connection's
permissions, and carries them out on the `Router` (this process's or the
cluster link's: the session does not know which). It is the router's
`ConnectionSink` for the connection. Every frame to the client, replies and
deliveries alike, goes through one `Outbox` (outbox.py), so reading the next
frame never waits for a send and the client sees frames in the order they were
produced. A publisher gets its answers (confirms and refusals) in publish order.

The ASGI shell (the Channels consumer in subscriptions/consumers.py) accepts
the socket, authenticates the client, and hands the connection's events to
`serve`: from then on every frame comes straight from the server to here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from broker.engine.errors import BrokerError, NotFound, RateLimited, TooLarge, Unavailable
from broker.engine.jsoncodec import dumps, holds_wide_integer, loads
from broker.protocol.client_frames import (
    Ack,
    AckMany,
    ClientFrame,
    FrameError,
    FrameId,
    Nack,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    Unwatch,
    Watch,
    parse_frame,
)
from broker.protocol.publish import FRAME_OVERHEAD
from broker.protocol.server_frames import (
    BLOCKED_FRAME,
    UNBLOCKED_FRAME,
    CancelledFrame,
    ConfirmFrame,
    UnsubscribedFrame,
    error_frame,
    pong_frame,
    subscribed_frame,
    watch_reply_frame,
)
from broker.router.interface import Publishing, Router
from broker.runtime import memory
from broker.runtime.memory import MemoryGuard

from . import census
from .authorization import Permissions, authorize_frame
from .limits import ABUSIVE, CLOSE_POLICY, FRAMES_PER_TURN, REASON_RATE, FrameBudget, close_firmly, frame_id_of
from .outbox import Outbox, Send

log = logging.getLogger("broker.ws")

# RFC 6455 close codes.
CLOSE_TOO_BIG: Final = 1009  # a frame over the size limit
CLOSE_INTERNAL_ERROR: Final = 1011  # no router, or a bug: logged, never swallowed
# While a publish is held by the memory alarm, `blocked` is sent again this often: a client
# that takes a quiet socket for dead (the browser module's heartbeat: twice 20 s, and 5 s
# after the page wakes) hears that this one lives, though its pings are not read.
BLOCKED_EVERY_SECONDS: Final = 2.0



class Session:
    def __init__(
        self,
        router: Router,
        send: Send,
        permissions: Permissions,
        *,
        max_message_bytes: int,
        max_buffered_bytes: int,
        budget: FrameBudget,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """`on_close` is called once, when the session closes, however that happens (the
        server closed the socket, or the client left): the per-user connection count."""
        self._router = router
        self._on_close = on_close
        self._send = send
        self._permissions = permissions
        self._max_bytes = max_message_bytes
        self._budget = budget
        self._outbox = Outbox(
            send,
            max_buffered_bytes,
            on_too_slow=self._too_slow,
            on_failed=self.close,
            on_written=self._written,
            budget=memory.budget(),
        )
        self._guard = memory.guard()
        self._conn: int | None = None
        self._closed = False
        # Publishes waiting for their answer, in publish order.
        self._confirms: deque[tuple[FrameId | None, Publishing]] = deque()
        self._awaited: asyncio.Future[Any] | None = None
        # The router names a subscription by a string; the client's id may be a
        # number, echoed as a number: router key -> id as the client sent it.
        self._subscriptions: dict[str, FrameId] = {}
        self._subscribing: set[str] = set()  # asked, not answered yet
        self._unsubscribing: dict[str, FrameId] = {}  # asked, not ended yet
        self._generated = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> None:
        """Connect to the router and start sending."""
        self._conn = self._router.connect(self)
        self._outbox.start(name=f"ws-sender-{self._conn}")
        census.opened(self, "json", "websocket")

    def subscription_count(self) -> int:
        return len(self._subscriptions)

    def close(self) -> None:
        """Leave the router (unacknowledged messages are requeued) and stop sending. Idempotent."""
        self._closed = True
        census.closed(self)
        self._confirms.clear()
        self._outbox.stop()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                self._router.disconnect(conn)
            except Exception:
                log.exception("router failed to close connection %d", conn)

    async def wait_closed(self) -> None:
        await self._outbox.wait_stopped()

    # -- the ConnectionSink protocol (called by the router, on this loop) ---

    def deliver(self, frames: list[str], counted: bool = False) -> None:
        if self._closed:
            return
        if counted:
            self._outbox.deliver(frames)
        else:
            self._outbox.extend(frames)

    def _written(self, batches: int) -> None:
        conn = self._conn
        if conn is not None and not self._closed:
            self._router.written(conn, batches)

    def cancelled(self, subscription: str, reason: str) -> None:
        shown = self._subscriptions.pop(subscription, subscription)
        self._push(CancelledFrame(type="cancelled", subscription=shown, reason=reason))

    def unsubscribed(self, subscription: str) -> None:
        self._subscriptions.pop(subscription, None)
        frame_id = self._unsubscribing.pop(subscription, None)
        if frame_id is not None:
            self._push(UnsubscribedFrame(type="unsubscribed", id=frame_id))

    def refused(self, frame_id: FrameId | None, error: BrokerError) -> None:
        self._push(error_frame(frame_id, error))

    def _push(self, frame: Any) -> None:
        if not self._closed:
            self._outbox.append(dumps(frame))

    def _too_slow(self) -> None:
        """Over the unsent-data bound: the outbox is closing the socket; leave the router on
        the next turn of the loop, not inside the router's call that delivered (leaving
        requeues this connection's unacknowledged messages to others)."""
        log.info("WebSocket connection %s closed: over WS_MAX_BUFFERED_BYTES unsent (slow consumer)", self._conn)
        self._closed = True
        asyncio.get_running_loop().call_soon(self.close)

    # -- receiving ---------------------------------------------------------

    async def serve(self, receive: Callable[[], Awaitable[Any]]) -> None:
        """Carry out the client's frames until it goes away."""
        frames = 0
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":  # the hot path: no dispatch
                waiting = self.receive(message.get("text"), message.get("bytes"))
                if waiting is not None:
                    await waiting
                frames += 1
                if frames == FRAMES_PER_TURN:
                    frames = 0
                    await asyncio.sleep(0)
            elif message["type"] == "websocket.disconnect":
                return

    def receive(self, text: str | None, data: bytes | None) -> Coroutine[Any, Any, None] | None:
        """One client frame, carried out before it returns. Only what must wait (a close,
        a refusal over the rate) comes back as a coroutine, for the caller to await: on
        the hot path no coroutine is made per frame."""
        if self._closed:
            return None
        limit = self._max_bytes + FRAME_OVERHEAD
        budget = self._budget
        budget.tokens -= 1.0  # the refill reads the clock only when the bucket runs dry
        if budget.tokens < 0.0:
            verdict = budget.refill()
            if verdict:
                return self._refuse_over_rate(text or "", verdict)
        if text is None:
            if data is not None and len(data) > limit:
                return self._close(CLOSE_TOO_BIG)
            self._push(error_frame(None, FrameError("binary frames are not supported: send JSON text frames")))
            return None
        # Bytes, not characters, count; `isascii` is O(1), so most frames are not re-encoded.
        if len(text) > limit // 4 and (
            len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        ) > limit:
            return self._close(CLOSE_TOO_BIG)
        try:
            decoded = loads(text)
        except ValueError as error:  # orjson's and json's decode errors are ValueErrors
            self._push(error_frame(None, FrameError(f"the frame is not JSON: {error}")))
            return None
        try:
            frame = parse_frame(decoded, max_bytes=self._max_bytes, numbers_changed=holds_wide_integer(text))
        except TooLarge:
            return self._close(CLOSE_TOO_BIG)
        except FrameError as error:
            if isinstance(decoded, dict) and decoded.get("type") == "publish":
                self._answer_in_turn(error.frame_id, Publishing("", 0, None, error=error.with_traceback(None)))
            else:
                self._push(error_frame(error.frame_id, error))
            return None
        guard = self._guard
        if guard is not None and guard.alarm and type(frame) is Publish:
            return self._carry_out_when_clear(guard, frame)
        return self._carry_out(frame)

    async def _carry_out_when_clear(self, guard: MemoryGuard, frame: ClientFrame) -> None:
        """Over the memory limit: hold the publish, and so stop reading this connection,
        until the alarm clears (docs/protocol.md, "Memory and flow control"); the client
        hears `blocked` at once and every BLOCKED_EVERY_SECONDS, then `unblocked`."""
        while guard.alarm and not self._closed:
            self._outbox.append(BLOCKED_FRAME)
            try:
                async with asyncio.timeout(BLOCKED_EVERY_SECONDS):
                    await guard.wait_clear()
            except TimeoutError:
                pass
        if not self._closed:
            self._outbox.append(UNBLOCKED_FRAME)
            waiting = self._carry_out(frame)
            if waiting is not None:
                await waiting

    def _carry_out(self, frame: ClientFrame) -> Coroutine[Any, Any, None] | None:
        try:
            if not self._permissions.everything:
                authorize_frame(self._permissions, frame)
            self._handle(frame)
        except BrokerError as error:
            if type(frame) is Publish:
                self._answer_in_turn(frame.id, Publishing("", 0, None, error=error.with_traceback(None)))
            else:
                self._push(error_frame(frame.id, error))
        except Exception:
            log.exception("WebSocket frame %r failed", type(frame).__name__)
            return self._close(CLOSE_INTERNAL_ERROR)
        return None

    def _handle(self, frame: ClientFrame) -> None:
        """Carry out one frame on the router; synchronous, so no other frame interleaves."""
        conn = self._conn
        if conn is None:
            return
        router = self._router
        match frame:
            case Publish(request=request):
                self._answer_in_turn(frame.id, router.publish(conn, request))
            case Ack(delivery_tag=tag, multiple=multiple):
                router.ack(conn, frame.id, tag, multiple=multiple)
            case AckMany(delivery_tags=tags):
                self._budget.tokens -= len(tags) - 1  # each tag counts as a frame towards the rate
                for tag in tags:
                    if self._closed:  # closed by an ack's refusal, say (its outbox over its bound)
                        break
                    router.ack(conn, frame.id, tag, multiple=False)
            case Nack(delivery_tag=tag, multiple=multiple, requeue=requeue):
                router.nack(conn, frame.id, tag, multiple=multiple, requeue=requeue)
            case Subscribe():
                self._subscribe(conn, frame)
            case Unsubscribe(id=frame_id):
                # Answered when the router has ended it (`unsubscribed`), after the
                # deliveries it made before: nothing of it follows the answer.
                key = self._key(frame_id)
                if key not in self._subscriptions and key not in self._subscribing:
                    raise NotFound(f"subscription {key} does not exist")
                self._unsubscribing[key] = frame_id
                router.unsubscribe(conn, key)
            case Ping(id=frame_id):
                self._push(pong_frame(frame_id))
            case Watch(id=frame_id):
                self._push(watch_reply_frame("watching", frame_id))
                router.watch(conn, True)
            case Unwatch(id=frame_id):
                router.watch(conn, False)
                self._push(watch_reply_frame("unwatched", frame_id))

    def _subscribe(self, conn: int, frame: Subscribe) -> None:
        subscription = self._generate_id() if frame.id is None or frame.legacy else frame.id
        key = self._key(subscription)
        self._subscribing.add(key)

        def answered(queue: str | None, error: BrokerError | None) -> None:
            # Called before any delivery of the subscription.
            self._subscribing.discard(key)
            if error is not None or queue is None:
                self._push(error_frame(frame.id, error or Unavailable("the router did not subscribe")))
                return
            self._subscriptions[key] = subscription
            if not frame.legacy:  # the original service's clients would take a reply for a message
                self._push(subscribed_frame(frame.id, subscription, queue))

        self._router.subscribe(conn, frame.request(key, dumps(subscription)), answered)

    @staticmethod
    def _key(subscription: FrameId) -> str:
        """The router's name for a subscription: its id's JSON text, so that the ids `"1"`
        and `1` name two subscriptions, as the client's frames tell them apart."""
        return dumps(subscription)

    def _generate_id(self) -> str:
        while True:
            self._generated += 1
            candidate = f"sub-{self._generated}"
            key = self._key(candidate)
            if key not in self._subscriptions and key not in self._subscribing:
                return candidate

    # -- refusals and closes ---------------------------------------------------

    async def _close(self, code: int) -> None:
        """Close from the server side: nothing queued is sent after the close frame."""
        self.close()
        await self._send({"type": "websocket.close", "code": code})

    async def _refuse_over_rate(self, text: str, verdict: int) -> None:
        """A frame over WS_MAX_FRAMES_PER_SECOND: not carried out; a flooding client is closed."""
        if verdict == ABUSIVE:
            log.info("WebSocket connection %s closed: frames at over ten times WS_MAX_FRAMES_PER_SECOND", self._conn)
            self.close()
            await close_firmly(self._send, CLOSE_POLICY, REASON_RATE)
            return
        refused = RateLimited(f"over {self._budget.rate:g} frames per second: frame not carried out")
        self._push(error_frame(frame_id_of(text), refused))

    # -- publisher confirms --------------------------------------------------

    def _answer_in_turn(self, frame_id: FrameId | None, publishing: Publishing) -> None:
        """Answer a publish once it has settled, after the connection's earlier publishes."""
        if frame_id is None and publishing.settled is None and publishing.error is None:
            return  # nothing to say: the hot path of a fire-and-forget publish
        self._confirms.append((frame_id, publishing))
        settled = publishing.settled
        if settled is not None and settled is not self._awaited:
            # Publishes that share a commit (or a batch) share its future: one callback each.
            settled.add_done_callback(self._on_settled)
            self._awaited = settled
        self._flush_confirms()

    def _on_settled(self, _: asyncio.Future[Any]) -> None:
        self._flush_confirms()

    def _flush_confirms(self) -> None:
        """Send the confirms (or errors) of the oldest publishes that have settled."""
        pending = self._confirms
        while pending and pending[0][1].done():
            frame_id, publishing = pending.popleft()
            outcome = publishing.outcome()
            if isinstance(outcome, BrokerError):
                self._push(error_frame(frame_id, outcome))
            elif frame_id is not None:
                self._push(ConfirmFrame(type="confirm", id=frame_id, message_id=publishing.message_id, routed=outcome))
