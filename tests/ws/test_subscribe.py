"""Subscribing over /ws: queues, exchanges through private queues, unsubscribe, the legacy frame."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from broker.engine.broker import QueueCounts
from broker.protocol.publish import PublishRequest
from broker.runtime.runtime import Runtime
from queues.models import Queue
from tests.ws.conftest import Connect
from tests.ws.helpers import (
    declare_exchange,
    declare_queue,
    delete_queue,
    publish,
    receive,
    request,
    send,
    silent,
    subscribe,
)


async def test_subscribe_to_a_queue_then_receive_its_messages(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    await subscribe(ws, "s1", "q")
    message_id = await publish(runtime, "", "q", {"n": 1})
    message = await receive(ws)
    assert message["type"] == "message" and message["subscription"] == "s1"
    assert (message["message_id"], message["unique_id"], message["body"]) == (message_id, message_id, {"n": 1})
    assert (message["exchange"], message["routing_key"], message["redelivered"]) == ("", "q", False)
    assert isinstance(message["delivery_tag"], int)


async def test_waiting_messages_follow_the_subscribed_reply(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    for n in range(3):
        await publish(runtime, "", "q", n)
    await subscribe(ws, "s1", "q")
    assert [(await receive(ws))["body"] for _ in range(3)] == [0, 1, 2]


async def test_subscribe_to_a_missing_queue_is_not_found(ws: WebsocketCommunicator) -> None:
    reply = await request(ws, {"type": "subscribe", "id": "s1", "queue": "nope"})
    assert (reply["type"], reply["id"], reply["code"]) == ("error", "s1", "not_found")
    assert "nope" in reply["message"]


async def test_a_duplicate_subscription_id_is_a_conflict(ws: WebsocketCommunicator) -> None:
    await declare_queue("q")
    await subscribe(ws, "s1", "q")
    reply = await request(ws, {"type": "subscribe", "id": "s1", "queue": "q"})
    assert (reply["type"], reply["id"], reply["code"]) == ("error", "s1", "conflict")


async def test_invalid_prefetch_is_refused(ws: WebsocketCommunicator) -> None:
    await declare_queue("q")
    reply = await request(ws, {"type": "subscribe", "id": "s1", "queue": "q", "prefetch": 70000})
    assert (reply["type"], reply["id"], reply["code"]) == ("error", "s1", "invalid")


async def test_subscribe_without_id_gets_a_generated_subscription(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    reply = await request(ws, {"type": "subscribe", "queue": "q"})
    assert reply == {"type": "subscribed", "subscription": "sub-1", "queue": "q"}
    await publish(runtime, "", "q", "hi")
    assert (await receive(ws))["subscription"] == "sub-1"
    assert await request(ws, {"type": "unsubscribe", "id": "sub-1"}) == {"type": "unsubscribed", "id": "sub-1"}


async def test_a_numeric_id_stays_a_number(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    reply = await request(ws, {"type": "subscribe", "id": 5, "queue": "q"})
    assert reply == {"type": "subscribed", "id": 5, "subscription": 5, "queue": "q"}
    await publish(runtime, "", "q", "hi")
    assert (await receive(ws))["subscription"] == 5
    assert await request(ws, {"type": "unsubscribe", "id": 5}) == {"type": "unsubscribed", "id": 5}


async def test_the_ids_5_and_quoted_5_are_two_subscriptions(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("a")
    await declare_queue("b")
    await subscribe(ws, "5", "a")
    reply = await request(ws, {"type": "subscribe", "id": 5, "queue": "b"})
    assert reply == {"type": "subscribed", "id": 5, "subscription": 5, "queue": "b"}
    await publish(runtime, "", "b", "to b")
    assert (await receive(ws))["subscription"] == 5
    assert await request(ws, {"type": "unsubscribe", "id": 5}) == {"type": "unsubscribed", "id": 5}
    await publish(runtime, "", "a", "to a")
    assert (await receive(ws))["subscription"] == "5"
    reply = await request(ws, {"type": "subscribe", "id": "5", "queue": "b"})
    assert (reply["type"], reply["code"]) == ("error", "conflict")
    assert reply["message"] == 'subscription "5" already exists on this connection'
    reply = await request(ws, {"type": "unsubscribe", "id": 5})
    assert (reply["type"], reply["code"], reply["message"]) == ("error", "not_found", "subscription 5 does not exist")


async def test_fanout_subscription_broadcasts_to_every_connection(connect: Connect, runtime: Runtime) -> None:
    await declare_exchange("news", "fanout")
    first, second = await connect(), await connect()
    queues = []
    for client in (first, second):
        reply = await request(client, {"type": "subscribe", "id": "n", "exchange": "news"})
        assert (reply["type"], reply["subscription"]) == ("subscribed", "n")
        assert reply["queue"].startswith("amq.gen-")
        queues.append(reply["queue"])
    assert queues[0] != queues[1]
    await publish(runtime, "news", "any", "extra")
    for client in (first, second):
        message = await receive(client)
        assert (message["subscription"], message["body"], message["exchange"]) == ("n", "extra", "news")


async def test_topic_subscription_filters_by_binding_key(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_exchange("events", "topic")
    reply = await request(ws, {"type": "subscribe", "id": "t", "exchange": "events", "binding_key": "sports.#"})
    assert reply["type"] == "subscribed"
    for key in ("weather.eu", "sports.football.eu", "sports"):
        await publish(runtime, "events", key, key)
    assert (await receive(ws))["routing_key"] == "sports.football.eu"
    assert (await receive(ws))["routing_key"] == "sports"
    assert await silent(ws)


async def test_headers_subscription_takes_binding_arguments(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_exchange("h", "headers")
    frame = {"type": "subscribe", "id": "h", "exchange": "h", "arguments": {"x-match": "all", "kind": "a"}}
    assert (await request(ws, frame))["type"] == "subscribed"
    for kind in ("b", "a"):
        await runtime.publish(PublishRequest("h", "", '"x"', {"kind": kind}, False, None))
    assert (await receive(ws))["headers"] == {"kind": "a"}
    assert await silent(ws)


async def test_private_queue_goes_away_with_its_connection(connect: Connect, runtime: Runtime) -> None:
    await declare_exchange("news", "fanout")
    client = await connect()
    reply = await request(client, {"type": "subscribe", "id": "n", "exchange": "news"})
    queue = reply["queue"]
    assert queue in runtime.broker.queues
    await client.disconnect()
    assert queue not in runtime.broker.queues
    assert not runtime.broker.exchanges["news"].binding_count
    assert not await database_sync_to_async(Queue.objects.filter(name=queue).exists)()


async def test_subscribing_to_the_default_exchange_gives_a_reply_queue(connect: Connect, runtime: Runtime) -> None:
    requester, responder = await connect(), await connect()
    reply = await request(requester, {"type": "subscribe", "id": "r", "exchange": ""})
    queue = reply["queue"]
    assert queue.startswith("amq.gen-") and not runtime.broker.bindings
    confirm = await request(
        responder, {"type": "publish", "id": 1, "exchange": "", "routing_key": queue, "body": "answer"}
    )
    assert confirm["routed"] == 1
    assert (await receive(requester))["body"] == "answer"


async def test_subscribe_to_a_missing_exchange_is_not_found(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    reply = await request(ws, {"type": "subscribe", "id": "x", "exchange": "nope"})
    assert (reply["type"], reply["id"], reply["code"]) == ("error", "x", "not_found")
    assert not [name for name in runtime.broker.queues if name.startswith("amq.gen-")]


async def test_unsubscribe_requeues_unacked_messages_as_redelivered(
    ws: WebsocketCommunicator, runtime: Runtime
) -> None:
    await declare_queue("q")
    await subscribe(ws, "s1", "q", ack="client")
    await publish(runtime, "", "q", "a")
    first = await receive(ws)
    assert first["redelivered"] is False
    assert await request(ws, {"type": "unsubscribe", "id": "s1"}) == {"type": "unsubscribed", "id": "s1"}
    await subscribe(ws, "s2", "q", ack="client")
    again = await receive(ws)
    assert (again["subscription"], again["message_id"], again["redelivered"]) == ("s2", first["message_id"], True)


@pytest.mark.parametrize("frame", [{"type": "unsubscribe", "id": "nope"}, {"type": "unsubscribe"}])
async def test_unsubscribe_unknown_or_without_id_is_an_error(ws: WebsocketCommunicator, frame: dict[str, str]) -> None:
    reply = await request(ws, frame)
    assert reply["type"] == "error"
    assert (reply["id"], reply["code"]) == (frame.get("id"), "not_found" if "id" in frame else "invalid")


async def test_deleting_the_queue_cancels_the_subscription(ws: WebsocketCommunicator) -> None:
    await declare_queue("q")
    await subscribe(ws, "s1", "q")
    await delete_queue("q")
    reply = await receive(ws)
    assert (reply["type"], reply["subscription"]) == ("cancelled", "s1")
    assert "deleted" in reply["reason"]
    unsubscribed = await request(ws, {"type": "unsubscribe", "id": "s1"})
    assert (unsubscribed["type"], unsubscribed["code"]) == ("error", "not_found")


async def test_legacy_subscribe_gets_messages_and_no_reply(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    await send(ws, {"type": "SUBSCRIBE", "payload": {"queue_name": "q"}})
    assert await silent(ws)
    message_id = await publish(runtime, "", "q", {"text": "hello"})
    message = await receive(ws)
    assert (message["unique_id"], message["body"]) == (message_id, {"text": "hello"})
    # auto ack: nothing stays unacknowledged
    assert runtime.broker.queue_counts("q") == QueueCounts(messages_ready=0, messages_unacknowledged=0, consumers=1)


async def test_legacy_subscribe_to_a_missing_queue_is_an_error(ws: WebsocketCommunicator) -> None:
    await send(ws, {"type": "SUBSCRIBE", "payload": {"queue_name": "nope"}})
    reply = await receive(ws)
    assert (reply["type"], reply["id"], reply["code"]) == ("error", None, "not_found")
