"""WebSocket frames from the server to the client (docs/protocol.md, "Server to client").

Every frame the server sends has its shape here. Replies carry the client
frame's `id` when it had one and leave it out otherwise; `error` always has
`id`, null when none was readable. Keys come in the documented order (type,
id, ...): people compare frames by eye.

A `message` frame is the hot path: its fields shared by every delivery of a
message are encoded once, at the first delivery, and kept on the message
(`Message.wire`); each delivery adds only its subscription, tag and flag.

Pure: the engine's values and JSON codec only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

from broker.engine.errors import BrokerError
from broker.engine.jsoncodec import dumps, loads
from broker.engine.messages import Delivery, Message, delivery_headers

from .client_frames import FrameId


class SubscribedFrame(TypedDict):
    type: Literal["subscribed"]
    id: NotRequired[FrameId]
    subscription: FrameId
    queue: str


class UnsubscribedFrame(TypedDict):
    type: Literal["unsubscribed"]
    id: FrameId


class PongFrame(TypedDict):
    type: Literal["pong"]
    id: NotRequired[FrameId]


class FlowFrame(TypedDict):
    """`blocked` while the connection's publish is held by the memory alarm (at once, then
    every few seconds), `unblocked` once it is carried out."""

    type: Literal["blocked", "unblocked"]
    reason: NotRequired[Literal["memory"]]


class WatchReplyFrame(TypedDict):
    """The answer to `watch` (`watching`) and to `unwatch` (`unwatched`)."""

    type: Literal["watching", "unwatched"]
    id: NotRequired[FrameId]


class ConfirmFrame(TypedDict):
    type: Literal["confirm"]
    id: FrameId
    message_id: str
    routed: int


class ErrorFrame(TypedDict):
    type: Literal["error"]
    id: FrameId | None
    code: str
    message: str


class CancelledFrame(TypedDict):
    """The broker ended a subscription (its queue was deleted or expired)."""

    type: Literal["cancelled"]
    subscription: FrameId
    reason: str


class MessageFields(TypedDict):
    """A message's own fields, wherever it appears (docs/protocol.md, "The message object")."""

    message_id: str
    exchange: str
    routing_key: str
    body: Any
    headers: dict[str, Any]
    persistent: bool
    published_at: str


class MessageObject(MessageFields):
    """A message as an HTTP answer shows it; `redelivered` on what a poll takes."""

    redelivered: NotRequired[bool]


class MessageFrame(MessageFields):
    """A delivery. Encoded by `message_frame`, not built as a dict: this is its shape."""

    type: Literal["message"]
    subscription: FrameId
    delivery_tag: int
    redelivered: bool
    unique_id: str  # the same as message_id: what clients of the original service read
    store_id: NotRequired[int | None]  # transaction-ack subscriptions only: the stored copy's row


class StatsTotals(TypedDict):
    published: float  # per second, over the last sample
    delivered: float
    acknowledged: float
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    connections: int
    outbox_depth: int  # messages published from Django code, not yet routed
    outbox_oldest_age: float | None  # seconds the oldest of them has waited
    queues: int  # all of them; the frame lists at most 500 of each
    exchanges: int
    bindings: int


class StatsQueue(TypedDict):
    name: str
    durable: bool
    auto_delete: bool
    exclusive: bool
    arguments: dict[str, Any]
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    publish_rate: float
    deliver_rate: float
    ack_rate: float


class StatsExchange(TypedDict):
    name: str
    type: str
    durable: bool
    arguments: dict[str, Any]


class StatsBinding(TypedDict):
    exchange: str
    queue: str | None  # None: the binding is to an exchange
    destination_exchange: str | None
    binding_key: str
    arguments: dict[str, Any]


class StatsHandler(TypedDict):
    """A handler in a `runhandlers` process, as it last reported itself (docs/handlers.md)."""

    handler: str
    queue: str
    process: str  # host:pid:start
    concurrency: int
    running: int
    handled_rate: float  # per second, lately
    handled: int  # since the process started
    failed: int  # failed attempts
    retried: int
    dead_lettered: int
    already_handled: int


class StatsMemory(TypedDict):
    """The router process's memory (MEMORY_LIMIT): bytes in use, the limit, the alarm."""

    used: int
    limit: int
    alarm: bool


class StatsFrame(TypedDict):
    """Sent every second to a connection that sent `watch` (the web console)."""

    type: Literal["stats"]
    at: str
    totals: StatsTotals
    queues: list[StatsQueue]
    exchanges: list[StatsExchange]
    bindings: list[StatsBinding]
    handlers: list[StatsHandler]
    memory: StatsMemory


ServerFrame = (
    SubscribedFrame | UnsubscribedFrame | PongFrame | WatchReplyFrame | ConfirmFrame | ErrorFrame | CancelledFrame
    | MessageFrame | StatsFrame
)


def subscribed_frame(frame_id: FrameId | None, subscription: FrameId, queue: str) -> SubscribedFrame:
    if frame_id is None:
        return SubscribedFrame(type="subscribed", subscription=subscription, queue=queue)
    return SubscribedFrame(type="subscribed", id=frame_id, subscription=subscription, queue=queue)


def watch_reply_frame(kind: Literal["watching", "unwatched"], frame_id: FrameId | None) -> WatchReplyFrame:
    frame = WatchReplyFrame(type=kind)
    if frame_id is not None:
        frame["id"] = frame_id
    return frame


BLOCKED_FRAME: str = dumps(FlowFrame(type="blocked", reason="memory"))
UNBLOCKED_FRAME: str = dumps(FlowFrame(type="unblocked"))


def pong_frame(frame_id: FrameId | None) -> PongFrame:
    frame = PongFrame(type="pong")
    if frame_id is not None:
        frame["id"] = frame_id
    return frame


def error_frame(frame_id: FrameId | None, error: BrokerError) -> ErrorFrame:
    return ErrorFrame(type="error", id=frame_id, code=error.code, message=error.message)


def message_frame(delivery: Delivery) -> str:
    """The `message` frame of a delivery, as JSON text (MessageFrame's shape)."""
    message = delivery.message
    shared: str | None
    if delivery.returns:  # given back before: its own headers, with how often
        shared = _shared_fields(message, delivery_headers(message.headers, delivery.returns))
    else:
        shared = message.wire
        if shared is None:
            shared = message.wire = _shared_fields(message, message.headers)
    if delivery.transaction:
        store_id = "null" if delivery.store_id is None else str(delivery.store_id)
        shared = f'"store_id":{store_id},{shared}'
    return (
        f'{{"type":"message","subscription":{delivery.subscription_json},'
        f'"delivery_tag":{delivery.delivery_tag},"redelivered":{"true" if delivery.redelivered else "false"},'
        f"{shared}}}"
    )


def _shared_fields(message: Message, headers: Mapping[str, Any]) -> str:
    """`"message_id":...,"published_at":...`: what every delivery of the message shares.
    Messages loaded at start-up that wait in a queue cost neither the time nor the
    memory until their first delivery."""
    mid = dumps(message.message_id)
    return (
        f'"message_id":{mid},"unique_id":{mid},"exchange":{dumps(message.exchange)},'
        f'"routing_key":{dumps(message.routing_key)},"body":{message.body_json},'
        f'"headers":{dumps(dict(headers))},"persistent":{"true" if message.persistent else "false"},'
        f'"published_at":{dumps(message.published_at)}'
    )


def message_object(message: Message, *, redelivered: bool | None = None) -> MessageObject:
    """The message as an HTTP answer shows it (a poll's `get`)."""
    result = MessageObject(
        message_id=message.message_id,
        exchange=message.exchange,
        routing_key=message.routing_key,
        body=loads(message.body_json),
        headers=dict(message.headers),
        persistent=message.persistent,
        published_at=message.published_at,
    )
    if redelivered is not None:
        result["redelivered"] = redelivered
    return result
