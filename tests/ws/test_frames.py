"""The frame parser (broker/protocol/frames.py): pure, no database, no loop."""

from __future__ import annotations

from typing import Any

import pytest

from broker.engine.errors import TooLarge
from broker.engine.queues import DEFAULT_PREFETCH, AckMode
from broker.protocol.client_frames import (
    Ack,
    AckMany,
    FrameError,
    Nack,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    parse_frame,
)
from broker.protocol.server_frames import error_frame, pong_frame, subscribed_frame

LIMIT = 1024


def parse(data: Any) -> Any:
    return parse_frame(data, max_bytes=LIMIT)


def refused(data: Any) -> FrameError:
    with pytest.raises(FrameError) as caught:
        parse(data)
    assert caught.value.code == "invalid"
    return caught.value


def test_subscribe_to_a_queue_takes_the_defaults() -> None:
    frame = parse({"type": "subscribe", "id": "s1", "queue": "q"})
    assert frame == Subscribe("s1", queue="q", ack=AckMode.AUTO, prefetch=DEFAULT_PREFETCH)
    assert frame.exchange is None and not frame.legacy


def test_subscribe_with_client_ack_and_prefetch() -> None:
    frame = parse({"type": "subscribe", "id": 7, "queue": "q", "ack": "client", "prefetch": 0})
    assert (frame.id, frame.ack, frame.prefetch) == (7, AckMode.CLIENT, 0)


def test_subscribe_with_transaction_ack() -> None:
    frame = parse({"type": "subscribe", "queue": "q", "ack": "transaction"})
    assert frame.ack is AckMode.TRANSACTION


def test_subscribe_to_an_exchange() -> None:
    frame = parse({"type": "subscribe", "exchange": "news", "binding_key": "sports.#"})
    assert frame == Subscribe(None, exchange="news", binding_key="sports.#")
    headers = parse({"type": "subscribe", "exchange": "h", "arguments": {"x-match": "any", "a": 1}})
    assert (headers.binding_key, headers.arguments) == ("", {"x-match": "any", "a": 1})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "queue"),
        ({"queue": "q", "exchange": "x"}, "queue"),
        ({"queue": ""}, "queue"),
        ({"queue": "bad name"}, "queue"),
        ({"queue": 3}, "queue"),
        ({"queue": "q", "ack": "manual"}, "ack"),
        ({"queue": "q", "prefetch": -1}, "prefetch"),
        ({"queue": "q", "prefetch": 65536}, "prefetch"),
        ({"queue": "q", "prefetch": True}, "prefetch"),
        ({"queue": "q", "prefetch": 1.5}, "prefetch"),
        ({"queue": "q", "binding_key": "k"}, "binding_key"),
        ({"exchange": 1}, "exchange"),
        ({"exchange": "x", "binding_key": 5}, "binding_key"),
        ({"exchange": "x", "binding_key": "k" * 256}, "binding_key"),
        ({"exchange": "x", "arguments": [1]}, "arguments"),
    ],
)
def test_bad_subscribe_is_invalid_and_keeps_the_id(fields: dict[str, Any], field: str) -> None:
    error = refused({"type": "subscribe", "id": "s1", **fields})
    assert error.frame_id == "s1"
    assert error.fields is not None and field in error.fields


def test_legacy_subscribe() -> None:
    frame = parse({"type": "SUBSCRIBE", "payload": {"queue_name": "q"}})
    assert frame == Subscribe(None, queue="q", legacy=True)
    assert frame.ack is AckMode.AUTO and frame.prefetch == DEFAULT_PREFETCH


@pytest.mark.parametrize("payload", [None, "q", {}, {"queue_name": 1}, {"queue_name": ""}])
def test_bad_legacy_subscribe(payload: Any) -> None:
    refused({"type": "SUBSCRIBE", "payload": payload})


def test_unsubscribe_needs_an_id() -> None:
    assert parse({"type": "unsubscribe", "id": "s1"}) == Unsubscribe("s1")
    assert parse({"type": "unsubscribe", "id": 2.5}) == Unsubscribe(2.5)
    assert "id" in (refused({"type": "unsubscribe"}).fields or {})


def test_ack_and_nack_defaults() -> None:
    assert parse({"type": "ack", "delivery_tag": 3}) == Ack(None, 3, multiple=False)
    assert parse({"type": "ack", "delivery_tag": 3, "multiple": True}) == Ack(None, 3, multiple=True)
    assert parse({"type": "nack", "delivery_tag": 4}) == Nack(None, 4, multiple=False, requeue=True)
    assert parse({"type": "nack", "id": "n", "delivery_tag": 4, "requeue": False}) == Nack("n", 4, requeue=False)
    assert parse({"type": "ack", "id": "a", "delivery_tags": [5, 3]}) == AckMany("a", [5, 3])


@pytest.mark.parametrize(
    "data",
    [
        {"type": "ack"},
        {"type": "ack", "delivery_tag": "1"},
        {"type": "ack", "delivery_tag": True},
        {"type": "ack", "delivery_tag": 1, "multiple": "yes"},
        {"type": "ack", "delivery_tags": []},
        {"type": "ack", "delivery_tags": 3},
        {"type": "ack", "delivery_tags": [1, "2"]},
        {"type": "ack", "delivery_tags": [1, True]},
        {"type": "ack", "delivery_tags": [1], "delivery_tag": 1},
        {"type": "ack", "delivery_tags": [1], "multiple": True},
        {"type": "ack", "delivery_tags": list(range(65536))},
        {"type": "nack", "delivery_tag": 1.0},
        {"type": "nack", "delivery_tag": 1, "requeue": 0},
    ],
)
def test_bad_ack_and_nack(data: dict[str, Any]) -> None:
    refused(data)


def test_publish_is_validated_and_encoded() -> None:
    frame = parse({"type": "publish", "id": "p1", "exchange": "x", "routing_key": "k", "body": {"a": [1]}})
    assert isinstance(frame, Publish) and frame.id == "p1"
    request = frame.request
    assert (request.exchange, request.routing_key, request.body_json) == ("x", "k", '{"a":[1]}')
    assert (request.headers, request.persistent, request.message_id) == ({}, True, None)
    default = parse({"type": "publish", "body": None}).request
    assert (default.exchange, default.routing_key, default.body_json) == ("", "", "null")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "body"),
        ({"body": 1, "exchange": "bad name"}, "exchange"),
        ({"body": 1, "routing_key": 1}, "routing_key"),
        ({"body": 1, "headers": []}, "headers"),
        ({"body": 1, "persistent": "yes"}, "persistent"),
        ({"body": 1, "message_id": ""}, "message_id"),
    ],
)
def test_bad_publish_is_invalid_and_keeps_the_id(fields: dict[str, Any], field: str) -> None:
    error = refused({"type": "publish", "id": "p1", **fields})
    assert error.frame_id == "p1"
    assert error.fields is not None and field in error.fields


def test_publish_over_the_limit_is_too_large_with_its_id() -> None:
    with pytest.raises(TooLarge) as caught:
        parse({"type": "publish", "id": "p1", "body": "x" * LIMIT})
    assert isinstance(caught.value, FrameError) and caught.value.frame_id == "p1"
    assert caught.value.code == "too_large"


def test_ping() -> None:
    assert parse({"type": "ping"}) == Ping(None)
    assert parse({"type": "ping", "id": 0}) == Ping(0)


@pytest.mark.parametrize("data", [[], "ping", 1, None, True])
def test_a_frame_must_be_an_object(data: Any) -> None:
    assert refused(data).frame_id is None


@pytest.mark.parametrize("frame_id", [None, True, [], {}])
def test_id_must_be_a_string_or_number(frame_id: Any) -> None:
    error = refused({"type": "ping", "id": frame_id})
    assert error.frame_id is None and "id" in (error.fields or {})


@pytest.mark.parametrize("kind", [None, "", "Subscribe", "message", 5, ["ping"]])
def test_missing_or_unknown_type(kind: Any) -> None:
    data = {"id": "x"} if kind is None else {"id": "x", "type": kind}
    error = refused(data)
    assert error.frame_id == "x" and "type" in (error.fields or {})


def test_server_frames_leave_out_a_missing_id_except_errors() -> None:
    assert pong_frame(None) == {"type": "pong"}
    assert pong_frame("a") == {"type": "pong", "id": "a"}
    assert subscribed_frame(None, "sub-1", "q") == {"type": "subscribed", "subscription": "sub-1", "queue": "q"}
    assert subscribed_frame(1, 1, "q") == {"type": "subscribed", "id": 1, "subscription": 1, "queue": "q"}
    error = FrameError("bad")
    assert error_frame(None, error) == {"type": "error", "id": None, "code": "invalid", "message": "bad"}
