"""The WebSocket side of the client (docs/protocol.md, "WebSocket"), and reconnection.

`Session` owns one WebSocket at a time and a supervisor task that reads it.
When the connection drops it reconnects with exponential backoff, subscribes
every live subscription again (same subscription ids), and sends every
unconfirmed publish again with the same `message_id` (at-least-once: consumers
can deduplicate on it). It reports each step as an `Event`. A frame is serialized
once, at the call, so that what is sent again is what was sent first, and a frame
the broker could not read fails its call instead of the reconnect.

Delivery tags are per connection (docs/protocol.md, "The message object"): a delivery
remembers the connection generation it came on, and acknowledging it after a
reconnect does nothing: the broker has already requeued it and will deliver it
again. For the same reason, client-acknowledged deliveries still buffered from
a dead connection are dropped rather than handed out.

Over 400 lines on purpose: a connection's life (dial, read, lose, reconnect,
restore) and what rides on it (publishes waiting for confirms, subscriptions)
change the same state, in an order that matters; subscription.py holds what
the session hands out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .errors import (
    BrokerError,
    ClientClosed,
    ConnectionFailed,
    InvalidRequest,
    PublishTimeout,
    RequestTimeout,
    SubscriptionCancelled,
    TooLarge,
    Unauthorized,
)
from .models import AckMode, Event, EventKind, PublishResult
from .outbox import _invalid, _json_problem, _utf8_size
from .subscription import Backoff, Delivery, Subscription

log = logging.getLogger("pubsub_client")

# Largest frame accepted from the broker: a message of the broker's default
# MAX_MESSAGE_BYTES (1 MiB) plus its fields does not fit websockets' 1 MiB default.
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
# How long a reconnect waits for the broker to answer the resubscriptions.
RESTORE_TIMEOUT: Final = 15.0
# The close code of a connection whose credentials the broker refused after the handshake
# (docs/protocol.md, "Close codes"): not tried again.
CLOSE_UNAUTHORIZED: Final = 4401
# The close code of a connection on which the broker received a frame, or a publish, over
# its size limit.
CLOSE_TOO_BIG: Final = 1009
# Handshake refusals that end the reconnecting (README, "Authentication"): trying again
# with the same credentials will not help. Any other is tried again.
FINAL_REFUSALS: Final = frozenset({"unauthorized", "forbidden"})
# How long an unsubscribe waits for the broker's answer before it is sent again.
UNSUBSCRIBE_TIMEOUT: Final = 10.0
# The fields of a frame that carry the caller's own JSON values.
_VALUE_FIELDS: Final = ("body", "headers", "arguments")


@dataclass(eq=False, slots=True)
class _Publish:
    text: str  # the frame as sent, serialized once at the call: every re-send is the same
    size: int  # its UTF-8 bytes, as the broker counts them
    message_id: str
    future: asyncio.Future[PublishResult]
    generation: int = 0  # the connection it was last sent on; 0 = not sent on a live one
    attempts: int = 0  # `unavailable` or `rate_limited` answers so far


def _frame_text(frame: dict[str, Any]) -> str:
    """The JSON text of a frame, or `InvalidRequest` naming the field the broker could not read.

    The broker refuses a frame that is not JSON as a whole, without its id, so nothing would
    ever answer the call: NaN, infinities, integers past 64 bits and lone surrogates, which
    Python's `json` writes, are refused here instead, with the outbox's rules."""
    for field in _VALUE_FIELDS:
        if field in frame:
            problem = _json_problem(frame[field], 1)
            if problem is not None:
                raise _invalid(field, f"must be a JSON value ({problem})")
    try:
        text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:  # a field the caller gave that is not JSON at all
        raise InvalidRequest("invalid", f"the frame is not JSON: {error}") from None
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise _invalid(_surrogate_field(frame), "must not hold a lone surrogate") from None
    return text


def _surrogate_field(frame: dict[str, Any]) -> str:
    """The first field of a frame whose JSON text cannot be written in UTF-8."""
    for field, value in frame.items():
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            return str(field)
    return "frame"


class Session:
    """One logical connection to `/ws` that survives the broker going away."""

    def __init__(
        self,
        ws_url: str,
        *,
        token: str | None = None,
        backoff: Backoff | None = None,
        on_event: Callable[[Event], None] | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        self.ws_url = ws_url
        self.backoff = backoff or Backoff()
        self.generation = 0  # bumped on every new connection
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._on_event = on_event
        self._open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()  # open, resubscribed and republished
        self._closing = False
        self._closed_event = asyncio.Event()
        self._failure: BaseException | None = None  # why reconnecting stopped, until the next open
        self._failed = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._open_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._publishes: dict[str, _Publish] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._requests: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._timers: set[asyncio.TimerHandle] = set()

    # -- life cycle ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def open(self) -> None:
        """Connect unless connected (or reconnecting); raises `ConnectionFailed`, `Unauthorized`…"""
        if self._closing:
            raise ClientClosed("the client is closed")
        if isinstance(self._failure, Unauthorized):
            raise self._failure  # its token was refused: dialling again will not change that
        async with self._open_lock:
            if self._supervisor is not None and not self._supervisor.done():
                return
            ws = await self._dial()
            if self._closing:  # closed while it dialled
                await ws.close()
                raise ClientClosed("the client is closed")
            self.generation += 1
            self._ws = ws
            self._failure = None
            self._failed.clear()
            self._ready.set()
            self._emit(Event(EventKind.CONNECTED))
            self._supervisor = asyncio.create_task(self._run(ws), name="pubsub-client-ws")

    async def close(self) -> None:
        """Close the connection; waiting publishes fail with `ClientClosed`, subscriptions end."""
        if self._closing:
            return
        self._closing = True
        self._closed_event.set()
        self._ready.clear()
        for timer in self._timers:
            timer.cancel()
        self._fail_all(ClientClosed("the client was closed"), end_subscriptions_cleanly=True)
        ws, supervisor = self._ws, self._supervisor
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if supervisor is not None and supervisor is not asyncio.current_task():
            try:
                async with asyncio.timeout(5):
                    await supervisor
            except TimeoutError:
                pass  # cancelled by the timeout
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the caller's own cancel
            except Exception:
                log.debug("the connection's supervisor failed", exc_info=True)

    async def _dial(self) -> ClientConnection:
        try:
            return await connect(
                self.ws_url,
                additional_headers=self._headers,
                max_size=MAX_FRAME_BYTES,
                open_timeout=self._open_timeout,
            )
        except InvalidStatus as error:
            response = error.response
            raise _handshake_error(response.status_code, bytes(response.body or b"")) from error
        except (OSError, InvalidHandshake, TimeoutError) as error:
            raise ConnectionFailed(f"cannot open {self.ws_url}: {error}") from error

    async def _run(self, ws: ClientConnection) -> None:
        """The supervisor: read until the connection drops, then reconnect and restore."""
        restore = False
        while True:
            reader = asyncio.create_task(self._read(ws, self.generation))
            if restore:
                await self._restore(ws, reader)
            await reader
            if self._closing:
                return
            if _closed_too_big(ws):
                self._refuse_largest(self.generation)
            if ws.close_code == CLOSE_UNAUTHORIZED:
                # The broker took the handshake, then refused the credentials (its error
                # frame came first): as final as a 401 at the handshake.
                self._give_up(Unauthorized("the broker refused the credentials (close 4401)"))
                self._lost(reconnecting=False)
                return
            self._lost()
            connected = await self._reconnect()
            if connected is None:
                return
            ws, restore = connected, True

    def _refuse_largest(self, generation: int) -> None:
        """The broker closed the connection on a frame over its size limit: the largest publish
        sent on it fails with `TooLarge` instead of being sent again, and closing the next
        connection, for ever. The others are sent again as after any drop."""
        sent = [(pending.size, key) for key, pending in self._publishes.items() if pending.generation == generation]
        if not sent:
            return
        _, key = max(sent)
        pending = self._publishes.pop(key)
        if not pending.future.done():
            pending.future.set_exception(
                TooLarge("too_large", "the broker closed the connection: the message is over its size limit")
            )

    def _lost(self, *, reconnecting: bool = True) -> None:
        self._ready.clear()
        self._ws = None
        for sub in self._subscriptions.values():
            sub._active.clear()
        lost = ConnectionFailed("the connection to the broker was lost")
        for request in self._requests.values():
            if not request.done():
                request.set_exception(lost)
        self._requests.clear()
        log.info("connection to %s lost%s", self.ws_url, "; reconnecting" if reconnecting else "")
        self._emit(Event(EventKind.DISCONNECTED))

    async def _reconnect(self) -> ClientConnection | None:
        attempt = 0
        while not self._closing:
            attempt += 1
            if self.backoff.max_attempts is not None and attempt > self.backoff.max_attempts:
                self._give_up(ConnectionFailed(f"gave up reconnecting to {self.ws_url} after {attempt - 1} attempts"))
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.backoff.delay(attempt)):  # hands a cancel on (wait_for, 3.11: not always)
                    await self._closed_event.wait()
            if self._closing:
                return None
            try:
                ws = await self._dial()
            except ConnectionFailed as error:
                log.info("reconnect attempt %d failed: %s", attempt, error)
                continue
            except BrokerError as error:
                if error.code not in FINAL_REFUSALS:
                    # A proxy or a broker restarting may answer 404, 408, 429 or 5xx for a while.
                    log.info("reconnect attempt %d refused: %s", attempt, error)
                    continue
                self._give_up(error)  # unauthorized, forbidden: trying again will not help
                return None
            if self._closing:
                await ws.close()
                return None
            self.generation += 1
            self._ws = ws
            log.info("reconnected to %s after %d attempts", self.ws_url, attempt)
            self._emit(Event(EventKind.RECONNECTED, attempt=attempt))
            return ws
        return None

    async def _restore(self, ws: ClientConnection, reader: asyncio.Task[None]) -> None:
        """Subscribe again, then send unconfirmed publishes again; then the session is ready."""
        generation = self.generation
        try:
            resubscribed: int | None = None
            republished = 0
            # Subscriptions and publishes made meanwhile join the loop (`subscribe` and
            # `publish` send nothing until the session is ready); none is sent twice. It ends
            # when a look at both finds nothing unsent, with no await before `_ready` is set.
            while True:
                subs = [
                    sub
                    for sub in self._subscriptions.values()
                    if sub._sent_generation != generation and not sub._cancelling
                ]
                if resubscribed is None:
                    resubscribed = len(subs)
                if subs:
                    for sub in subs:
                        if sub._sent_generation == generation:
                            continue  # sent meanwhile by its retry after an `unavailable`
                        sub._sent_generation = generation
                        await ws.send(sub._text)
                    if not await self._answered(subs, ws, reader):
                        return
                    continue
                unsent = [p for p in self._publishes.values() if p.generation != generation]
                if not unsent:
                    break
                for pending in unsent:
                    pending.generation = generation
                    await ws.send(pending.text)
                republished += len(unsent)
            if self._ws is not ws:
                return
            self._ready.set()
            if resubscribed:
                self._emit(Event(EventKind.RESUBSCRIBED, count=resubscribed))
            if republished:
                self._emit(Event(EventKind.REPUBLISHED, count=republished))
        except ConnectionClosed:
            return  # the reader sees it too, and the supervisor starts over

    async def _answered(self, subs: list[Subscription], ws: ClientConnection, reader: asyncio.Task[None]) -> bool:
        """Wait for the broker's answers to these resubscriptions; False when the connection
        was lost meanwhile (the reader ended: the supervisor starts over at once), or they
        did not all come within RESTORE_TIMEOUT (then the connection is closed)."""
        late = {asyncio.ensure_future(sub._active.wait()) for sub in subs}
        deadline = asyncio.get_running_loop().time() + RESTORE_TIMEOUT
        try:
            while late:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                done, _ = await asyncio.wait({*late, reader}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    return False
                late -= done
        finally:
            for task in late:
                task.cancel()
        if late:
            log.warning("the broker did not answer %d resubscriptions; reconnecting", len(late))
            await ws.close()
            return False
        return True

    def _give_up(self, error: BaseException) -> None:
        log.error("%s", error)
        self._failure = error
        self._failed.set()
        self._fail_all(error, end_subscriptions_cleanly=False)
        self._emit(Event(EventKind.GAVE_UP, error=error))

    def _fail_all(self, error: BaseException, *, end_subscriptions_cleanly: bool) -> None:
        for pending in self._publishes.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._publishes.clear()
        for request in self._requests.values():
            if not request.done():
                request.set_exception(error)
        self._requests.clear()
        for sub in self._subscriptions.values():
            sub._end(None if end_subscriptions_cleanly and sub._first is None else error)
        self._subscriptions.clear()

    def _emit(self, event: Event) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("the on_event callback failed on %s", event.kind)

    # -- reading -------------------------------------------------------------

    async def _read(self, ws: ClientConnection, generation: int) -> None:
        try:
            async for text in ws:
                try:
                    frame = json.loads(text)
                except ValueError:
                    log.warning("ignoring a frame that is not JSON: %.100r", text)
                    continue
                if isinstance(frame, dict):
                    self._dispatch(frame, generation)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("reading from the broker failed; reconnecting")
            with contextlib.suppress(Exception):
                await ws.close()

    def _dispatch(self, frame: dict[str, Any], generation: int) -> None:
        kind = frame.get("type")
        frame_id = frame.get("id")
        key = None if frame_id is None else str(frame_id)
        if kind == "message":
            sub = self._subscriptions.get(str(frame.get("subscription")))
            if sub is not None:
                sub._push(Delivery(frame, self, generation, sub.ack is AckMode.CLIENT))
        elif kind == "confirm" and key is not None:
            pending = self._publishes.pop(key, None)
            if pending is not None and not pending.future.done():
                try:
                    result = PublishResult(str(frame["message_id"]), int(frame["routed"]))
                except (KeyError, TypeError, ValueError, OverflowError):
                    # The broker took it, but what it said cannot be read: not sent again.
                    pending.future.set_exception(BrokerError("error", f"a confirm the client cannot read: {frame!r:.200}"))
                else:
                    pending.future.set_result(result)
        elif kind == "subscribed" and key is not None:
            sub = self._subscriptions.get(key)
            if sub is None:
                # Cancelled while the broker was subscribing it: end it there too.
                if self._ws is not None:
                    asyncio.ensure_future(self._send_quietly(self._ws, json.dumps({"type": "unsubscribe", "id": frame_id})))
                return
            sub.queue = str(frame.get("queue", sub.queue))
            sub._attempts = 0
            sub._active.set()
            if sub._first is not None and not sub._first.done():
                sub._first.set_result(sub.queue)
        elif kind == "cancelled":
            sub = self._subscriptions.pop(str(frame.get("subscription")), None)
            if sub is not None:
                reason = str(frame.get("reason", ""))
                sub._end(SubscriptionCancelled("cancelled", f"subscription {sub.id!r} ended: {reason}"))
        elif kind == "error":
            self._dispatch_error(key, frame)
        elif key is not None and key in self._requests:  # unsubscribed, pong
            request = self._requests.pop(key)
            if not request.done():
                request.set_result(frame)

    def _dispatch_error(self, key: str | None, frame: dict[str, Any]) -> None:
        error = BrokerError.from_code(str(frame.get("code", "error")), str(frame.get("message", "")))
        if key is not None and key in self._publishes:
            pending = self._publishes[key]
            if error.retryable:
                # A cluster failing over, or over the broker's rate: the same message (same
                # message_id) again, later.
                pending.attempts += 1
                pending.generation = 0
                self._later(self.backoff.delay(pending.attempts), self._resend, key)
                return
            del self._publishes[key]
            if not pending.future.done():
                pending.future.set_exception(error)
        elif key is not None and key in self._requests:
            request = self._requests.pop(key)
            if not request.done():
                request.set_exception(error)
        elif key is not None and key in self._subscriptions and not self._subscriptions[key]._active.is_set():
            sub = self._subscriptions[key]
            if error.retryable:
                # A cluster failing over, or over the broker's rate: this subscribe again, later,
                # on the same connection (dropping it would give the other subscriptions'
                # unacknowledged messages back).
                sub._attempts += 1
                sub._sent_generation = 0
                self._later(self.backoff.delay(sub._attempts), self._resubscribe, key)
                return
            del self._subscriptions[key]
            sub._end(error)
        else:
            log.warning("the broker reported an error: %s", error)
            self._emit(Event(EventKind.ERROR, error=error))

    def _later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = asyncio.get_running_loop().call_later(delay, run)
        self._timers.add(handle)

    def _resend(self, key: str) -> None:
        pending = self._publishes.get(key)
        ws = self._ws
        if pending is None or pending.generation != 0 or ws is None or not self._ready.is_set():
            return  # confirmed, given up, or the reconnect will send it
        pending.generation = self.generation
        asyncio.ensure_future(self._send_quietly(ws, pending.text))

    def _resubscribe(self, key: str) -> None:
        sub = self._subscriptions.get(key)
        ws = self._ws
        if sub is None or sub._active.is_set() or sub._sent_generation != 0 or ws is None or sub._cancelling:
            return  # answered, cancelled, sent by a restore, or the reconnect will send it
        # Also while a restore waits for the answers on this connection: it sends no
        # subscribe marked as sent on it, so either sends it once.
        sub._sent_generation = self.generation
        asyncio.ensure_future(self._send_quietly(ws, sub._text))

    async def _send_quietly(self, ws: ClientConnection, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)

    # -- operations ------------------------------------------------------------

    async def publish(self, frame: dict[str, Any], *, timeout: float | None) -> PublishResult:
        """Send a publish frame (it carries its `message_id`) and wait for its confirm; the
        timeout counts connecting and sending too (a broker that stops reading holds a send)."""
        key = f"p{next(self._ids)}"
        frame["id"] = key
        text = _frame_text(frame)  # raises before anything is sent
        future: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        pending = _Publish(text, _utf8_size(text), str(frame.get("message_id")), future)
        try:
            async with asyncio.timeout(timeout):
                await self.open()
                self._publishes[key] = pending
                ws = self._ws
                if ws is not None and self._ready.is_set():
                    pending.generation = self.generation
                    await self._send_quietly(ws, text)
                return await asyncio.shield(future)
        except TimeoutError:
            raise PublishTimeout(f"no confirm for message {pending.message_id} within {timeout} s") from None
        finally:
            if not future.done():
                future.cancel()
            self._publishes.pop(key, None)

    async def send(self, frame: dict[str, Any], *, timeout: float | None) -> None:
        """Send a frame that expects no reply (a fire-and-forget publish) once connected;
        `ConnectionFailed` when it is not sent within `timeout` (connecting and sending)."""
        text = _frame_text(frame)
        try:
            async with asyncio.timeout(timeout):
                await self.open()
                while True:
                    await self._wait_ready(None)
                    ws = self._ws
                    if ws is None:
                        continue
                    try:
                        await ws.send(text)
                        return
                    except ConnectionClosed:
                        continue  # sent on the next connection
        except TimeoutError:
            raise ConnectionFailed(f"not sent to {self.ws_url} within {timeout} s") from None

    async def send_settle(self, frame: dict[str, Any], generation: int) -> bool:
        """An ack or nack: only on the connection its delivery came on (tags are per connection).
        False when that connection is gone (the broker gives the message back)."""
        ws = self._ws
        if ws is None or generation != self.generation:
            return False
        try:
            await ws.send(json.dumps(frame))
        except ConnectionClosed:
            return False
        return True

    async def subscribe(self, frame: dict[str, Any], ack: AckMode, *, timeout: float | None) -> Subscription:
        """The timeout counts connecting and sending too; given up, the subscription is forgotten."""
        key = f"s{next(self._ids)}"
        frame["id"] = key
        sub = Subscription(id=key, frame=frame, ack=ack, session=self, _text=_frame_text(frame))
        sub._first = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self.open()
                self._subscriptions[key] = sub
                ws = self._ws
                if ws is not None and self._ready.is_set():
                    sub._sent_generation = self.generation
                    await self._send_quietly(ws, sub._text)
                await asyncio.shield(sub._first)
        except BaseException as error:
            self._subscriptions.pop(key, None)
            if sub._first.done() and not sub._first.cancelled():
                sub._first.exception()  # retrieved: the caller gets it below
            if sub._active.is_set() and self._ws is not None and not sub._ended:
                await self._send_quietly(self._ws, json.dumps({"type": "unsubscribe", "id": key}))
            if isinstance(error, TimeoutError) and not isinstance(error, RequestTimeout):
                raise RequestTimeout(f"no answer to the subscribe within {timeout} s") from None
            raise
        sub._first = None
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """End a subscription once the broker has ended it: until then its deliveries still
        come to the caller, since an auto-ack subscription ended here first would lose what
        the broker goes on sending it. A refusal the broker may take back (`unavailable`,
        `rate_limited`) or no answer within UNSUBSCRIBE_TIMEOUT sends the unsubscribe again
        after the backoff. Client-acknowledged deliveries still buffered are then dropped:
        the broker has requeued them."""
        if sub._cancelling:
            return  # a cancel under way will end it
        if self._subscriptions.get(sub.id) is not sub:
            self._release(sub)
            return
        # Not active: no subscription on the broker's side (yet: see "subscribed" in `_dispatch`).
        subscribed = sub._active.is_set() and not sub._ended
        sub._cancelling = True
        try:
            if subscribed:
                await self._unsubscribe_until_answered(sub)
        finally:
            self._release(sub)

    async def _unsubscribe_until_answered(self, sub: Subscription) -> None:
        """Send the unsubscribe until the broker answers it, or the subscription goes anyway
        (the connection was lost, the broker cancelled it, the client was closed)."""
        loop = asyncio.get_running_loop()
        attempts = 0
        while not self._closing:
            ws = self._ws
            if ws is None or not sub._active.is_set() or sub._ended:
                return  # the broker ended it with its connection, or cancelled it
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._requests[sub.id] = future
            try:
                await self._send_quietly(ws, json.dumps({"type": "unsubscribe", "id": sub.id}))
                async with asyncio.timeout(UNSUBSCRIBE_TIMEOUT):
                    await future
                return
            except (ConnectionFailed, ClientClosed):
                return  # lost or closed: the broker's subscription ended with the connection
            except BrokerError as error:
                if not error.retryable:
                    return  # a broker that no longer knows it: it is gone
            except TimeoutError:
                pass  # no answer: asked again
            finally:
                if self._requests.get(sub.id) is future:
                    del self._requests[sub.id]
            attempts += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.backoff.delay(attempts)):
                    await self._closed_event.wait()

    def _release(self, sub: Subscription) -> None:
        """Forget a subscription the broker no longer has, and end it for its caller."""
        if self._subscriptions.get(sub.id) is sub:
            del self._subscriptions[sub.id]
        sub._forget_unacknowledged()
        sub._end()

    def connection_alive(self, generation: int) -> bool:
        """Is the connection of that number the live one? A client-acknowledged delivery of
        another is not handed out: the broker requeued it when that connection closed."""
        return not self._closing and self._ws is not None and generation == self.generation

    async def ping(self, *, timeout: float = 10.0) -> float:
        """Round trip time to the broker, in seconds; `timeout` counts connecting, sending, and
        the backoff before a ping refused `unavailable` or `rate_limited` is sent again."""
        key = f"k{next(self._ids)}"
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts = 0
        try:
            async with asyncio.timeout(timeout):
                await self.open()
                while True:
                    await self._wait_ready(None)
                    ws = self._ws
                    if ws is None:
                        raise ConnectionFailed("not connected")
                    future: asyncio.Future[dict[str, Any]] = loop.create_future()
                    self._requests[key] = future
                    started = loop.time()
                    await ws.send(json.dumps({"type": "ping", "id": key}))
                    try:
                        await future
                        break
                    except BrokerError as error:
                        if not error.retryable:
                            raise
                    attempts += 1
                    await asyncio.sleep(self.backoff.delay(attempts))
        except ConnectionClosed as error:
            raise ConnectionFailed("the connection to the broker was lost") from error
        except TimeoutError:
            raise RequestTimeout(f"no pong within {timeout} s") from None
        finally:
            self._requests.pop(key, None)
        return loop.time() - started

    async def _wait_ready(self, timeout: float | None) -> None:
        """Until connected and restored; raises when the client is closed or gave up meanwhile."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._ready, self._closed_event, self._failed)]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._closing:
            raise ClientClosed("the client is closed")
        if self._ready.is_set():
            return
        if self._failure is not None:
            raise self._failure
        raise ConnectionFailed(f"not connected to {self.ws_url} within {timeout} s")


def _closed_too_big(ws: ClientConnection) -> bool:
    """Did the broker close the connection because of a frame of ours over its size limit?
    Not when the client closed it with the same code, on a frame of the broker's too big."""
    return ws.close_code == CLOSE_TOO_BIG and ws.protocol.close_rcvd_then_sent is True


def _handshake_error(status: int, body: bytes) -> BrokerError:
    """The broker's refusal of the WebSocket handshake, with its error code when it gave one."""
    from .errors import STATUS_CODES

    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        return BrokerError.from_code(str(error.get("code", "error")), str(error.get("message", "")), status=status)
    code = STATUS_CODES.get(status, "unavailable" if status >= 500 else "error")
    return BrokerError.from_code(code, f"the WebSocket handshake was refused with HTTP {status}", status=status)
