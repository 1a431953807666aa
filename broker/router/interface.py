"""The one interface in front of the router: `Router`, and what it calls back.

Two classes implement it: `LocalRouter` (local.py), over the `Runtime` in this
process, and `EdgeLink` (broker/cluster/edge.py), over the cluster link to the
router of another process. The WebSocket session, the fast HTTP path, the
HTTP API and the cluster's hub talk to a `Router` and never ask which one it
is. Every method runs on the router's event loop (`Router.loop`); Django code
in other threads goes through broker/router/calls.py.

Answers that may come later over the link come later here too, through the
connection's `ConnectionSink` or a callback, in the same order on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from broker.engine.errors import BrokerError, Unavailable
from broker.protocol.calls import RouterCall
from broker.protocol.client_frames import FrameId, SubscribeRequest
from broker.protocol.link import decode_error
from broker.protocol.publish import PublishRequest

# The answer to a subscribe, before any delivery of the new subscription:
# (its queue's name, None), or (None, the refusal).
SubscribeAnswer = Callable[[str | None, BrokerError | None], None]


class ConnectionSink(Protocol):
    """A client connection as the router sees it (the WebSocket session)."""

    def deliver(self, frames: list[str], counted: bool = False) -> None:
        """Send these frames, in order, without blocking. `counted`: they took credit (the
        deliveries of subscriptions to named queues); once such batches are written to the
        socket, the connection says how many (`Router.written`), and the router gives their
        credit back."""

    def cancelled(self, subscription: str, reason: str) -> None:
        """The router ended this subscription (its queue went away)."""

    def unsubscribed(self, subscription: str) -> None:
        """The router has ended this subscription as asked, after its last delivery."""

    def refused(self, frame_id: FrameId | None, error: BrokerError) -> None:
        """The router refused an ack or a nack (an unknown delivery tag, say)."""


class Publishing:
    """One publish on its way: its message id now, its routed count (or error) once settled.

    `settled` is None when the answer is known at once; otherwise a future shared by
    every publish of one commit (here) or of one batch (over the link), with the
    publish's answer at `slot` of the batch's list of answers (over the link)."""

    __slots__ = ("error", "message_id", "routed", "settled", "slot")

    def __init__(
        self,
        message_id: str,
        routed: int,
        settled: asyncio.Future[Any] | None,
        slot: int = -1,
        error: BrokerError | None = None,
    ) -> None:
        self.message_id = message_id
        self.routed = routed
        self.settled = settled
        self.slot = slot
        self.error = error

    def done(self) -> bool:
        return self.settled is None or self.settled.done()

    def outcome(self) -> int | BrokerError:
        """Once `done()`: the number of queues it reached, or why it was not confirmed."""
        if self.error is not None:
            return self.error
        settled = self.settled
        if settled is None:
            return self.routed
        if settled.cancelled():
            return Unavailable("the message store stopped before the message was committed")
        failure = settled.exception()
        if failure is not None:
            if isinstance(failure, BrokerError):
                return failure
            return Unavailable("the message store failed to commit the message")
        if self.slot < 0:
            return self.routed
        answer = settled.result()[self.slot]
        return decode_error(answer) if isinstance(answer, list) else int(answer)


class Router(Protocol):
    """What clients of this process can ask of the router."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop every other method must be called on."""

    @property
    def available(self) -> bool:
        """Is the router reachable now (over the link: is one followed)?"""

    @property
    def role(self) -> str:
        """What this node is: `router`, or over the link `standby` (a router candidate) or `edge`."""

    @property
    def store_reachable(self) -> bool | None:
        """Does the router's message store answer (None: not known, no router followed)?"""

    # -- client connections ------------------------------------------------

    def connect(self, sink: ConnectionSink) -> int:
        """A new connection; the router calls `sink` back for it."""

    def disconnect(self, conn: int) -> None:
        """Requeue what the connection holds unacknowledged; drop its private queues."""

    def publish(self, conn: int, request: PublishRequest) -> Publishing:
        """Route a message; its outcome settles once every durable copy is committed.
        Publishes of one connection settle in publish order."""

    def subscribe(self, conn: int, request: SubscribeRequest, answer: SubscribeAnswer) -> None:
        """Consume a queue, or an exchange through a private queue; `answer` is called
        before any delivery of the subscription."""

    def unsubscribe(self, conn: int, key: str) -> None:
        """End a subscription; `sink.unsubscribed(key)` once the router has."""

    def ack(self, conn: int, frame_id: FrameId | None, tag: int, *, multiple: bool) -> None: ...

    def nack(self, conn: int, frame_id: FrameId | None, tag: int, *, multiple: bool, requeue: bool) -> None: ...

    def watch(self, conn: int, watching: bool) -> None:
        """Start (or stop) delivering a `stats` frame to the connection every second."""

    def written(self, conn: int, batches: int) -> None:
        """The connection's next `batches` counted batches of frames (`ConnectionSink.deliver`)
        are written to its socket: its subscriptions to named queues may be sent more."""

    # -- the HTTP API and the admin ----------------------------------------

    async def publish_and_wait(self, request: PublishRequest) -> tuple[str, int]:
        """(message_id, routed) once every durable copy is committed."""

    def outbox_written(self) -> None:
        """This process committed outbox rows: wake the router's outbox reader. Any thread.
        (Over the link it does nothing: the database's notification wakes the router.)"""

    async def call(self, call: RouterCall) -> Any:
        """Carry out a call of the HTTP API (broker/protocol/calls.py); its plain result."""
