"""Validation of a publish request, shared by HTTP and WebSocket.

Pure: takes the decoded fields and the size limit, returns what the runtime
publishes, or raises a BrokerError naming the field. The body is encoded here,
once; every delivery reuses the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from broker.engine.errors import TooLarge
from broker.engine.jsoncodec import dumps, holds_nul, json_holds_nul, utf8_size
from broker.engine.messages import check_expiration
from broker.engine.names import DEFAULT_EXCHANGE
from broker.engine.rules import NUL_PROBLEM, exchange_field, invalid, key_field

# Room for a publish's other fields (routing key, headers, ids) around a body of
# MAX_MESSAGE_BYTES: the limit of a WebSocket frame and of an HTTP request body.
FRAME_OVERHEAD: Final = 64 * 1024
MAX_MESSAGE_ID: Final = 64  # the stored column's width


@dataclass(slots=True)  # made per message: not frozen, whose __init__ costs 4x (object.__setattr__ per field); never mutated
class PublishRequest:
    exchange: str
    routing_key: str
    body_json: str
    headers: dict[str, Any]
    persistent: bool
    message_id: str | None


def prepare_publish(
    data: Mapping[str, Any], *, max_bytes: int, exchange: str | None = None, body_json: str | None = None
) -> PublishRequest:
    """Check a publish's fields (docs/protocol.md, publish); `exchange` overrides the field (HTTP
    path). `body_json`: the body as JSON text its caller has already checked (an outbox row's),
    kept as it is instead of `data["body"]` encoded."""
    if body_json is None and "body" not in data:
        raise invalid("body", "this field is required")
    target = exchange_field(data.get("exchange", DEFAULT_EXCHANGE) if exchange is None else exchange)
    routing_key = key_field("routing_key", data.get("routing_key", ""))
    headers = data.get("headers")
    if headers is None:
        headers = {}
    if not isinstance(headers, dict) or not all(isinstance(key, str) for key in headers):
        raise invalid("headers", "must be an object")
    if "" in headers:  # a STOMP subscriber's MESSAGE frame could not carry it
        raise invalid("headers", "a header needs a name (not \"\")")
    check_expiration(headers)
    persistent = data.get("persistent", True)
    if not isinstance(persistent, bool):
        raise invalid("persistent", "must be true or false")
    message_id = data.get("message_id")
    if message_id is not None and (
        not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID
    ):
        raise invalid("message_id", f"must be a string of 1 to {MAX_MESSAGE_ID} characters")
    if message_id is not None and holds_nul(message_id):
        raise invalid("message_id", NUL_PROBLEM)
    if body_json is None:
        try:
            body_json = dumps(data["body"])
        except (TypeError, ValueError):
            raise invalid("body", "must be a JSON value") from None
    # Most publishes carry no headers: nothing to encode then.
    try:
        headers_json = dumps(headers) if headers else "{}"
    except (TypeError, ValueError):
        raise invalid("headers", "must be a JSON object") from None
    # The headers go to a jsonb column, where PostgreSQL refuses U+0000; the body is
    # stored as its JSON text, in which U+0000 stays escaped.
    if json_holds_nul(headers_json):
        raise invalid("headers", NUL_PROBLEM)
    headers_size = utf8_size(headers_json)
    if utf8_size(body_json) > max_bytes:
        raise TooLarge(f"body: the message body is over the limit of {max_bytes} bytes")
    if headers_size > max_bytes:
        raise TooLarge(f"headers: the message headers are over the limit of {max_bytes} bytes")
    return PublishRequest(target, routing_key, body_json, headers, persistent, message_id)
