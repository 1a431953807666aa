"""The broker's objects as the client returns them: frozen dataclasses built from JSON.

Field names are docs/protocol.md's (`routing_key` on messages, `binding_key` on
bindings, `delivery_tag`, `prefetch`). Parsing is lenient about extra keys so
an older client keeps working against a newer broker.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# The default exchange: `""` in messages and frames, `amq.default` in URLs and lists.
DEFAULT_EXCHANGE_URL_NAME = "amq.default"


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    bindings: tuple[Binding, ...] | None = None  # only on `Client.exchange(name)`

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Exchange:
        bindings = data.get("bindings")
        return cls(
            name=data["name"],
            type=data["type"],
            durable=bool(data.get("durable", True)),
            auto_delete=bool(data.get("auto_delete", False)),
            arguments=dict(data.get("arguments") or {}),
            bindings=None if bindings is None else tuple(Binding.from_json(b) for b in bindings),
        )


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue with its live counts at the time of the request."""

    name: str
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    messages: int = 0
    messages_ready: int = 0
    messages_unacknowledged: int = 0
    consumers: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Queue:
        return cls(
            name=data["name"],
            durable=bool(data.get("durable", True)),
            auto_delete=bool(data.get("auto_delete", False)),
            exclusive=bool(data.get("exclusive", False)),
            arguments=dict(data.get("arguments") or {}),
            messages=int(data.get("messages", 0)),
            messages_ready=int(data.get("messages_ready", 0)),
            messages_unacknowledged=int(data.get("messages_unacknowledged", 0)),
            consumers=int(data.get("consumers", 0)),
        )


@dataclass(frozen=True, slots=True)
class Binding:
    """A binding from `exchange` to a queue, or to another exchange (`destination_exchange`,
    then `queue` is None)."""

    id: int
    exchange: str
    queue: str | None
    binding_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    destination_exchange: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Binding:
        return cls(
            id=int(data["id"]),
            exchange=data["exchange"],
            queue=data.get("queue"),
            destination_exchange=data.get("destination_exchange"),
            binding_key=data.get("binding_key", ""),
            arguments=dict(data.get("arguments") or {}),
        )


@dataclass(frozen=True, slots=True)
class PublishResult:
    """A confirmed publish: the message's id, and how many queues it reached."""

    message_id: str
    routed: int


@dataclass(frozen=True, slots=True)
class Message:
    """A message as the broker shows it (docs/protocol.md, "The message object")."""

    message_id: str
    exchange: str
    routing_key: str
    body: Any
    headers: dict[str, Any] = field(default_factory=dict)
    persistent: bool = True
    published_at: str = ""
    redelivered: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(**_message_fields(data))

    def to_json(self) -> dict[str, Any]:
        """The message's fields as a JSON object (what `pubsub consume` prints)."""
        return {
            "message_id": self.message_id,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "body": self.body,
            "headers": self.headers,
            "persistent": self.persistent,
            "published_at": self.published_at,
            "redelivered": self.redelivered,
        }


def _message_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "message_id": str(data.get("message_id") or data.get("unique_id") or ""),
        "exchange": data.get("exchange", ""),
        "routing_key": data.get("routing_key", ""),
        "body": data.get("body"),
        "headers": dict(data.get("headers") or {}),
        "persistent": bool(data.get("persistent", True)),
        "published_at": data.get("published_at", ""),
        "redelivered": bool(data.get("redelivered", False)),
    }


class AckMode(enum.StrEnum):
    AUTO = "auto"  # the broker counts a message acknowledged once sent
    CLIENT = "client"  # the consumer acknowledges each message (`Delivery.ack`)


class EventKind(enum.StrEnum):
    CONNECTED = "connected"  # the first WebSocket connection is open
    DISCONNECTED = "disconnected"  # the WebSocket dropped; reconnecting
    RECONNECTED = "reconnected"  # open again (attempt = attempts it took)
    RESUBSCRIBED = "resubscribed"  # count = live subscriptions made again
    REPUBLISHED = "republished"  # count = unconfirmed publishes sent again
    GAVE_UP = "gave_up"  # reconnect attempts exhausted: pending work failed
    ERROR = "error"  # an error frame no request waits for (a fire-and-forget publish)


@dataclass(frozen=True, slots=True)
class Event:
    """What happened to the connection; passed to `Client(on_event=...)`."""

    kind: EventKind
    attempt: int = 0
    count: int = 0
    error: BaseException | None = None
