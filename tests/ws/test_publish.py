"""Publishing over /ws, confirms, ping, and frames the server refuses (docs/protocol.md, "WebSocket")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from broker.protocol.publish import PublishRequest
from broker.runtime import memory
from broker.runtime.memory import MemoryGuard
from broker.runtime.runtime import Runtime
from broker.transport import session as session_module
from broker_project.asgi import websocket_application
from queues.models import Message
from tests.ws.conftest import Connect
from tests.ws.helpers import (
    declare_binding,
    declare_exchange,
    declare_queue,
    receive,
    request,
    send,
    silent,
    subscribe,
)


async def test_publish_with_id_is_confirmed_with_routed_count(ws: WebsocketCommunicator) -> None:
    await declare_exchange("fan", "fanout")
    for name in ("a", "b"):
        await declare_queue(name, durable=False)
        await declare_binding("fan", name)
    frame = {"type": "publish", "id": "p1", "exchange": "fan", "body": {"x": 1}, "message_id": "m-1"}
    assert await request(ws, frame) == {"type": "confirm", "id": "p1", "message_id": "m-1", "routed": 2}
    reply = await request(ws, {"type": "publish", "id": 9, "exchange": "fan", "routing_key": "k", "body": 1})
    assert (reply["type"], reply["id"], reply["routed"]) == ("confirm", 9, 2)
    assert isinstance(reply["message_id"], str) and reply["message_id"]


async def test_unrouted_publish_is_confirmed_with_zero(ws: WebsocketCommunicator) -> None:
    reply = await request(ws, {"type": "publish", "id": "p", "routing_key": "nowhere", "body": "x"})
    assert (reply["type"], reply["routed"]) == ("confirm", 0)


async def test_publish_without_id_gets_no_reply(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    await send(ws, {"type": "publish", "routing_key": "q", "body": "quiet"})
    assert await silent(ws)
    assert runtime.broker.queue_counts("q").messages_ready == 1


async def test_confirm_comes_after_the_durable_copy_is_committed(ws: WebsocketCommunicator) -> None:
    await declare_queue("dq")
    reply = await request(ws, {"type": "publish", "id": "p1", "routing_key": "dq", "body": {"keep": True}})
    assert (reply["type"], reply["routed"]) == ("confirm", 1)
    stored = await database_sync_to_async(lambda: list(Message.objects.values_list("message_id", "body")))()
    assert stored == [(reply["message_id"], '{"keep":true}')]


async def test_confirms_go_out_in_publish_order(ws: WebsocketCommunicator) -> None:
    await declare_queue("dq")
    await declare_queue("mem", durable=False)
    await send(ws, {"type": "publish", "id": "slow", "routing_key": "dq", "body": 1})
    await send(ws, {"type": "publish", "id": "fast", "routing_key": "mem", "body": 2})
    await send(ws, {"type": "ping", "id": "after"})
    # The ping is answered at once: confirms never hold back the reading of frames.
    assert await receive(ws) == {"type": "pong", "id": "after"}
    assert [(await receive(ws))["id"] for _ in range(2)] == ["slow", "fast"]


async def test_a_refused_publish_is_answered_after_the_earlier_publishes(ws: WebsocketCommunicator) -> None:
    # Refused at once (no such exchange), its error still waits for the confirm of the
    # publish before it, which waits for a commit: a publisher's answers come in order.
    await declare_queue("dq")
    await send(ws, {"type": "publish", "id": "stored", "routing_key": "dq", "body": 1})
    await send(ws, {"type": "publish", "id": "refused", "exchange": "nope", "body": 2})
    await send(ws, {"type": "publish", "id": "then", "routing_key": "dq", "body": 3})
    await send(ws, {"type": "publish", "id": "invalid", "routing_key": "dq"})  # no body
    answers = [await receive(ws) for _ in range(4)]
    assert [(a["type"], a["id"]) for a in answers] == [
        ("confirm", "stored"), ("error", "refused"), ("confirm", "then"), ("error", "invalid")
    ]
    assert (answers[1]["code"], answers[3]["code"]) == ("not_found", "invalid")


async def test_a_failed_commit_is_an_unavailable_error(
    ws: WebsocketCommunicator, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await declare_queue("dq")

    def broken(*args: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(runtime.store, "write", broken)
    reply = await request(ws, {"type": "publish", "id": "p1", "routing_key": "dq", "body": 1})
    assert (reply["type"], reply["id"], reply["code"]) == ("error", "p1", "unavailable")
    reply = await request(ws, {"type": "publish", "routing_key": "dq", "body": 2})
    assert (reply["type"], reply["id"], reply["code"]) == ("error", None, "unavailable")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "publish", "id": "p1", "exchange": "nope", "body": 1}, "not_found"),
        ({"type": "publish", "id": "p1", "routing_key": "q"}, "invalid"),
        ({"type": "publish", "id": "p1", "body": 1, "headers": "h"}, "invalid"),
        # A STOMP subscriber's MESSAGE frame cannot carry a header without a name.
        ({"type": "publish", "id": "p1", "body": 1, "headers": {"": "v"}}, "invalid"),
    ],
)
async def test_publish_errors(ws: WebsocketCommunicator, frame: dict[str, Any], code: str) -> None:
    reply = await request(ws, frame)
    assert (reply["type"], reply["id"], reply["code"]) == ("error", "p1", code)
    assert reply["message"]


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "publish", "id": "p1", "routing_key": "q", "body": {"n": 18446744073709551616}}',
        '{"type": "publish", "id": "p1", "routing_key": "q", "body": [-9223372036854775809]}',
        '{"type": "publish", "id": "p1", "routing_key": "q", "body": 1, "headers": {"h": 123456789012345678901234}}',
    ],
)
async def test_an_integer_past_64_bits_is_refused_not_changed(ws: WebsocketCommunicator, text: str) -> None:
    """orjson reads such an integer as a float: the subscribers would get another number."""
    await declare_queue("q")
    await ws.send_input({"type": "websocket.receive", "text": text})
    reply = await receive(ws)
    assert (reply["type"], reply["id"], reply["code"]) == ("error", "p1", "invalid")
    assert "out of range" in reply["message"]
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_the_largest_integers_and_long_digit_strings_are_taken_as_sent(ws: WebsocketCommunicator) -> None:
    await declare_queue("q")
    digits = "1" * 40
    body = '{"top": 18446744073709551615, "low": -9223372036854775808, "s": "' + digits + '", "f": 0.' + digits + "}"
    text = '{"type": "publish", "id": "p1", "routing_key": "q", "body": ' + body + "}"
    await subscribe(ws, "s", "q")
    await ws.send_input({"type": "websocket.receive", "text": text})
    replies = [await receive(ws), await receive(ws)]
    assert sorted(reply["type"] for reply in replies) == ["confirm", "message"]
    delivered = next(reply for reply in replies if reply["type"] == "message")
    assert delivered["body"] == json.loads(body)


async def test_ping_pong(ws: WebsocketCommunicator) -> None:
    assert await request(ws, {"type": "ping"}) == {"type": "pong"}
    assert await request(ws, {"type": "ping", "id": "x"}) == {"type": "pong", "id": "x"}
    assert await request(ws, {"type": "ping", "id": 3}) == {"type": "pong", "id": 3}


@pytest.mark.parametrize(
    ("text", "frame_id"),
    [
        ("not json", None),
        ("", None),
        ("[1, 2]", None),
        ('{"id": "a"}', "a"),
        ('{"id": "a", "type": "dance"}', "a"),
        ('{"id": true, "type": "ping"}', None),
        ('{"id": "a", "type": "ack"}', "a"),
        ('{"id": "a", "type": "subscribe", "queue": "q", "ack": "later"}', "a"),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_connection_stays(
    ws: WebsocketCommunicator, text: str, frame_id: str | None
) -> None:
    await ws.send_input({"type": "websocket.receive", "text": text})
    reply = await receive(ws)
    assert reply["type"] == "error"
    assert (reply["id"], reply["code"]) == (frame_id, "invalid")
    assert reply["message"]
    assert await request(ws, {"type": "ping"}) == {"type": "pong"}


async def test_a_binary_frame_is_an_error(ws: WebsocketCommunicator) -> None:
    await ws.send_to(bytes_data=b'{"type": "ping"}')
    reply = await receive(ws)
    assert (reply["type"], reply["id"], reply["code"]) == ("error", None, "invalid")
    assert await request(ws, {"type": "ping"}) == {"type": "pong"}


async def closed_with(client: WebsocketCommunicator) -> int:
    output = await client.receive_output(timeout=2)
    assert output["type"] == "websocket.close"
    return int(output["code"])


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "ping", "pad": "' + "x" * 70_000 + '"}',
        '{"type": "ping", "pad": "' + "é" * 40_000 + '"}',  # under the limit in characters, over it in bytes
        '{"type": "publish", "body": "' + "x" * 1_001 + '"}',
    ],
)
async def test_too_large_closes_with_1009(
    connect: Connect, settings: Any, runtime: Runtime, text: str
) -> None:
    settings.MAX_MESSAGE_BYTES = 1_000  # frames may then be up to 1_000 + FRAME_OVERHEAD (publishing.py) bytes
    await declare_queue("q")
    client = await connect()
    reply = await request(client, {"type": "subscribe", "id": "s", "queue": "q", "ack": "client"})
    assert reply["type"] == "subscribed"
    await runtime.publish(PublishRequest("", "q", "1", {}, False, None))
    assert (await receive(client))["type"] == "message"
    await client.send_to(text_data=text)
    assert await closed_with(client) == 1009
    # The connection has left the router: its unacknowledged message is back in the queue.
    counts = runtime.broker.queue_counts("q")
    assert (counts.messages_ready, counts.messages_unacknowledged, counts.consumers) == (1, 0, 0)


async def test_a_frame_just_under_the_limit_is_accepted(connect: Connect, settings: Any) -> None:
    settings.MAX_MESSAGE_BYTES = 1_000
    client = await connect()
    reply = await request(client, {"type": "publish", "id": "p", "routing_key": "none", "body": "x" * 990})
    assert (reply["type"], reply["routed"]) == ("confirm", 0)


async def test_without_a_router_the_connection_closes_with_1011() -> None:
    client = WebsocketCommunicator(websocket_application, "/ws")
    connected, _ = await client.connect()
    assert connected
    assert await closed_with(client) == 1011
    await client.disconnect()


async def test_dispatch_refuses_an_unknown_event_type() -> None:
    from subscriptions.consumers import BrokerConsumer

    with pytest.raises(ValueError, match="No handler"):
        await BrokerConsumer().dispatch({"type": "websocket.dance"})


async def test_a_publish_held_by_the_memory_alarm_is_told_blocked_until_it_is_carried_out(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is read from a connection whose publish is held (docs/protocol.md, "Memory
    and flow control"), so its pings go unanswered: `blocked`, at once and again while the
    hold lasts, tells a client that takes a quiet socket for dead that this one lives."""
    mib = 1024 * 1024
    resident = [200 * mib]
    guard = MemoryGuard(100 * mib, read_resident=lambda: resident[0])
    guard.sample()
    monkeypatch.setattr(memory, "_guard", guard)
    monkeypatch.setattr(session_module, "BLOCKED_EVERY_SECONDS", 0.2)
    ws = await connect()
    await declare_queue("q", durable=False)
    await send(ws, {"type": "publish", "id": "p", "routing_key": "q", "body": 1})
    await send(ws, {"type": "ping", "id": "after"})
    assert await receive(ws) == {"type": "blocked", "reason": "memory"}
    assert await receive(ws, timeout=1) == {"type": "blocked", "reason": "memory"}  # again, while held
    resident[0] = 10 * mib
    guard.sample()
    reply = await receive(ws)
    while reply == {"type": "blocked", "reason": "memory"}:  # one more, sent before the alarm cleared
        reply = await receive(ws)
    assert reply == {"type": "unblocked"}
    assert (await receive(ws))["type"] == "confirm"
    assert await receive(ws) == {"type": "pong", "id": "after"}  # read once the publish was carried out
