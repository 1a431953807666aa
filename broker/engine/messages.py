"""Messages, their copies in queues, and deliveries. Pure: no I/O.

A message's body is JSON text, encoded once by whoever made the message; the
engine never encodes it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .errors import BrokerError


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
    # Where the broker dead-lettered it from, (exchange, routing key), recorded by the broker
    # itself (deadletter.py) and stored with it: what a replay follows. Never taken from a
    # publish: `x-death` is a header any client may send (docs/protocol.md, "Message browser").
    origin: tuple[str, str] | None = None
    # The protocol's encoding of the fields every delivery shares, kept with the message
    # so it is made once (broker/protocol/server_frames.py); the engine never reads it.
    wire: str | None = field(default=None, compare=False, repr=False)
    # The same for STOMP 1.2 MESSAGE frames (broker/protocol/stomp_messages.py).
    stomp_wire: str | bytes | None = field(default=None, compare=False, repr=False)
    # What a delivery takes from its connection's credit (queues.py, `delivery_cost`), made
    # once; -1 until then.
    cost: int = field(default=-1, compare=False, repr=False)


def make_message(
    *,
    message_id: str,
    exchange: str,
    routing_key: str,
    body_json: str,
    headers: Mapping[str, Any],
    persistent: bool,
    published_at: str,
    origin: tuple[str, str] | None = None,
) -> Message:
    return Message(
        message_id=message_id,
        exchange=exchange,
        routing_key=routing_key,
        body_json=body_json,
        headers=headers,
        persistent=persistent,
        published_at=published_at,
        origin=origin,
    )


# A body that is bytes, not JSON, is kept as a JSON string and says how in this header:
# `text` (UTF-8) or `base64` (docs/protocol.md, "Messages across protocols").
BODY_ENCODING: Final = "body-encoding"
TEXT: Final = "text"
BASE64: Final = "base64"
EXPIRATION: Final = "expiration"  # the header of a message's own TTL, in ms (RabbitMQ's property)
_MAX_EXPIRATION_DIGITS: Final = 15


def expiration_of(headers: Mapping[str, Any]) -> int | None:
    """A message's own TTL in ms: its `expiration` header, a string of digits (as AMQP's
    property and STOMP's header) or an integer. None when it has none, or one that does not
    say a number (a publish with such a header was refused; a stored one is not judged again)."""
    value = headers.get(EXPIRATION)
    if value is None:
        return None
    if isinstance(value, str):
        return int(value) if value.isascii() and value.isdigit() and len(value) <= _MAX_EXPIRATION_DIGITS else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**_MAX_EXPIRATION_DIGITS:
        return value
    return None


def check_expiration(headers: Mapping[str, Any]) -> None:
    """Refuse a publish whose `expiration` header is not a number of milliseconds."""
    if EXPIRATION in headers and expiration_of(headers) is None:
        raise BrokerError(
            "headers: 'expiration' must be a number of milliseconds, e.g. \"60000\"",
            fields={"headers": ["expiration: must be a number of milliseconds (a string of digits)"]},
        )


@dataclass(slots=True, eq=False)
class Envelope:
    """One queue's copy of a message."""

    message: Message
    store_id: int | None  # the row that holds it; None when it lives in memory only
    redelivered: bool = False
    expires_at: float | None = None
    seq: int = 0  # its place in the queue's order, kept through redeliveries
    # Times given back unacknowledged (a nack with requeue, its consumer gone), counted while
    # it is held in this process: deliveries show it (`x-delivery-count`), and the queue's
    # `x-delivery-limit` dead-letters past it.
    returns: int = 0


@dataclass(slots=True)  # made per message: not frozen, whose __init__ costs 4x (object.__setattr__ per field); never mutated
class Delivery:
    connection: int
    subscription_json: str  # the subscription id, encoded once per subscription
    delivery_tag: int
    message: Message
    redelivered: bool
    # A transaction-ack consumer's (AckMode.TRANSACTION): its frame names the stored copy
    # (`store_id`, None when the copy lives in memory only), and waits for that copy's commit.
    transaction: bool = False
    store_id: int | None = None
    returns: int = 0  # times this copy was given back unacknowledged before (`x-delivery-count`)
    cost: int = 0  # taken from the connection's credit (queues.py, `Connection`); 0: not held back


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


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """Read up to `limit` stored copies of `queue` with a store id above `after` and below
    `below`, in id order, once every copy stored before is committed, and hand them to
    `Broker.load_window` with `epoch` (a purge or a new queue of the same name changes
    it, and a late answer is then ignored). Reads, commits and outbox drains go through
    one database thread and are answered in that order."""

    queue: str
    epoch: int
    after: int
    below: int
    limit: int


@dataclass(frozen=True, slots=True)
class BacklogRows:
    """Stored copies of `queue` left in the database when it was purged: delete those
    with a store id above `after` and below `below`."""

    queue: str
    after: int
    below: int


@dataclass(frozen=True, slots=True)
class InDoubt:
    """Copies a transaction-ack consumer held when it went away: its own transaction may
    have deleted their rows (handled) just before. The shell finds which rows are still
    stored and tells the engine (`Broker.settle_in_doubt`)."""

    queue: str
    store_ids: tuple[int, ...]


@dataclass(slots=True)
class Effects:
    """What the shell must do after an engine call, in this order:
    commit `to_persist`, send `deliveries`, notify `cancelled`,
    delete the rows `to_delete` by the next checkpoint, and delete the
    stored queue definitions `deleted_rows`. `deleted_queues` names every
    non-private queue that went away (for callers that report it).
    `to_load`: backlog rows to read, once every copy stored so far is
    committed (backlog.py); `backlog_deleted`: backlog rows to delete;
    `in_doubt`: copies whose rows the shell must look for (`Broker.settle_in_doubt`)."""

    deliveries: tuple[Delivery, ...] = ()
    to_persist: tuple[StoredCopy, ...] = ()
    to_delete: tuple[int, ...] = ()
    cancelled: tuple[Cancelled, ...] = ()
    deleted_queues: tuple[str, ...] = ()
    # Stored definitions to delete, by row: never by name, which may be declared again meanwhile.
    deleted_rows: tuple[int, ...] = ()
    to_load: tuple[LoadRequest, ...] = ()
    backlog_deleted: tuple[BacklogRows, ...] = ()
    in_doubt: tuple[InDoubt, ...] = ()


NO_EFFECTS = Effects()


class EffectsBuilder:
    """Collects effects while one engine call runs."""

    __slots__ = (
        "backlog_deleted", "cancelled", "deleted_queues", "deleted_rows", "deliveries", "in_doubt", "to_delete",
        "to_load", "to_persist",
    )

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.to_persist: list[StoredCopy] = []
        self.to_delete: list[int] = []
        self.cancelled: list[Cancelled] = []
        self.deleted_queues: list[str] = []
        self.deleted_rows: list[int] = []
        self.to_load: list[LoadRequest] = []
        self.backlog_deleted: list[BacklogRows] = []
        self.in_doubt: list[InDoubt] = []

    def build(self) -> Effects:
        if not (
            self.deliveries
            or self.to_persist
            or self.to_delete
            or self.cancelled
            or self.deleted_queues
            or self.deleted_rows
            or self.to_load
            or self.backlog_deleted
            or self.in_doubt
        ):
            return NO_EFFECTS
        return Effects(
            deliveries=tuple(self.deliveries),
            to_persist=tuple(self.to_persist),
            to_delete=tuple(self.to_delete),
            cancelled=tuple(self.cancelled),
            deleted_queues=tuple(self.deleted_queues),
            deleted_rows=tuple(self.deleted_rows),
            to_load=tuple(self.to_load),
            backlog_deleted=tuple(self.backlog_deleted),
            in_doubt=tuple(self.in_doubt),
        )


DELIVERY_COUNT: Final = "x-delivery-count"


def delivery_headers(headers: Mapping[str, Any], returns: int) -> Mapping[str, Any]:
    """A delivery's headers: the message's, and for a copy given back before, how often
    (RabbitMQ's quorum queues' `x-delivery-count`)."""
    return {**headers, DELIVERY_COUNT: returns} if returns else headers
