"""What a subscription hands out, and how a session comes back: `Subscription`,
`Delivery` and the reconnect `Backoff` (session.py drives them)."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ClientClosed
from .models import AckMode, Message, _message_fields


class SessionLike(Protocol):
    """What deliveries and subscriptions ask of their session (session.py's `Session`)."""

    @property
    def generation(self) -> int:
        """The number of the live connection: a delivery of another one is not settled."""

    async def send_settle(self, frame: dict[str, Any], generation: int) -> bool: ...

    async def unsubscribe(self, sub: Subscription) -> None: ...

    def connection_alive(self, generation: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnect attempts: `initial * factor**(attempt-1)`, capped, with jitter.

    `max_attempts=None` retries for ever; after `max_attempts` failures in a row
    pending publishes and subscriptions fail with `ConnectionFailed`."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2  # +-20%, so that many clients do not come back in step
    max_attempts: int | None = None

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return max(0.0, base * random.uniform(1 - self.jitter, 1 + self.jitter))


class Delivery(Message):
    """A message delivered to a subscription: acknowledge it with `ack()` or `nack()`.

    In `ack="auto"` mode the broker counted it acknowledged when it sent it, and
    both calls do nothing. After a reconnect they do nothing either: the broker
    requeued the message when the old connection closed."""

    __slots__ = ("delivery_tag", "subscription", "_session", "_generation", "_manual", "_settled")

    def __init__(self, frame: dict[str, Any], session: SessionLike, generation: int, manual: bool) -> None:
        super().__init__(**_message_fields(frame))
        object.__setattr__(self, "delivery_tag", int(frame.get("delivery_tag", 0)))
        object.__setattr__(self, "subscription", str(frame.get("subscription", "")))
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_generation", generation)
        object.__setattr__(self, "_manual", manual)
        object.__setattr__(self, "_settled", not manual)

    delivery_tag: int
    subscription: str
    _session: SessionLike
    _generation: int
    _manual: bool
    _settled: bool

    @property
    def settled(self) -> bool:
        """True once acknowledged or rejected (always true in auto mode). An ack or nack that
        could not be sent, because the connection the message came on is gone, leaves it false:
        the broker delivers the message again."""
        return self._settled

    async def ack(self) -> None:
        """Acknowledge: the broker forgets the message."""
        await self._settle({"type": "ack", "delivery_tag": self.delivery_tag})

    async def nack(self, *, requeue: bool = True) -> None:
        """Reject: back to the head of its queue (`redelivered: true`), or dead-lettered/dropped."""
        await self._settle({"type": "nack", "delivery_tag": self.delivery_tag, "requeue": requeue})

    async def _settle(self, frame: dict[str, Any]) -> None:
        if self._settled:
            return
        object.__setattr__(self, "_settled", True)  # a second call meanwhile sends nothing
        if not await self._session.send_settle(frame, self._generation):
            object.__setattr__(self, "_settled", False)

    def __repr__(self) -> str:
        return f"Delivery(message_id={self.message_id!r}, routing_key={self.routing_key!r}, body={self.body!r})"


@dataclass(eq=False)
class Subscription:
    """A live consumption: an async iterator of `Delivery`. End it with `await cancel()`.

    `queue` is the queue consumed; for an exchange subscription, the broker's
    private `amq.gen-...` queue, which is a new one after each reconnect."""

    id: str
    frame: dict[str, Any]
    ack: AckMode
    session: SessionLike
    queue: str = ""
    _buffer: deque[Delivery] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _active: asyncio.Event = field(default_factory=asyncio.Event)
    _first: asyncio.Future[str] | None = None
    _text: str = ""  # its subscribe frame as sent, serialized once by the session
    _sent_generation: int = 0  # the connection its subscribe was last sent on; 0 = to be sent
    _attempts: int = 0  # `unavailable` or `rate_limited` answers to its subscribe so far
    _cancelling: bool = False  # its unsubscribe is under way: not subscribed again on a reconnect
    _error: BaseException | None = None
    _ended: bool = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        delivery = await self.next()
        if delivery is None:
            raise StopAsyncIteration
        return delivery

    async def next(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery; None when the subscription has ended, or after `timeout` seconds.

        Raises the error that ended it (`SubscriptionCancelled`, `ConnectionFailed`, …)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            while self._buffer:
                delivery = self._buffer.popleft()
                if delivery._manual and not self.session.connection_alive(delivery._generation):
                    continue  # from a dead connection (even while reconnecting): the broker delivers it again
                return delivery
            if self._error is not None:
                raise self._error
            if self._ended:
                return None
            self._wake.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            try:
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that comes in the
                # same turn as a delivery, and a consumer's task would go on.
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                return None

    async def cancel(self) -> None:
        """Unsubscribe, and return once the broker has (deliveries still come until then);
        unacknowledged deliveries go back to the queue, and the buffered client-acknowledged
        ones are no longer handed out."""
        await self.session.unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cancel()

    # -- called by the session --------------------------------------------

    def _push(self, delivery: Delivery) -> None:
        self._buffer.append(delivery)
        self._wake.set()

    def _forget_unacknowledged(self) -> None:
        """Drop the buffered client-acknowledged deliveries: once unsubscribed, the broker
        has requeued them, and acknowledging them would do nothing."""
        self._buffer = deque(delivery for delivery in self._buffer if not delivery._manual)

    def _end(self, error: BaseException | None = None) -> None:
        self._ended = True
        if error is not None and self._error is None:
            self._error = error
        if self._first is not None and not self._first.done():
            self._first.set_exception(error or ClientClosed("the subscription ended"))
        self._active.set()  # nobody waits for it any longer
        self._wake.set()
