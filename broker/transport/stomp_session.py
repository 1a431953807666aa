"""One STOMP client (docs/protocol.md, "STOMP"): over a WebSocket whose subprotocol is
`v12.stomp`, `v11.stomp` or `v10.stomp`, or over TCP (STOMP_PORT).

A `StompSession` parses the client's frames, checks them against the connection's
permissions and carries them out on the `Router`, as the JSON session
(session.py) does; it is the router's `ConnectionSink` for the connection and
turns its deliveries into MESSAGE frames (broker/protocol/stomp_messages.py).
Every frame to the client leaves through one `Outbox`, in order.

What needs an answer (a SEND with `receipt`, or any SEND whose publish fails; a
SUBSCRIBE, UNSUBSCRIBE or DISCONNECT with `receipt`...) is answered in frame
order: a persistent SEND's RECEIPT comes once its copies are committed, as our
confirms do. Any error is an ERROR frame (`message`, our stable `code`, the
`receipt-id` of the frame that caused it), after which the connection closes,
as the STOMP spec says.

What the project decides (who the client is, declaring a queue) is handed in
by the shell: subscriptions/stomp.py for a WebSocket, stomp_tcp.py for TCP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from broker.engine.errors import (
    BrokerError,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    RateLimited,
    TooLarge,
    Unavailable,
)
from broker.engine.jsoncodec import dumps, loads
from broker.engine.messages import Delivery, delivery_headers
from broker.engine.names import DEFAULT_EXCHANGE
from broker.engine.queues import DEFAULT_PREFETCH, MAX_PREFETCH, AckMode
from broker.protocol.calls import ExchangesMissingCall
from broker.protocol.client_frames import FrameId, SubscribeRequest
from broker.protocol.publish import FRAME_OVERHEAD, PublishRequest
from broker.protocol.stomp_connect import SPOKEN, connected_frame, negotiate_heartbeats, negotiate_version
from broker.protocol.stomp_destinations import TOPIC_EXCHANGE, Destination, Kind, parse_destination
from broker.protocol.stomp_frames import (
    StompFrame,
    StompFrameError,
    StompFrameTooLarge,
    StompParser,
    encode_frame,
    escape_header,
)
from broker.protocol.stomp_messages import (
    QueueProperties,
    boolean_header,
    decode_delivery,
    delivered_frame,
    durable_subscription_queue,
    is_durable_subscription,
    message_head,
    message_rest,
    queue_properties,
    send_request,
    with_head,
)
from broker.router.interface import Router
from broker.runtime import memory
from broker.runtime.timeouts import within

from . import census
from .authorization import Permissions
from .limits import ABUSIVE, FRAMES_PER_TURN, FrameBudget
from .outbox import Outbox, Send
from .stomp_answers import Answer, Answers
from .stomp_subscriptions import Subscriptions
from .stomp_transactions import Transactions

log = logging.getLogger("broker.stomp")

# The client is gone when nothing came from it for this many of its intervals.
HEARTBEAT_TOLERANCE: Final = 2.0
# The server's EOL goes once it has sent nothing for this share of the interval: its timer's
# lateness then never takes the gap past the interval.
HEARTBEAT_AHEAD: Final = 0.9
CLOSE_NORMAL: Final = 1000
# The frame id of the acks a cumulative ACK implies (a NUL: no receipt can hold one).
IMPLIED: Final = "\x00implied"
# Destinations parsed and kept per connection, at most (past it the cache starts again).
MAX_KNOWN_DESTINATIONS: Final = 256
ACK_MODES: Final = {"auto": AckMode.AUTO, "client": AckMode.CLIENT, "client-individual": AckMode.CLIENT}
HEARTBEAT: Final = "\n"
# How long the last frames (an ERROR, a DISCONNECT's RECEIPT) may take to leave before the close.
CLOSING_GRACE: Final = 5.0
# A connection must send CONNECT within this many seconds (as RabbitMQ's STOMP plugin asks).
CONNECT_TIMEOUT: Final = 10.0

Authenticate = Callable[[str, str], Awaitable[Permissions]]
DefaultPermissions = Callable[[], Awaitable[Permissions]]
# Declare a queue unless it exists, and bind it to (exchange, binding key) when one is given.
DeclareQueue = Callable[[str, QueueProperties, Permissions, tuple[str, str] | None], Awaitable[None]]
# Delete a durable subscription's queue (configure on it); one already gone is no error.
DeleteQueue = Callable[[str, Permissions], Awaitable[None]]


class StompError(BrokerError):
    """A frame the STOMP rules refuse (a missing header, an unknown command)."""


class TooManyConnections(BrokerError):
    """MAX_CONNECTIONS_PER_USER reached (a WebSocket's close reason of the same name)."""

    code = "too_many_connections"


class StompSession:
    def __init__(
        self,
        router: Router,
        send: Send,
        *,
        authenticate: Authenticate,
        default_permissions: DefaultPermissions,
        declare_queue: DeclareQueue,
        delete_queue: DeleteQueue | None = None,
        max_message_bytes: int,
        max_buffered_bytes: int,
        budget: FrameBudget,
        on_connected: Callable[[Permissions], bool] | None = None,
        on_close: Callable[[], None] | None = None,
        heartbeat_ms: int = 10_000,
        transport: str = "websocket",
    ) -> None:
        """`on_connected` is asked once the client is known (False: it holds too many
        connections); `on_close` is called once, however the session ends. `transport`:
        `websocket` or `tcp`, as the metrics count it."""
        self._router = router
        self._transport = transport
        self._send = send
        self._authenticate = authenticate
        self._default_permissions = default_permissions
        self._declare_queue = declare_queue
        self._delete_queue = delete_queue
        self._max_bytes = max_message_bytes
        self._budget = budget
        self._on_connected = on_connected
        self._on_close = on_close
        self._heartbeat_ms = heartbeat_ms
        self._parser = StompParser(max_frame_bytes=max_message_bytes + FRAME_OVERHEAD, stop_after_connect=True)
        self._outbox = Outbox(
            send,
            max_buffered_bytes,
            on_too_slow=self._too_slow,
            on_failed=self.close,
            on_written=self._written,
            budget=memory.budget(),
        )
        self._guard = memory.guard()
        self._version = "1.2"
        self._permissions: Permissions | None = None
        self._conn: int | None = None
        self._closed = False
        self._ending = False
        # No more frames are carried out (after a DISCONNECT, or a refused frame whose ERROR
        # waits for the answers of the frames before it).
        self._last_frame = False
        # Frames being waited for (the memory alarm to clear, a commit, the router's answer):
        # nothing is read from the client meanwhile, so its heart-beats are not expected.
        self._paused = 0
        self._waiting: set[asyncio.Future[str]] = set()  # subscribes the router has not answered yet
        self._connect_timer: asyncio.TimerHandle | None = None
        self._answers = Answers(receipt=self._send_receipt, failed=self._error, close=self._end)
        self._subscriptions = Subscriptions()
        self._unsubscribing: dict[str, asyncio.Future[None]] = {}
        self._transactions = Transactions(max_bytes=max_buffered_bytes)
        self._declared: set[str] = set()
        self._durable: dict[str, str] = {}  # a durable subscription's id -> its queue
        self._destinations: dict[str, Destination] = {}
        # /temp-queue/NAME's NAME -> (its subscription, its private queue's name)
        self._temp_queues: dict[str, tuple[str, str]] = {}
        self._pushed_at = time.monotonic()  # the last frame queued: the outgoing heart-beats' clock
        self._received_at = time.monotonic()  # the last bytes read: the incoming heart-beats' clock
        self._timers: list[asyncio.Task[None]] = []
        # The task reading the client's chunks (`_read`), while it waits for one: ended with
        # the session (`_stop_reading`), since a client that neither reads nor closes would
        # keep it waiting. The read is awaited in that task itself: a task of its own per
        # chunk cost a third of a consumer's throughput.
        self._reader: asyncio.Task[None] | None = None
        self._read_stopped = False

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> None:
        """Start sending; the router is joined at CONNECT, which must come within CONNECT_TIMEOUT."""
        self._outbox.start(name="stomp-sender")
        self._connect_timer = asyncio.get_running_loop().call_later(CONNECT_TIMEOUT, self._connect_timed_out)
        census.opened(self, "stomp", self._transport)

    def subscription_count(self) -> int:
        return len(self._subscriptions)

    def _connect_timed_out(self) -> None:
        self._connect_timer = None
        if self._conn is None and not self._stopping():
            log.info("STOMP connection closed: no CONNECT within %g s", CONNECT_TIMEOUT)
            self._error(StompError(f"no CONNECT frame within {CONNECT_TIMEOUT:g} seconds"), None)

    def close(self) -> None:
        """Leave the router (unacknowledged messages are requeued) and stop. Idempotent."""
        self._closed = True
        census.closed(self)
        self._answers.clear()
        self._outbox.stop()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
        self._leave_router()
        self._stop_reading()

    async def wait_closed(self) -> None:
        await self._outbox.wait_stopped()

    def _leave_router(self) -> None:
        """Leave the router; what waits for its answer ends now (over the cluster link no
        answer comes for a connection that has gone)."""
        for waiter in list(self._waiting):
            if not waiter.done():
                waiter.set_exception(Unavailable("the connection is closing"))
        for unsubscribing in self._unsubscribing.values():
            if not unsubscribing.done():
                unsubscribing.set_result(None)  # the router ends every subscription with the connection
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                self._router.disconnect(conn)
            except Exception:
                log.exception("router failed to close connection %d", conn)

    def _stopping(self) -> bool:
        return self._closed or self._ending or self._last_frame

    def _end(self) -> None:
        """Take no more frames; close once what is queued has left (an ERROR, a RECEIPT)."""
        if self._ending or self._closed:
            return
        self._ending = True
        self._leave_router()
        self._outbox.finish(CLOSE_NORMAL)
        self._stop_reading()

    def _stop_reading(self) -> None:
        """End a read waiting for the client: `serve` returns, and its transport closes the
        connection (within CLOSING_GRACE), whether or not the client reads, sends or closes."""
        reader = self._reader
        if reader is not None and not self._read_stopped:
            self._read_stopped = True
            reader.cancel()

    # -- the ConnectionSink protocol (called by the router, on this loop) ---

    def deliver(self, frames: list[str], counted: bool = False) -> None:
        """Frames made by `encode_delivery` (this process's router), or our JSON `message`
        frames (over the cluster link), turned into MESSAGE frames here."""
        if self._closed or self._ending:
            return
        out: list[str | bytes] = []
        version = self._version
        for frame in frames:
            if type(frame) is not str or not frame.startswith("{"):
                out.append(frame)
                continue
            delivered = decode_delivery(frame)
            if delivered is None:
                continue  # a stats frame: STOMP clients do not watch
            subscription_id = str(delivered["subscription"])
            self._subscriptions.delivered(self._subscriptions.get(subscription_id), delivered["delivery_tag"])
            out.append(delivered_frame(delivered, subscription=subscription_id, version=version))
        if out:
            self._pushed_at = time.monotonic()
        if counted:
            self._outbox.deliver(out)  # reported written when it is, an empty batch too
        elif out:
            self._outbox.extend(out)

    def _written(self, batches: int) -> None:
        conn = self._conn
        if conn is not None and not self._closed:
            self._router.written(conn, batches)

    def encode_delivery(self, delivery: Delivery) -> str | bytes:
        """The MESSAGE frame of a delivery, made by this process's router as it delivers
        (broker/runtime/runtime.py): no JSON frame made and read back, and what every
        delivery of the message shares made once (for STOMP 1.2)."""
        subscriptions = self._subscriptions
        subscription = subscriptions.by_json(delivery.subscription_json)
        subscriptions.delivered(subscription, delivery.delivery_tag)
        message, version = delivery.message, self._version
        # Shared by every delivery of the message, but for one given back before (its own
        # headers, with how often).
        shared = version == "1.2" and not delivery.returns
        rest = message.stomp_wire if shared else None
        if rest is None:
            rest = message_rest(
                exchange=message.exchange,
                routing_key=message.routing_key,
                message_id=message.message_id,
                persistent=message.persistent,
                headers=delivery_headers(message.headers, delivery.returns),
                body_json=message.body_json,
                version=version,
            )
            if shared:
                message.stomp_wire = rest
        shown = subscription.id if subscription is not None else str(loads(delivery.subscription_json))
        return with_head(message_head(shown, delivery.delivery_tag, delivery.redelivered, version), rest)

    def cancelled(self, subscription: str, reason: str) -> None:
        self._subscriptions.remove(subscription)
        self._error(NotFound(f"subscription {subscription!r} ended: {reason}"), None, subscription=subscription)

    def unsubscribed(self, subscription: str) -> None:
        self._subscriptions.remove(subscription)
        waiter = self._unsubscribing.pop(subscription, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def refused(self, frame_id: FrameId | None, error: BrokerError) -> None:
        if frame_id == IMPLIED:
            log.debug("STOMP connection %s: an implied ack was refused: %s", self._conn, error.message)
            return
        self._refuse(error, frame_id if isinstance(frame_id, str) else None)

    def _too_slow(self) -> None:
        log.info("STOMP connection %s closed: over WS_MAX_BUFFERED_BYTES unsent (slow consumer)", self._conn)
        self._closed = True
        asyncio.get_running_loop().call_soon(self.close)

    # -- frames to the client ------------------------------------------------

    def _push(self, frame: str | bytes) -> None:
        """Queue a frame; nothing more once the session is ending (after its ERROR or the
        DISCONNECT's RECEIPT)."""
        if not (self._closed or self._ending):
            self._pushed_at = time.monotonic()
            self._outbox.append(frame)

    def _frame(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        """A frame of the server's own; its body is text (UTF-8), so it leaves as a text frame."""
        self._push(encode_frame(command, headers, body, version=self._version).decode())

    def _send_receipt(self, receipt: str) -> None:
        self._push(f"RECEIPT\nreceipt-id:{escape_header(receipt, self._version)}\n\n\x00")

    def _refuse(self, error: BrokerError, receipt: str | None) -> None:
        """A refused frame: its ERROR (then the close) after the answers of the frames before
        it, and no frame after it carried out."""
        if self._stopping():
            return
        self._last_frame = True
        self._answers.add(Answer(receipt, error=error))

    def _error(self, error: BrokerError, receipt: str | None, **extra: str) -> None:
        """An ERROR frame, then the close (STOMP: the server closes after an ERROR)."""
        if self._ending or self._closed:
            return
        headers = {"message": error.message, "code": error.code, **extra}
        if receipt is not None:
            headers["receipt-id"] = receipt
        headers["content-type"] = "text/plain"
        self._frame("ERROR", headers, error.message.encode())
        self._end()

    # -- receiving -----------------------------------------------------------

    async def serve(self, next_chunk: Callable[[], Awaitable[bytes | None]]) -> None:
        """Carry out the client's frames until it goes away or the session ends."""
        try:
            await self._read(next_chunk)
        finally:
            if (self._ending or self._last_frame) and not self._closed:
                # An ERROR or a DISCONNECT's RECEIPT is on its way: let it leave first.
                try:
                    await within(self._outbox.wait_stopped(), CLOSING_GRACE)
                except TimeoutError:
                    log.info("STOMP connection %s: its last frames did not leave in time", self._conn)

    async def _read(self, next_chunk: Callable[[], Awaitable[bytes | None]]) -> None:
        connecting = True  # until the CONNECT frame has been carried out
        while not self._stopping():
            chunk = await self._next_chunk(next_chunk)
            if chunk is None:
                return
            self._received_at = time.monotonic()
            if not await self._feed(chunk):
                return
            if connecting and self._conn is not None:
                # The parser stopped after the CONNECT: the frames sent with it are read now,
                # with the version it chose.
                connecting = False
                if not await self._feed(b""):
                    return

    async def _next_chunk(self, next_chunk: Callable[[], Awaitable[bytes | None]]) -> bytes | None:
        """The client's next chunk; None once it has gone, or once the session ends meanwhile."""
        self._reader = asyncio.current_task()
        try:
            return await next_chunk()
        except asyncio.CancelledError:
            reader = self._reader
            if self._read_stopped and reader is not None and reader.uncancel() == 0:
                return None  # `_stop_reading`'s cancel, and no other
            raise
        finally:
            self._reader = None

    async def _feed(self, data: bytes) -> bool:
        """Carry out the frames `data` completes; False once the session stops taking frames.
        A malformed frame is answered after the frames read before it are carried out, and
        its ERROR comes after their RECEIPTs."""
        try:
            frames = self._parser.feed(data)
        except StompFrameError as error:
            refused: BrokerError = TooLarge(error.message) if isinstance(error, StompFrameTooLarge) else error
            if not await self._carry_out_all(error.before):
                return False  # one of them ended the session: its own answer stands
            if self._conn is not None:
                self._refuse(refused, None)
            else:
                self._error(refused, None)
            return False
        return await self._carry_out_all(frames)

    async def _carry_out_all(self, frames: list[StompFrame]) -> bool:
        """Carry out `frames` in order; False once the session stops taking frames."""
        for number, frame in enumerate(frames, 1):
            if self._stopping():
                return False
            waiting = self.receive(frame)
            if waiting is not None:
                await self._not_reading(waiting)
            if number % FRAMES_PER_TURN == 0:  # let timers and other connections run
                await asyncio.sleep(0)
        return True

    async def _not_reading(self, waiting: Awaitable[None]) -> None:
        """Await what a frame waits for; the client's silence meanwhile is not its own."""
        self._paused += 1
        try:
            await waiting
        finally:
            self._paused -= 1
            self._received_at = time.monotonic()  # what the client sent meanwhile is read from now on

    def receive(self, frame: StompFrame) -> Coroutine[Any, Any, None] | None:
        """One client frame, carried out before it returns; what must wait comes back as a
        coroutine for the caller to await, so frames are carried out in order."""
        budget = self._budget
        budget.tokens -= 1.0
        if budget.tokens < 0.0:
            verdict = budget.refill()
            if verdict:
                refused = RateLimited(f"over {budget.rate:g} frames per second: frame not carried out")
                self._refuse(refused, frame.headers.get("receipt"))
                if verdict == ABUSIVE:
                    log.info("STOMP connection %s closed: frames at over ten times the rate", self._conn)
                return None
        receipt = frame.headers.get("receipt")
        try:
            if self._conn is None:
                if frame.command in ("CONNECT", "STOMP"):
                    return self._guarded(self._connect(frame), receipt)
                raise StompError(f"expected CONNECT or STOMP first, not {frame.command}")
            transaction = frame.headers.get("transaction")
            if transaction is not None and frame.command in ("SEND", "ACK", "NACK"):
                return self._hold(transaction, frame)
            return self._carry_out(frame, receipt)
        except BrokerError as error:
            self._refuse(error, receipt)
        except Exception:
            log.exception("STOMP frame %s failed", frame.command)
            self._refuse(Unavailable("the broker failed to carry out the frame"), receipt)
        return None

    async def _guarded(self, work: Coroutine[Any, Any, None], receipt: str | None) -> None:
        try:
            await work
        except BrokerError as error:
            self._refuse(error, receipt)
        except Exception:
            log.exception("a STOMP frame failed")
            self._refuse(Unavailable("the broker failed to carry out the frame"), receipt)

    def _carry_out(
        self, frame: StompFrame, receipt: str | None, *, quiet: bool = False
    ) -> Coroutine[Any, Any, None] | None:
        """`quiet`: no RECEIPT for it; `receipt` only names its error (a COMMIT's, for the
        frames it carries out)."""
        match frame.command:
            case "SEND":
                return self._send_frame(frame, receipt, quiet)
            case "ACK":
                self._settle(frame, receipt, ack=True)
            case "NACK":
                self._settle(frame, receipt, ack=False)
            case "SUBSCRIBE":
                return self._subscribe(frame, receipt)
            case "UNSUBSCRIBE":
                return self._unsubscribe(frame, receipt)
            case "BEGIN":
                self._transactions.begin(_required(frame, "transaction"))
            case "COMMIT":
                frames = self._transactions.end(_required(frame, "transaction"))
                return self._guarded(self._commit(frames, receipt), receipt)
            case "ABORT":
                self._transactions.end(_required(frame, "transaction"))
            case "DISCONNECT":
                self._last_frame = True  # nothing after it is carried out
                self._answers.add(Answer(receipt, None, then_close=True))
                return None
            case "CONNECT" | "STOMP":
                raise StompError("the client is connected already")
            case _:
                raise StompError(f"unknown command {frame.command!r}")
        if receipt is not None and not quiet:
            self._answers.add(Answer(receipt))
        return None

    # -- connecting ----------------------------------------------------------

    async def _connect(self, frame: StompFrame) -> None:
        headers = frame.headers
        version = negotiate_version(headers.get("accept-version"))
        if version is None:
            self._error(StompError(f"no common STOMP version: the server speaks {SPOKEN}"), None, version=SPOKEN)
            return
        self._version = self._parser.version = version
        send_every, expect_every = negotiate_heartbeats(headers.get("heart-beat", "0,0"), self._heartbeat_ms)
        login, passcode = headers.get("login"), headers.get("passcode")
        if login is not None and login != "" or passcode:
            permissions = await self._authenticate(login or "", passcode or "")
        else:
            permissions = await self._default_permissions()
        if self._closed or self._ending:
            return  # gone, or ended meanwhile (no CONNECT in time): nothing taken, no router joined
        if self._on_connected is not None and not self._on_connected(permissions):
            self._error(TooManyConnections(f"{permissions.who} holds too many connections (MAX_CONNECTIONS_PER_USER)"),
                        None)
            return
        self._permissions = permissions
        self._conn = self._router.connect(self)
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self._push(connected_frame(version, send_every, expect_every, self._conn))
        if send_every:
            self._timers.append(asyncio.ensure_future(self._send_heartbeats(send_every / 1000)))
        if expect_every:
            self._timers.append(asyncio.ensure_future(self._expect_heartbeats(expect_every / 1000)))

    async def _send_heartbeats(self, every: float) -> None:
        """An EOL once nothing else was queued for HEARTBEAT_AHEAD of `every`, so that the
        gap between two frames never passes `every` (stomp.py gives up after 1.5 times it)."""
        due = every * HEARTBEAT_AHEAD
        while True:
            quiet = time.monotonic() - self._pushed_at
            if quiet >= due:
                self._push(HEARTBEAT)
                quiet = 0.0
            await asyncio.sleep(due - quiet)

    async def _expect_heartbeats(self, every: float) -> None:
        """Closed once nothing came for HEARTBEAT_TOLERANCE times `every` (not while the
        broker itself does not read, over its memory limit)."""
        limit = every * HEARTBEAT_TOLERANCE
        while True:
            silent = time.monotonic() - self._received_at
            if silent >= limit and not self._paused:
                log.info("STOMP connection %s closed: no heart-beat from the client", self._conn)
                self._error(Unavailable("no heart-beat from the client within the negotiated interval"), None)
                return
            await asyncio.sleep(limit if self._paused else limit - silent)

    # -- publishing ------------------------------------------------------------

    def _send_destination(self, frame: StompFrame) -> Destination:
        destination = self._destination(_required(frame, "destination"))
        if destination.kind is Kind.TEMP_QUEUE:
            raise StompError("a /temp-queue/ destination is for reply-to and SUBSCRIBE, not SEND")
        return destination

    def _send_frame(self, frame: StompFrame, receipt: str | None, quiet: bool) -> Coroutine[Any, Any, None] | None:
        destination = self._send_destination(frame)
        reply_to = frame.headers.get("reply-to")
        needs_queue = destination.kind is Kind.QUEUE and destination.name not in self._declared
        needs_temp = reply_to is not None and reply_to.startswith("/temp-queue/")
        guard = self._guard
        if needs_queue or needs_temp or guard is not None and guard.alarm:
            return self._guarded(self._send_prepared(frame, destination, receipt, quiet), receipt)
        self._publish(send_request(frame.headers, frame.body, destination, max_bytes=self._max_bytes), receipt, quiet)
        return None

    def _destination(self, value: str) -> Destination:
        """A destination, parsed once per connection (a publisher names the same few)."""
        known = self._destinations.get(value)
        if known is None:
            known = parse_destination(value)
            if len(self._destinations) >= MAX_KNOWN_DESTINATIONS:
                self._destinations.clear()
            self._destinations[value] = known
        return known

    async def _send_prepared(
        self, frame: StompFrame, destination: Destination, receipt: str | None, quiet: bool
    ) -> None:
        request = await self._prepared(frame, destination)
        await self._when_memory_allows()
        if not (self._closed or self._ending):
            self._publish(request, receipt, quiet)

    async def _prepared(self, frame: StompFrame, destination: Destination) -> PublishRequest:
        """A SEND's publish, once what it names is made: a /queue/ destination's queue, a
        /temp-queue/ reply-to's private queue."""
        headers = frame.headers
        # Checked before any queue is made: a refused SEND changes nothing.
        request = send_request(headers, frame.body, destination, max_bytes=self._max_bytes)
        self._may_write(request.exchange)
        reply_to = headers.get("reply-to")
        temp = parse_destination(reply_to) if reply_to is not None and reply_to.startswith("/temp-queue/") else None
        if temp is not None:
            self._may_make_temp_queue()
        if destination.kind is Kind.QUEUE:
            await self._ensure_queue(destination.name, headers)
        if temp is not None:
            queue = await self._temp_queue(temp.name, f"/temp-queue/{temp.name}")
            headers = {**headers, "reply-to": f"/reply-queue/{queue}"}
            request = send_request(headers, frame.body, destination, max_bytes=self._max_bytes)
        return request

    async def _when_memory_allows(self) -> None:
        """Over the memory limit, hold the frame, and so stop reading this connection
        (docs/protocol.md, "Memory and flow control"); its heart-beats are not expected
        meanwhile, since nothing is read."""
        guard = self._guard
        if guard is None or not guard.alarm:
            return
        await self._not_reading(guard.wait_clear())

    def _may_make_temp_queue(self) -> None:
        """A /temp-queue/ is a private queue reached through the default exchange by its
        name: what a JSON subscription to that exchange makes, with the right it needs, read
        on `amq.default` (broker/transport/authorization.py)."""
        permissions = self._permissions
        assert permissions is not None
        if not permissions.everything:
            permissions.require("read", "exchange", DEFAULT_EXCHANGE)

    def _may_write(self, exchange: str) -> None:
        permissions = self._permissions
        assert permissions is not None
        if not permissions.everything:
            permissions.require("write", "exchange", exchange)

    def _publish(self, request: PublishRequest, receipt: str | None, quiet: bool = False) -> None:
        assert self._conn is not None
        self._may_write(request.exchange)
        publishing = self._router.publish(self._conn, request)
        if (receipt is None or quiet) and publishing.settled is None and publishing.error is None:
            return  # nothing to say: a fire-and-forget SEND
        self._answers.add(Answer(receipt, publishing, quiet=quiet))

    async def _ensure_queue(self, name: str, headers: dict[str, str]) -> None:
        """Declare a /queue/ destination's queue unless it exists (once per connection)."""
        if name in self._declared:
            return
        permissions = self._permissions
        assert permissions is not None
        await self._declare_queue(name, queue_properties(headers), permissions, None)
        self._declared.add(name)

    async def _temp_queue(self, name: str, subscription: str) -> str:
        """The private queue of /temp-queue/NAME, made (and consumed as `subscription`) when
        first named; its generated name."""
        known = self._temp_queues.get(name)
        if known is not None:
            return known[1]
        queue = await self._consume(
            SubscribeRequest(subscription, dumps(subscription), AckMode.AUTO, 0, exchange=DEFAULT_EXCHANGE),
            cumulative=False,
        )
        self._temp_queues[name] = (subscription, queue)
        return queue

    async def _commit(self, frames: list[StompFrame], receipt: str | None) -> None:
        """A transaction's frames, all or none as far as can be told beforehand (docs/protocol.md,
        "STOMP: frames"): each was checked when held; now what only now can be told is checked
        (their exchanges exist, their ACKs and NACKs name deliveries not settled yet), the
        queues their SENDs name are declared, and then they are carried out, in order, with
        nothing awaited in between. The COMMIT's receipt comes after their answers (a
        persistent SEND's: its copies committed); an error of one of them carries it."""
        sends = [(held, self._send_destination(held)) for held in frames if held.command == "SEND"]
        exchanges = sorted({destination.publish_exchange for _, destination in sends} - {DEFAULT_EXCHANGE})
        if exchanges:
            missing = await self._router.call(ExchangesMissingCall(exchanges))
            if missing:
                raise NotFound(f"exchange {missing[0]!r} does not exist")
        settles = [held for held in frames if held.command != "SEND"]
        if settles:
            unknown = self._subscriptions.first_unknown([self._settle_tag(held)[0] for held in settles])
            if unknown is not None:
                raise PreconditionFailed(f"unknown delivery tag {unknown}")
        requests: dict[int, PublishRequest] = {}
        for held, destination in sends:
            requests[id(held)] = await self._prepared(held, destination)
            if self._stopping():
                return
        await self._when_memory_allows()
        if self._stopping():
            return
        for held in frames:
            request = requests.get(id(held))
            if request is not None:
                self._publish(request, receipt, quiet=True)
            else:
                self._settle(held, receipt, ack=held.command == "ACK")
        if receipt is not None:
            self._answers.add(Answer(receipt))

    def _hold(self, transaction: str, frame: StompFrame) -> Coroutine[Any, Any, None] | None:
        """A transaction's frame, kept until its COMMIT (stomp_transactions.py); held back, as
        a SEND is, while the process is over its memory limit. Checked first as it would be
        carried out (its destination, its headers, the right to write, its delivery tag): a
        refused one is answered now, as outside a transaction. Its receipt says it is held
        (as RabbitMQ's does for an ACK): a client gets every receipt it asked for, after an
        ABORT too; the COMMIT's says the frames are carried out. Configure on a `/queue/`
        queue is not checked here: whether declaring it needs the right depends on the queue
        existing when the COMMIT declares it."""
        if frame.command == "SEND":
            destination = self._send_destination(frame)
            request = send_request(frame.headers, frame.body, destination, max_bytes=self._max_bytes)
            self._may_write(request.exchange)
            reply_to = frame.headers.get("reply-to")
            if reply_to is not None and reply_to.startswith("/temp-queue/"):
                parse_destination(reply_to)
                self._may_make_temp_queue()
            if destination.kind is Kind.QUEUE and destination.name not in self._declared:
                queue_properties(frame.headers)  # its queue's headers, as the declare reads them
        else:
            self._settle_tag(frame)
        self._transactions.hold(transaction, frame)
        receipt = frame.headers.get("receipt")
        guard = self._guard
        if guard is not None and guard.alarm:
            return self._guarded(self._held_when_memory_allows(receipt), receipt)
        if receipt is not None:
            self._answers.add(Answer(receipt))
        return None

    async def _held_when_memory_allows(self, receipt: str | None) -> None:
        await self._when_memory_allows()
        if receipt is not None and not (self._closed or self._ending):
            self._answers.add(Answer(receipt))

    # -- consuming -------------------------------------------------------------

    def _subscribe(self, frame: StompFrame, receipt: str | None) -> Coroutine[Any, Any, None]:
        headers = frame.headers
        destination = self._destination(_required(frame, "destination"))
        subscription = headers.get("id")
        if subscription is None:
            if self._version != "1.0":
                raise StompError("SUBSCRIBE needs an id header")
            if destination.kind in (Kind.EXCHANGE, Kind.TOPIC) and is_durable_subscription(headers):
                # Its queue is named after the id; 1.0's stand-in, the destination, cannot name one.
                raise StompError("a durable subscription needs an id header")
            subscription = headers["destination"]
        mode = headers.get("ack", "auto")
        ack = ACK_MODES.get(mode)
        if ack is None:
            raise StompError(f"ack: {mode!r} is not auto, client or client-individual")
        prefetch = _prefetch(headers.get("prefetch-count"))
        if subscription in self._subscriptions and subscription not in self._unsubscribing:
            raise Conflict(f"subscription {subscription!r} exists already")
        return self._guarded(self._subscribe_to(destination, subscription, ack, mode == "client", prefetch, headers,
                                                receipt), receipt)

    async def _subscribe_to(
        self,
        destination: Destination,
        subscription: str,
        ack: AckMode,
        cumulative: bool,
        prefetch: int,
        headers: dict[str, str],
        receipt: str | None,
    ) -> None:
        unsubscribing = self._unsubscribing.get(subscription)
        if unsubscribing is not None:
            # Its id, unsubscribed just before (over a cluster link the router answers later):
            # the old subscription ends first, as the frames came.
            await asyncio.shield(unsubscribing)
        permissions = self._permissions
        assert permissions is not None
        key = subscription
        request: SubscribeRequest
        match destination.kind:
            case Kind.EXCHANGE | Kind.TOPIC:
                exchange = destination.name if destination.kind is Kind.EXCHANGE else TOPIC_EXCHANGE
                if exchange == DEFAULT_EXCHANGE:  # `/exchange/amq.default/KEY`: it takes no bindings
                    raise Forbidden("the default exchange takes no bindings: subscribe to /queue/NAME to consume from it")
                if not permissions.everything:
                    permissions.require("read", "exchange", exchange)
                durable = durable_subscription_queue(headers, subscription)
                if durable is None:
                    request = SubscribeRequest(key, dumps(subscription), ack, prefetch, exchange=exchange,
                                               binding_key=destination.key)
                else:
                    # A durable subscription: a queue of its own that outlives the connection.
                    properties = queue_properties({**headers, "durable": "true"})
                    if not permissions.everything:  # before the queue is made: a refusal changes nothing
                        permissions.require("read", "queue", durable)
                    await self._declare_queue(durable, properties, permissions, (exchange, destination.key))
                    request = SubscribeRequest(key, dumps(subscription), ack, prefetch, queue=durable)
                    self._durable[key] = durable
            case Kind.QUEUE | Kind.AMQ_QUEUE | Kind.REPLY_QUEUE:
                if not permissions.everything:  # before the queue is made: a refusal changes nothing
                    permissions.require("read", "queue", destination.name)
                if destination.kind is Kind.QUEUE:
                    await self._ensure_queue(destination.name, headers)
                request = SubscribeRequest(key, dumps(subscription), ack, prefetch, queue=destination.name)
            case Kind.TEMP_QUEUE:
                if destination.name in self._temp_queues:
                    raise Conflict(f"/temp-queue/{destination.name} exists already on this connection")
                self._may_make_temp_queue()
                request = SubscribeRequest(key, dumps(subscription), ack, prefetch, exchange=DEFAULT_EXCHANGE)
                queue = await self._consume(request, cumulative=cumulative, receipt=receipt)
                self._temp_queues[destination.name] = (key, queue)
                return
        await self._consume(request, cumulative=cumulative, receipt=receipt)

    async def _consume(self, request: SubscribeRequest, *, cumulative: bool, receipt: str | None = None) -> str:
        """Subscribe on the router; the queue's name once it has answered. The RECEIPT is
        queued as the router answers, before the subscription's first delivery."""
        if self._conn is None:
            raise Unavailable("the connection is closing")
        if request.key in self._subscriptions or request.key in self._unsubscribing:
            raise Conflict(f"subscription {request.key!r} exists already")
        answered: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._subscriptions.add(request.key, request.subscription_json, cumulative=cumulative,
                                manual=request.ack is not AckMode.AUTO)

        def answer(queue: str | None, error: BrokerError | None) -> None:
            if answered.done():
                return
            if error is not None or queue is None:
                self._subscriptions.remove(request.key)
                answered.set_exception(error or Unavailable("the router did not subscribe"))
            else:
                answered.set_result(queue)
                if receipt is not None:
                    self._answers.add(Answer(receipt))

        self._waiting.add(answered)
        try:
            self._router.subscribe(self._conn, request, answer)
            return await answered
        finally:
            self._waiting.discard(answered)

    def _unsubscribe(self, frame: StompFrame, receipt: str | None) -> Coroutine[Any, Any, None] | None:
        """End a subscription; one with `durable: true` (not `auto-delete`) also deletes its
        durable subscription's queue, as RabbitMQ does."""
        key = frame.headers.get("id")
        if key is None:
            if self._version != "1.0":
                raise StompError("UNSUBSCRIBE needs an id header")
            key = _required(frame, "destination")
        if key not in self._subscriptions or key in self._unsubscribing:  # (ending already)
            raise NotFound(f"subscription {key!r} does not exist")
        assert self._conn is not None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unsubscribing[key] = waiter
        for name, (temp_key, _) in list(self._temp_queues.items()):
            if temp_key == key:
                del self._temp_queues[name]
        self._router.unsubscribe(self._conn, key)
        self._subscriptions.ending(key)  # its unacknowledged messages are requeued
        queue = self._durable.pop(key, None)
        if queue is not None and durable_subscription_queue(frame.headers, key) is not None:
            return self._guarded(self._delete_durable(queue, waiter, receipt), receipt)
        if receipt is not None:
            self._answers.add(Answer(receipt, waiter))
        return None

    async def _delete_durable(self, queue: str, unsubscribed: asyncio.Future[None], receipt: str | None) -> None:
        await unsubscribed
        permissions = self._permissions
        if self._delete_queue is None or permissions is None:
            raise Unavailable("durable subscriptions cannot be deleted here")
        await self._delete_queue(queue, permissions)
        if receipt is not None:
            self._answers.add(Answer(receipt))

    def _settle(self, frame: StompFrame, receipt: str | None, *, ack: bool) -> None:
        """ACK or NACK: by `id` (1.2) or `message-id` (1.0, 1.1), the delivery tag our
        MESSAGE frames carry in both; under `client` every earlier delivery of its
        subscription is settled with it. `receipt` names a refusal's ERROR (a COMMIT's,
        for a frame the COMMIT carries out)."""
        tag, requeue = self._settle_tag(frame)
        router, conn = self._router, self._conn
        assert conn is not None
        for each in self._subscriptions.to_settle(tag):
            # The earlier deliveries a `client` ACK settles too were never named by the client:
            # one the router no longer knows (its router failed over, and it was requeued) is
            # not the client's mistake.
            frame_id = receipt if each == tag else IMPLIED
            if ack:
                router.ack(conn, frame_id, each, multiple=False)
            else:
                router.nack(conn, frame_id, each, multiple=False, requeue=requeue)


    def _settle_tag(self, frame: StompFrame) -> tuple[int, bool]:
        """An ACK's or NACK's (delivery tag, requeue), as its headers give them."""
        name = "id" if self._version == "1.2" else "message-id"
        value = frame.headers.get(name) or frame.headers.get("id") or frame.headers.get("message-id")
        if value is None:
            raise StompError(f"{frame.command} needs an {name} header")
        if not (value.isascii() and value.isdigit()):  # int() takes "١" and " 1 " too
            raise NotFound(f"{name} {value!r} names no delivery of this connection")
        requeue_header = frame.headers.get("requeue")
        return int(value), requeue_header is None or boolean_header("requeue", requeue_header)


def asgi_chunks(receive: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[bytes | None]]:
    """A WebSocket's messages as the session reads them: bytes, None once it has closed."""

    async def next_chunk() -> bytes | None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    return bytes(text, "utf-8")
                data = message.get("bytes")
                if data is not None:
                    return bytes(data)
            elif kind == "websocket.disconnect":
                return None

    return next_chunk


def _required(frame: StompFrame, name: str) -> str:
    value = frame.headers.get(name)
    if value is None:
        raise StompError(f"{frame.command} needs a {name} header")
    return value


def _prefetch(value: str | None) -> int:
    if value is None:
        return DEFAULT_PREFETCH
    if not (value.isascii() and value.isdigit() and len(value) <= 5) or int(value) > MAX_PREFETCH:
        raise StompError(f"prefetch-count: must be an integer from 0 to {MAX_PREFETCH}")
    return int(value)

