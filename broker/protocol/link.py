"""The items that edges and the router send each other over the cluster link.

Each item is a `NamedTuple` whose first field names its kind: typed here, and
a plain array on the wire (msgpack turns a tuple into an array, and an array
comes back as a list; `decode_edge_item` and `decode_router_item` make the
typed item again). Many items share one channel-layer message, a batch
(broker/cluster/wire.py says how batches flow).

Pure: the standard library and the protocol's other shapes only.
"""

from __future__ import annotations

from typing import Any, Final, Literal, NamedTuple

from broker.engine import errors
from broker.engine.errors import BrokerError
from broker.engine.queues import AckMode

from .client_frames import FrameId, SubscribeRequest
from .publish import PublishRequest

# An error as it crosses: [code, message, fields].
EncodedError = list[Any]

# -- edge to router -------------------------------------------------------------


class OpenItem(NamedTuple):
    """A client connected to the edge."""

    kind: Literal["o"]
    conn: int


class CloseItem(NamedTuple):
    """It went away: the router requeues what it held."""

    kind: Literal["x"]
    conn: int


class SubscribeItem(NamedTuple):
    kind: Literal["s"]
    conn: int
    key: str
    subscription_json: str
    ack: str
    prefetch: int
    queue: str | None
    exchange: str | None
    binding_key: str
    arguments: dict[str, Any] | None

    @classmethod
    def of(cls, conn: int, request: SubscribeRequest) -> SubscribeItem:
        return cls("s", conn, request.key, request.subscription_json, str(request.ack), request.prefetch,
                   request.queue, request.exchange, request.binding_key, request.arguments)

    def request(self) -> SubscribeRequest:
        return SubscribeRequest(self.key, self.subscription_json, AckMode(self.ack), self.prefetch,
                                self.queue, self.exchange, self.binding_key, self.arguments)


class ResumeItem(NamedTuple):
    """A connection that lived on the previous router: its subscriptions, resumed silently,
    its delivery tags from `first_tag` on."""

    kind: Literal["a"]
    conn: int
    first_tag: int
    watching: bool
    subscriptions: list[SubscribeItem]


class PublishItem(NamedTuple):
    """All of a batch's publishes are answered by one PublishedItem."""

    kind: Literal["p"]
    conn: int
    exchange: str
    routing_key: str
    body_json: str
    headers: dict[str, Any]
    persistent: bool
    message_id: str

    @classmethod
    def of(cls, conn: int, request: PublishRequest, message_id: str) -> PublishItem:
        return cls("p", conn, request.exchange, request.routing_key, request.body_json, request.headers,
                   request.persistent, message_id)

    def request(self) -> PublishRequest:
        return PublishRequest(self.exchange, self.routing_key, self.body_json, self.headers, self.persistent,
                              self.message_id)


class UnsubscribeItem(NamedTuple):
    kind: Literal["u"]
    conn: int
    key: str


class AckItem(NamedTuple):
    kind: Literal["k"]
    conn: int
    frame_id: FrameId | None
    tag: int
    multiple: bool


class NackItem(NamedTuple):
    kind: Literal["n"]
    conn: int
    frame_id: FrameId | None
    tag: int
    multiple: bool
    requeue: bool


class WatchItem(NamedTuple):
    """Start (or stop) sending the connection a `stats` frame every second."""

    kind: Literal["w"]
    conn: int
    watching: bool


class WrittenItem(NamedTuple):
    """The connection's batches of frames (`FramesItem`) up to the one numbered `upto` are
    written to its socket: the router gives their deliveries' credit back. A running
    number, so a later item makes up for one lost on the way."""

    kind: Literal["g"]
    conn: int
    upto: int


class CallItem(NamedTuple):
    """A call of the HTTP API or the admin (broker/protocol/calls.py)."""

    kind: Literal["r"]
    request_id: int
    op: str
    args: list[Any]


class GiveBackItem(NamedTuple):
    """The answer to call `request_id` came after the call had given up (its timeout, its
    HTTP client gone): nobody had it, so what it took (a get with ack) goes back to its
    queue instead of being acked with the router's batch that carried it. Sent no later
    than the edge's ack of that batch, in the same batch or one before."""

    kind: Literal["b"]
    request_id: int


EdgeItem = (
    OpenItem | CloseItem | SubscribeItem | ResumeItem | PublishItem | UnsubscribeItem | AckItem | NackItem | WatchItem
    | WrittenItem | CallItem | GiveBackItem
)

# -- router to edge -------------------------------------------------------------


class FramesItem(NamedTuple):
    """Frames for the client, in order. `batch`: 0, or the number of a batch that took the
    connection's credit, per connection from 1 (its `WrittenItem` gives it back)."""

    kind: Literal["d"]
    conn: int
    frames: list[str]
    batch: int


class CancelledItem(NamedTuple):
    """The router ended a subscription (its queue went away)."""

    kind: Literal["c"]
    conn: int
    key: str
    reason: str


class LastTagItem(NamedTuple):
    """The highest delivery tag handed out to the connection so far."""

    kind: Literal["t"]
    conn: int
    tag: int


class SubscribedItem(NamedTuple):
    """The answer to a subscribe, before its deliveries: the queue, or an error."""

    kind: Literal["S"]
    conn: int
    queue: str | None
    error: EncodedError | None


class UnsubscribedItem(NamedTuple):
    """The answer to an unsubscribe, after its last delivery."""

    kind: Literal["U"]
    conn: int
    key: str


class RefusedItem(NamedTuple):
    """An ack or nack the router refused (an unknown delivery tag, say)."""

    kind: Literal["f"]
    conn: int
    frame_id: FrameId | None
    error: EncodedError


class PublishedItem(NamedTuple):
    """Per publish of the edge's batch `seq`, in order: its routed count, or an error."""

    kind: Literal["P"]
    seq: int
    results: list[int | EncodedError]


class AnswerItem(NamedTuple):
    """The answer to a call: its result, or an error."""

    kind: Literal["R"]
    request_id: int
    ok: bool
    value: Any


class ResetItem(NamedTuple):
    """The router dropped the edge's batches of this generation: resume every connection
    (once, whatever the number of resets for it)."""

    kind: Literal["reset"]
    generation: int


RouterItem = FramesItem | CancelledItem | LastTagItem | SubscribedItem | UnsubscribedItem | RefusedItem | PublishedItem | AnswerItem | ResetItem

_EDGE_ITEMS: Final[dict[str, Any]] = {
    "o": OpenItem, "x": CloseItem, "s": SubscribeItem, "a": ResumeItem, "p": PublishItem,
    "u": UnsubscribeItem, "k": AckItem, "n": NackItem, "w": WatchItem, "g": WrittenItem, "r": CallItem,
    "b": GiveBackItem,
}
_ROUTER_ITEMS: Final[dict[str, Any]] = {
    "d": FramesItem, "c": CancelledItem, "t": LastTagItem, "S": SubscribedItem, "U": UnsubscribedItem,
    "f": RefusedItem, "P": PublishedItem, "R": AnswerItem, "reset": ResetItem,
}


def decode_edge_item(raw: list[Any] | tuple[Any, ...]) -> EdgeItem:
    """The typed item of an array from an edge; ValueError for one this router does not know."""
    item: EdgeItem = _decode(_EDGE_ITEMS, raw)
    if isinstance(item, ResumeItem):
        return item._replace(subscriptions=[_decode({"s": SubscribeItem}, args) for args in item.subscriptions])
    return item


def decode_router_item(raw: list[Any] | tuple[Any, ...]) -> RouterItem:
    """The typed item of an array from the router; ValueError for one this edge does not know."""
    item: RouterItem = _decode(_ROUTER_ITEMS, raw)
    return item


def _decode(types: dict[str, Any], raw: list[Any] | tuple[Any, ...]) -> Any:
    # Whatever came over the link (a node of another release, a bug): a ValueError, not a
    # TypeError that the reader of a batch would not expect.
    if not isinstance(raw, list | tuple) or not raw or not isinstance(raw[0], str):
        raise ValueError(f"not a link item: {type(raw).__name__}")
    cls = types.get(raw[0])
    if cls is None:
        raise ValueError(f"unknown link item {raw[:1]!r}")
    try:
        return cls._make(raw)
    except TypeError as error:
        raise ValueError(f"link item {raw[0]!r}: {error}") from None


# -- errors ---------------------------------------------------------------------


def _classes_by_code() -> dict[str, type[BrokerError]]:
    """Every error class of engine/errors.py by its code, so that one added there keeps its
    code (and HTTP status) over the link."""
    found: dict[str, type[BrokerError]] = {BrokerError.code: BrokerError}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, BrokerError):
            found.setdefault(value.code, value)
    return found


_ERRORS: Final = _classes_by_code()


def encode_error(error: BrokerError) -> EncodedError:
    return [error.code, error.message, error.fields]


def decode_error(data: EncodedError) -> BrokerError:
    code, message, fields = data
    return _ERRORS.get(code, BrokerError)(message, fields=fields)
