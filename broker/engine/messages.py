"""Messages, their copies in queues, and deliveries.

A message is encoded to JSON once, at its first delivery: every later delivery
of every copy reuses that text (DESIGN.md, "Performance model"). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .jsoncodec import dumps, loads


@dataclass(slots=True)
class Message:
    """A published message; treat it as immutable (it is shared by every queue's copy)."""

    message_id: str
    exchange: str
    routing_key: str
    body_json: str  # the body, already encoded
    headers: Mapping[str, Any]
    persistent: bool
    published_at: str
    _fragment: str | None = field(default=None, compare=False, repr=False)

    @property
    def fragment(self) -> str:
        """The fields every delivery shares, encoded once, at the first delivery:
        `"message_id":...,"published_at":...`. Messages loaded at start-up that wait
        in a queue cost neither the time nor the memory until then."""
        if self._fragment is None:
            mid = dumps(self.message_id)
            self._fragment = (
                f'"message_id":{mid},"unique_id":{mid},"exchange":{dumps(self.exchange)},'
                f'"routing_key":{dumps(self.routing_key)},"body":{self.body_json},'
                f'"headers":{dumps(dict(self.headers))},"persistent":{"true" if self.persistent else "false"},'
                f'"published_at":{dumps(self.published_at)}'
            )
        return self._fragment

    def to_dict(self, *, redelivered: bool | None = None) -> dict[str, Any]:
        """The wire object (PROTOCOL.md, "Every message"), for HTTP answers."""
        result: dict[str, Any] = {
            "message_id": self.message_id,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "body": loads(self.body_json),
            "headers": dict(self.headers),
            "persistent": self.persistent,
            "published_at": self.published_at,
        }
        if redelivered is not None:
            result["redelivered"] = redelivered
        return result


def make_message(
    *,
    message_id: str,
    exchange: str,
    routing_key: str,
    body_json: str,
    headers: Mapping[str, Any],
    persistent: bool,
    published_at: str,
) -> Message:
    return Message(
        message_id=message_id,
        exchange=exchange,
        routing_key=routing_key,
        body_json=body_json,
        headers=headers,
        persistent=persistent,
        published_at=published_at,
    )


@dataclass(slots=True, eq=False)
class Envelope:
    """One queue's copy of a message."""

    message: Message
    store_id: int | None  # the row that holds it; None when it lives in memory only
    redelivered: bool = False
    expires_at: float | None = None
    seq: int = 0  # its place in the queue's order, kept through redeliveries


@dataclass(slots=True)  # made per message: not frozen, whose __init__ costs 4x (object.__setattr__ per field); never mutated
class Delivery:
    connection: int
    subscription_json: str  # the subscription id, encoded once per subscription
    delivery_tag: int
    message: Message
    redelivered: bool

    def frame(self) -> str:
        """The WebSocket `message` frame (PROTOCOL.md, "Server to client")."""
        return (
            f'{{"type":"message","subscription":{self.subscription_json},'
            f'"delivery_tag":{self.delivery_tag},"redelivered":{"true" if self.redelivered else "false"},'
            f"{self.message.fragment}}}"
        )


@dataclass(slots=True)
class StoredCopy:
    """A row to commit before the publisher is answered."""

    store_id: int
    queue: str
    message: Message


@dataclass(frozen=True, slots=True)
class Cancelled:
    """A subscription the broker ended (its queue was deleted)."""

    connection: int
    subscription: str
    reason: str


@dataclass(slots=True)
class Effects:
    """What the shell must do after an engine call, in this order:
    commit `to_persist`, send `deliveries`, notify `cancelled`,
    delete the rows `to_delete` by the next checkpoint, and delete the
    stored queue definitions `deleted_rows`. `deleted_queues` names every
    non-private queue that went away (for callers that report it)."""

    deliveries: tuple[Delivery, ...] = ()
    to_persist: tuple[StoredCopy, ...] = ()
    to_delete: tuple[int, ...] = ()
    cancelled: tuple[Cancelled, ...] = ()
    deleted_queues: tuple[str, ...] = ()
    # Stored definitions to delete, by row: never by name, which may be declared again meanwhile.
    deleted_rows: tuple[int, ...] = ()


NO_EFFECTS = Effects()


class EffectsBuilder:
    """Collects effects while one engine call runs."""

    __slots__ = ("deliveries", "to_persist", "to_delete", "cancelled", "deleted_queues", "deleted_rows")

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.to_persist: list[StoredCopy] = []
        self.to_delete: list[int] = []
        self.cancelled: list[Cancelled] = []
        self.deleted_queues: list[str] = []
        self.deleted_rows: list[int] = []

    def build(self) -> Effects:
        if not (
            self.deliveries
            or self.to_persist
            or self.to_delete
            or self.cancelled
            or self.deleted_queues
            or self.deleted_rows
        ):
            return NO_EFFECTS
        return Effects(
            deliveries=tuple(self.deliveries),
            to_persist=tuple(self.to_persist),
            to_delete=tuple(self.to_delete),
            cancelled=tuple(self.cancelled),
            deleted_queues=tuple(self.deleted_queues),
            deleted_rows=tuple(self.deleted_rows),
        )
