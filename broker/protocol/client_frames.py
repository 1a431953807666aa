"""WebSocket frames from the client (docs/protocol.md, "Client to server"), parsed.

`parse_frame` takes a decoded client frame (`Any`, from the JSON decoder) and
returns a typed frame with every default applied, or raises `FrameError`
(code `invalid`, or `too_large` for a publish over the size limit) carrying the
frame's `id` when one was readable. `Any` stops here.

Pure: no Django, no I/O, no clock. Imports only the engine and
`broker.protocol.publish` (itself pure). The server's frames are in
server_frames.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.engine.errors import BrokerError, TooLarge
from broker.engine.jsoncodec import NUMBER_OUT_OF_RANGE
from broker.engine.queues import DEFAULT_PREFETCH, MAX_PREFETCH, AckMode
from broker.engine.rules import exchange_field, invalid, key_field, name_field, object_field
from broker.protocol.publish import PublishRequest, prepare_publish

# What a client may put in `id`: a JSON string or number, echoed as given.
FrameId = str | int | float


# -- client to server ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Consume `queue`, or `exchange` through a private queue bound with `binding_key`."""

    id: FrameId | None
    queue: str | None = None
    exchange: str | None = None
    binding_key: str = ""
    arguments: dict[str, Any] | None = None  # a headers exchange's binding arguments
    ack: AckMode = AckMode.AUTO
    prefetch: int = DEFAULT_PREFETCH
    # The original service's `SUBSCRIBE`: its clients get no `subscribed` reply.
    legacy: bool = False

    def request(self, key: str, subscription_json: str) -> SubscribeRequest:
        """What the router is asked, for the subscription the connection names `key`."""
        return SubscribeRequest(
            key, subscription_json, self.ack, self.prefetch, self.queue, self.exchange, self.binding_key, self.arguments
        )


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """A subscription as the router takes it: the connection's name for it (`key`), its id
    as the client's frames show it (JSON, encoded once), and what to consume how."""

    key: str
    subscription_json: str
    ack: AckMode
    prefetch: int
    queue: str | None = None
    exchange: str | None = None
    binding_key: str = ""
    arguments: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: FrameId


@dataclass(slots=True)  # made per message: not frozen, whose __init__ costs 4x (object.__setattr__ per field); never mutated
class Ack:
    id: FrameId | None
    delivery_tag: int
    multiple: bool = False


@dataclass(slots=True)
class AckMany:
    """Several deliveries at once (`delivery_tags`), each as its own ack: a consumer that
    settles messages in batches sends one frame per batch."""

    id: FrameId | None
    delivery_tags: list[int]


@dataclass(slots=True)
class Nack:
    id: FrameId | None
    delivery_tag: int
    multiple: bool = False
    requeue: bool = True


@dataclass(slots=True)
class Publish:
    id: FrameId | None
    request: PublishRequest


@dataclass(frozen=True, slots=True)
class Ping:
    id: FrameId | None


@dataclass(frozen=True, slots=True)
class Watch:
    """Receive a `stats` frame every second (the web console); an addition to docs/protocol.md."""

    id: FrameId | None


@dataclass(frozen=True, slots=True)
class Unwatch:
    id: FrameId | None


ClientFrame = Subscribe | Unsubscribe | Ack | AckMany | Nack | Publish | Ping | Watch | Unwatch


class FrameError(BrokerError):
    """A bad client frame; `frame_id` is its `id` when one could be read."""

    def __init__(
        self, message: str, *, frame_id: FrameId | None = None, fields: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(message, fields=fields)
        self.frame_id = frame_id


class FrameTooLarge(FrameError, TooLarge):
    """A publish whose body (or headers) is over MAX_MESSAGE_BYTES: the consumer closes with 1009."""


def parse_frame(data: Any, *, max_bytes: int, numbers_changed: bool = False) -> ClientFrame:
    """Check a decoded client frame and apply its defaults; `max_bytes` bounds a publish's body.
    `numbers_changed`: the decoder read an integer of the text past 64 bits as a float
    (jsoncodec.holds_wide_integer), so the frame is not what the client sent."""
    if not isinstance(data, dict):
        raise FrameError("a frame must be a JSON object")
    frame_id = _read_id(data)
    if numbers_changed:
        raise FrameError(NUMBER_OUT_OF_RANGE, frame_id=frame_id)
    try:
        return _parse(data, frame_id, max_bytes)
    except FrameError:
        raise
    except TooLarge as error:
        raise FrameTooLarge(error.message, frame_id=frame_id, fields=error.fields) from None
    except BrokerError as error:
        raise FrameError(error.message, frame_id=frame_id, fields=error.fields) from None


def _read_id(data: dict[str, Any]) -> FrameId | None:
    if "id" not in data:
        return None
    value = data["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FrameError("id: must be a string or a number", fields={"id": ["must be a string or a number"]})
    return value


def _parse(data: dict[str, Any], frame_id: FrameId | None, max_bytes: int) -> ClientFrame:
    kind = data.get("type")
    if kind is None:
        raise invalid("type", "this field is required")
    match kind:
        case "subscribe":
            return _subscribe(data, frame_id)
        case "unsubscribe":
            if frame_id is None:
                raise invalid("id", "unsubscribe names the subscription by its id: this field is required")
            return Unsubscribe(frame_id)
        case "ack":
            if "delivery_tags" in data:
                return _ack_many(data, frame_id)
            return Ack(frame_id, _delivery_tag(data), _flag(data, "multiple", False))
        case "nack":
            return Nack(frame_id, _delivery_tag(data), _flag(data, "multiple", False), _flag(data, "requeue", True))
        case "publish":
            return Publish(frame_id, prepare_publish(data, max_bytes=max_bytes))
        case "ping":
            return Ping(frame_id)
        case "watch":
            return Watch(frame_id)
        case "unwatch":
            return Unwatch(frame_id)
        case "SUBSCRIBE":
            return _legacy_subscribe(data, frame_id)
    if not isinstance(kind, str):
        raise invalid("type", "must be a string")
    raise invalid(
        "type", f"unknown frame type {kind!r}: expected subscribe, unsubscribe, ack, nack, publish, ping, watch or unwatch"
    )


def _subscribe(data: dict[str, Any], frame_id: FrameId | None) -> Subscribe:
    has_queue, has_exchange = "queue" in data, "exchange" in data
    if has_queue == has_exchange:
        problem = "give either queue or exchange, not both" if has_queue else "queue or exchange is required"
        raise BrokerError(problem, fields={"queue": [problem], "exchange": [problem]})
    ack = data.get("ack", AckMode.AUTO.value)
    if ack not in (AckMode.AUTO.value, AckMode.CLIENT.value, AckMode.TRANSACTION.value):
        raise invalid("ack", "must be 'auto', 'client' or 'transaction'")
    prefetch = data.get("prefetch", DEFAULT_PREFETCH)
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= MAX_PREFETCH:
        raise invalid("prefetch", f"must be an integer from 0 to {MAX_PREFETCH}")
    if has_queue:
        for extra in ("binding_key", "arguments"):
            if extra in data:
                raise invalid(extra, "only an exchange subscription takes this field")
        return Subscribe(frame_id, queue=name_field("queue", data["queue"]), ack=AckMode(ack), prefetch=prefetch)
    exchange = exchange_field(data["exchange"])
    binding_key = key_field("binding_key", data.get("binding_key", ""))
    arguments = data.get("arguments")
    return Subscribe(
        frame_id,
        exchange=exchange,
        binding_key=binding_key,
        arguments=None if arguments is None else object_field("arguments", arguments),
        ack=AckMode(ack),
        prefetch=prefetch,
    )


def _legacy_subscribe(data: dict[str, Any], frame_id: FrameId | None) -> Subscribe:
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise invalid("payload", "must be an object with queue_name")
    if "queue_name" not in payload:
        raise invalid("payload.queue_name", "this field is required")
    return Subscribe(frame_id, queue=name_field("payload.queue_name", payload["queue_name"]), legacy=True)


def _delivery_tag(data: dict[str, Any]) -> int:
    if "delivery_tag" not in data:
        raise invalid("delivery_tag", "this field is required")
    tag = data["delivery_tag"]
    if isinstance(tag, bool) or not isinstance(tag, int):
        raise invalid("delivery_tag", "must be an integer")
    return tag


def _ack_many(data: dict[str, Any], frame_id: FrameId | None) -> AckMany:
    if "delivery_tag" in data or "multiple" in data:
        raise invalid("delivery_tags", "an ack names its deliveries by delivery_tag (and multiple) or delivery_tags, not both")
    tags = data["delivery_tags"]
    if not isinstance(tags, list) or not tags or any(isinstance(tag, bool) or not isinstance(tag, int) for tag in tags):
        raise invalid("delivery_tags", "must be a non-empty list of integers")
    if len(tags) > MAX_PREFETCH:
        raise invalid("delivery_tags", f"at most {MAX_PREFETCH} tags in one frame")
    return AckMany(frame_id, tags)


def _flag(data: dict[str, Any], field: str, default: bool) -> bool:
    value = data.get(field, default)
    if not isinstance(value, bool):
        raise invalid(field, "must be true or false")
    return value
