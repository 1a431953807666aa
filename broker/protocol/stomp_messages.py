"""Messages between STOMP frames and the broker's (docs/protocol.md, "STOMP: messages").

A SEND becomes a `PublishRequest`; a delivery (our `message` frame, as the router
hands it to every connection) becomes a MESSAGE frame. The mapping:

- Body: a SEND whose body is JSON (no `content-type`, or a JSON one) is kept as
  that JSON value, so JSON subscribers and HTTP `get` see it as JSON. Any other
  body is kept as it was sent: UTF-8 text as a JSON string, other bytes as a
  base64 string, with the header `body-encoding` (`text` or `base64`) saying
  so; a MESSAGE frame gives the bytes back. A JSON publisher may set
  `body-encoding` too (to send a STOMP client bytes).
- `content-type` is kept as a message header (except `application/json`, which
  a JSON body is anyway), and a JSON body without one is delivered to STOMP
  clients as `application/json`.
- Every other SEND header is a message header (a string), except the frame's
  own (`destination`, `receipt`, `transaction`, `content-length`) and what the
  broker reads: `persistent` (true makes the message persistent), `message-id`
  or `amqp-message-id` (the message id), and the queue properties of a
  `/queue/` destination (`durable`, `auto-delete`, `exclusive`, and the `x-`
  queue arguments). Headers that are not strings (from JSON publishers) are
  shown to STOMP clients as their JSON text.

Pure: the engine's codec and rules, and the publish checks.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from broker.engine.errors import BrokerError, TooLarge
from broker.engine.jsoncodec import dumps, loads, utf8_size
from broker.engine.messages import BASE64, BODY_ENCODING, TEXT, check_expiration
from broker.engine.rules import check_name, invalid
from broker.protocol.publish import MAX_MESSAGE_ID, PublishRequest

from .stomp_destinations import Destination, Kind, destination_of
from .stomp_frames import escape_header as _escape_header

JSON_TYPE: Final = "application/json"

# Queue properties a SEND or SUBSCRIBE to /queue/NAME may give (RabbitMQ's header names).
QUEUE_FLAGS: Final = ("durable", "auto-delete", "exclusive")
QUEUE_INT_ARGUMENTS: Final = (
    "x-message-ttl", "x-max-length", "x-expires", "x-delivery-limit", "x-max-priority", "x-max-length-bytes",
)
QUEUE_STR_ARGUMENTS: Final = ("x-overflow", "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-queue-type")
QUEUE_BOOL_ARGUMENTS: Final = ("x-single-active-consumer",)
# SEND headers the broker reads or that belong to the frame: never message headers; and the
# queue properties of a SEND to /queue/NAME (to another destination they are message headers).
_NOT_KEPT: Final = frozenset(
    ("destination", "receipt", "transaction", "content-length", "persistent", "message-id", "amqp-message-id")
)
_NOT_KEPT_FOR_QUEUE: Final = _NOT_KEPT | frozenset(
    (*QUEUE_FLAGS, *QUEUE_INT_ARGUMENTS, *QUEUE_STR_ARGUMENTS, *QUEUE_BOOL_ARGUMENTS)
)
# A MESSAGE frame's own headers: a message header of the same name is not repeated.
_FRAME_OWN: Final = frozenset(
    ("subscription", "destination", "message-id", "ack", "redelivered", "persistent", "amqp-message-id",
     "content-type", "content-length", BODY_ENCODING)
)


@dataclass(frozen=True, slots=True)
class QueueProperties:
    """How a /queue/ destination is declared when missing; `given`: did the frame say any?"""

    durable: bool
    auto_delete: bool
    exclusive: bool
    arguments: dict[str, Any]
    given: bool


def queue_properties(headers: dict[str, str]) -> QueueProperties:
    """The queue properties of a SEND's or SUBSCRIBE's headers (RabbitMQ's defaults: durable,
    not auto-delete, not exclusive)."""
    given = False
    flags: dict[str, bool] = {}
    for name, default in (("durable", True), ("auto-delete", False), ("exclusive", False)):
        value = headers.get(name)
        if value is None:
            flags[name] = default
        else:
            given = True
            flags[name] = boolean_header(name, value)
    arguments: dict[str, Any] = {}
    for name in QUEUE_INT_ARGUMENTS:
        value = headers.get(name)
        if value is not None:
            if not (value.isascii() and value.isdigit() and len(value) <= 15):
                raise invalid(name, "must be a non-negative integer")
            arguments[name] = int(value)
    for name in QUEUE_STR_ARGUMENTS:
        value = headers.get(name)
        if value is not None:
            arguments[name] = value
    for name in QUEUE_BOOL_ARGUMENTS:
        value = headers.get(name)
        if value is not None:
            arguments[name] = boolean_header(name, value)
    return QueueProperties(flags["durable"], flags["auto-delete"], flags["exclusive"], arguments, given or bool(arguments))


def is_durable_subscription(headers: dict[str, str]) -> bool:
    """Does a SUBSCRIBE to an exchange or a topic ask for a durable subscription (RabbitMQ's:
    `durable` or `persistent` true, not `auto-delete`)?"""
    durable = headers.get("durable", headers.get("persistent"))
    if durable is None or not boolean_header("durable", durable):
        return False
    auto_delete = headers.get("auto-delete")
    return auto_delete is None or not boolean_header("auto-delete", auto_delete)


def durable_subscription_queue(headers: dict[str, str], subscription: str) -> str | None:
    """The queue of a durable subscription, named by `x-queue-name` or after the
    subscription's id; None for a private queue."""
    if not is_durable_subscription(headers):
        return None
    return check_name("queue", headers.get("x-queue-name") or f"stomp-subscription-{subscription}")


def boolean_header(name: str, value: str) -> bool:
    """A true/false header. `True` and `False` too, as RabbitMQ reads them: Python clients
    (stomp.py) write a bool header that way."""
    if value == "true" or value == "True":
        return True
    if value == "false" or value == "False":
        return False
    raise invalid(name, "must be true or false")


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_TYPE or media.endswith("+json")


def send_request(
    headers: dict[str, str], body: bytes, destination: Destination, *, max_bytes: int
) -> PublishRequest:
    """The publish a SEND asks for. Its destination's names and key were checked when it was
    parsed; the sizes are checked here (a STOMP header cannot hold U+0000)."""
    kept: dict[str, Any] = {}
    header_bytes = 0
    not_kept = _NOT_KEPT_FOR_QUEUE if destination.kind is Kind.QUEUE else _NOT_KEPT
    for key, value in headers.items():
        if key not in not_kept:
            kept[key] = value
            header_bytes += len(key) + len(value)
    content_type = headers.get("content-type")
    body_json = _json_text(body) if content_type is None or _is_json_type(content_type) else None
    if body_json is None:
        try:
            body_json = dumps(body.decode("utf-8"))
            kept[BODY_ENCODING] = TEXT
        except UnicodeDecodeError:
            body_json = dumps(base64.b64encode(body).decode("ascii"))
            kept[BODY_ENCODING] = BASE64
    else:
        kept.pop(BODY_ENCODING, None)  # the body is JSON: nothing to say about its encoding
        if content_type == JSON_TYPE:
            del kept["content-type"]  # what a JSON body is anyway: not kept with every message
    # The body as it is kept (JSON text: escapes and base64 make it larger than the bytes sent).
    if utf8_size(body_json) > max_bytes:
        raise TooLarge(f"body: the message body is over the limit of {max_bytes} bytes")
    if header_bytes > max_bytes:
        raise TooLarge(f"headers: the message headers are over the limit of {max_bytes} bytes")
    check_expiration(kept)
    persistent = headers.get("persistent")
    message_id = headers.get("amqp-message-id") or headers.get("message-id")
    if message_id is not None and not 0 < len(message_id) <= MAX_MESSAGE_ID:
        raise invalid("message-id", f"must be 1 to {MAX_MESSAGE_ID} characters")
    return PublishRequest(
        destination.publish_exchange,
        destination.publish_key,
        body_json,
        kept,
        False if persistent is None else boolean_header("persistent", persistent),
        message_id,
    )


def escape_header(value: str, version: str) -> str:
    """A header name or value for a MESSAGE frame; STOMP 1.0 cannot escape a line break,
    so there it becomes a space."""
    if version == "1.0" and "\n" in value:
        return value.replace("\n", " ")
    return _escape_header(value, version)


def _json_text(body: bytes) -> str | None:
    """The body as JSON text when it is a JSON value (kept as it was written), else None."""
    if not body:
        return None
    try:
        text = body.decode("utf-8")
        loads(text)
    except ValueError:  # not UTF-8 (UnicodeDecodeError is a ValueError), or not JSON
        return None
    return text


def message_frame(
    *,
    subscription: str,
    tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    message_id: str,
    persistent: bool,
    headers: Mapping[str, Any],
    body_json: str,
    version: str,
) -> str | bytes:
    """A delivery as a STOMP MESSAGE frame: text when its body is text, bytes otherwise.
    A JSON body leaves as the JSON text it was published with."""
    rest = message_rest(
        exchange=exchange, routing_key=routing_key, message_id=message_id, persistent=persistent, headers=headers,
        body_json=body_json, version=version,
    )
    return with_head(message_head(subscription, tag, redelivered, version), rest)


def message_head(subscription: str, tag: int, redelivered: bool, version: str) -> str:
    """What is the delivery's own in a MESSAGE frame (its first lines)."""
    if version == "1.2":
        return (
            f"MESSAGE\nsubscription:{escape_header(subscription, version)}\nmessage-id:{tag}\nack:{tag}\n"
            f"redelivered:{'true' if redelivered else 'false'}\n"
        )
    return (
        f"MESSAGE\nsubscription:{escape_header(subscription, version)}\nmessage-id:{tag}\n"
        f"redelivered:{'true' if redelivered else 'false'}\n"
    )


def with_head(head: str, rest: str | bytes) -> str | bytes:
    return head + rest if type(rest) is str else head.encode() + rest  # type: ignore[operator]


def message_rest(
    *,
    exchange: str,
    routing_key: str,
    message_id: str,
    persistent: bool,
    headers: Mapping[str, Any],
    body_json: str,
    version: str,
) -> str | bytes:
    """What every delivery of a message shares in a MESSAGE frame: its headers and body,
    from `destination` to the NUL (made once per message: broker/engine/messages.py)."""
    encoding = headers.get(BODY_ENCODING)
    content_type = headers.get("content-type")
    body: str | bytes = body_json
    if encoding == TEXT or encoding == BASE64:
        value = loads(body_json)
        if isinstance(value, str):
            body = value
            if encoding == BASE64:
                try:
                    body = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    body = body_json  # not base64 after all: the JSON text, as any other body
    if body is body_json and content_type is None:
        content_type = JSON_TYPE
    lines = [f"destination:{escape_header(destination_of(exchange, routing_key), version)}"]
    if persistent:
        lines.append("persistent:true")
    lines.append(f"amqp-message-id:{escape_header(message_id, version)}")
    if content_type is not None:
        lines.append(f"content-type:{escape_header(str(content_type), version)}")
    for key, value in headers.items():
        if key not in _FRAME_OWN:
            shown = value if isinstance(value, str) else dumps(value)
            lines.append(f"{escape_header(key, version)}:{escape_header(shown, version)}")
    if isinstance(body, bytes):
        lines.append(f"content-length:{len(body)}\n\n")
        return "\n".join(lines).encode() + body + b"\x00"
    size = utf8_size(body)
    lines.append(f"content-length:{size}\n\n")
    return "\n".join(lines) + body + "\x00"


def delivered_frame(delivered: dict[str, Any], *, subscription: str, version: str) -> str | bytes:
    """The MESSAGE frame of a decoded `message` frame (broker/protocol/server_frames.py), as a
    connection served over the cluster link receives its deliveries."""
    return message_frame(
        subscription=subscription,
        tag=delivered["delivery_tag"],
        redelivered=delivered["redelivered"],
        exchange=delivered["exchange"],
        routing_key=delivered["routing_key"],
        message_id=delivered["message_id"],
        persistent=delivered["persistent"],
        headers=delivered["headers"],
        body_json=dumps(delivered["body"]),
        version=version,
    )


def decode_delivery(frame: str) -> dict[str, Any] | None:
    """A router frame as a dict when it is a delivery (`message`), else None."""
    if not frame.startswith('{"type":"message"'):
        return None
    decoded = loads(frame)
    if not isinstance(decoded, dict):
        raise BrokerError("a delivery frame is not an object")
    return decoded
