"""Delivery over /ws (docs/protocol.md, "Delivery"): ack, nack, prefetch, round-robin, redelivery."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from channels.testing import WebsocketCommunicator

from broker.runtime.runtime import Runtime
from tests.ws.conftest import Connect
from tests.ws.helpers import (
    declare_binding,
    declare_exchange,
    declare_queue,
    publish,
    receive,
    request,
    send,
    silent,
    subscribe,
)


async def receive_all(client: WebsocketCommunicator, count: int) -> list[dict[str, object]]:
    return [await receive(client) for _ in range(count)]


async def delivered_tags(ws: WebsocketCommunicator, runtime: Runtime, count: int) -> list[object]:
    """`count` messages to queue "q" delivered to a client-ack subscription: their tags."""
    await declare_queue("q")
    await subscribe(ws, "s1", "q", ack="client")
    for n in range(count):
        await publish(runtime, "", "q", n)
    return [message["delivery_tag"] for message in await receive_all(ws, count)]


async def test_ack_removes_the_message(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    await subscribe(ws, "s1", "q", ack="client")
    await publish(runtime, "", "q", "a")
    message = await receive(ws)
    assert runtime.broker.queue_counts("q").messages_unacknowledged == 1
    await send(ws, {"type": "ack", "delivery_tag": message["delivery_tag"]})
    assert await silent(ws)  # no reply to an ack
    counts = runtime.broker.queue_counts("q")
    assert (counts.messages_ready, counts.messages_unacknowledged) == (0, 0)


async def test_ack_multiple_acks_every_tag_up_to_it(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    tags = await delivered_tags(ws, runtime, 3)
    await send(ws, {"type": "ack", "delivery_tag": tags[1], "multiple": True})
    assert await silent(ws)
    assert runtime.broker.queue_counts("q").messages_unacknowledged == 1
    await send(ws, {"type": "ack", "delivery_tag": tags[2]})
    assert await silent(ws)
    assert runtime.broker.queue_counts("q").messages_unacknowledged == 0


async def test_ack_of_delivery_tags_acks_each_of_them(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    tags = await delivered_tags(ws, runtime, 4)
    await send(ws, {"type": "ack", "delivery_tags": [tags[3], tags[1]]})
    assert await silent(ws)
    counts = runtime.broker.queue_counts("q")
    assert (counts.messages_ready, counts.messages_unacknowledged) == (0, 2)
    # Each tag is its own ack: an unknown one is refused, the others are carried out.
    reply = await request(ws, {"type": "ack", "id": "a", "delivery_tags": [tags[0], 999, tags[2]]})
    assert (reply["type"], reply["id"], reply["code"]) == ("error", "a", "precondition_failed")
    assert await silent(ws)
    assert runtime.broker.queue_counts("q").messages_unacknowledged == 0


async def test_ack_of_an_unknown_tag_is_precondition_failed(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    await subscribe(ws, "s1", "q", ack="client")
    await publish(runtime, "", "q", "a")
    tag = (await receive(ws))["delivery_tag"]
    await send(ws, {"type": "ack", "delivery_tag": tag})
    for frame in ({"type": "ack", "id": "a1", "delivery_tag": tag}, {"type": "ack", "delivery_tag": 999}):
        reply = await request(ws, frame)
        assert (reply["type"], reply["id"], reply["code"]) == ("error", frame.get("id"), "precondition_failed")
    assert (await request(ws, {"type": "ping"}))["type"] == "pong"


async def test_nack_with_requeue_redelivers(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    await subscribe(ws, "s1", "q", ack="client")
    await publish(runtime, "", "q", "a")
    first = await receive(ws)
    await send(ws, {"type": "nack", "delivery_tag": first["delivery_tag"]})
    again = await receive(ws)
    assert (again["message_id"], again["redelivered"]) == (first["message_id"], True)
    assert again["delivery_tag"] != first["delivery_tag"]
    # How often it was given back, as RabbitMQ's quorum queues say it; the first had none.
    assert "x-delivery-count" not in first["headers"] and again["headers"]["x-delivery-count"] == 1
    await send(ws, {"type": "nack", "delivery_tag": again["delivery_tag"]})
    assert (await receive(ws))["headers"]["x-delivery-count"] == 2


async def test_the_delivery_count_of_one_queues_copy_is_not_shown_for_anothers(
    ws: WebsocketCommunicator, runtime: Runtime
) -> None:
    """One message, two queues' copies: the frame part every delivery of it shares (made once)
    must not keep the count of the copy that was given back."""
    await declare_exchange("fan", "fanout")
    for name in ("a", "b"):
        await declare_queue(name)
        await declare_binding("fan", name)
    await subscribe(ws, "sa", "a", ack="client")
    await publish(runtime, "fan", "", "m")
    first = await receive(ws)
    await send(ws, {"type": "nack", "delivery_tag": first["delivery_tag"]})
    assert (await receive(ws))["headers"] == {"x-delivery-count": 1}
    await subscribe(ws, "sb", "b", ack="client")
    from_b = await receive(ws)
    assert (from_b["subscription"], from_b["redelivered"], from_b["headers"]) == ("sb", False, {})


async def test_nack_without_requeue_drops_or_dead_letters(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_exchange("dlx", "fanout")
    await declare_queue("q", arguments={"dead_letter_exchange": "dlx"})
    await subscribe(ws, "s1", "q", ack="client")
    reply = await request(ws, {"type": "subscribe", "id": "dead", "exchange": "dlx"})
    assert reply["type"] == "subscribed"
    await publish(runtime, "", "q", "a")
    first = await receive(ws)
    assert first["subscription"] == "s1"
    await send(ws, {"type": "nack", "delivery_tag": first["delivery_tag"], "requeue": False})
    dead = await receive(ws)
    assert (dead["subscription"], dead["message_id"], dead["exchange"]) == ("dead", first["message_id"], "dlx")
    (death,) = dead["headers"]["x-death"]
    assert death["reason"] == "rejected"
    # When it died, by the wall clock (the engine's own is monotonic), in published_at's form.
    died = datetime.strptime(death["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert abs(died - time.time()) < 60
    assert runtime.broker.queue_counts("q").messages_ready == 0


async def test_round_robin_between_two_subscribers(connect: Connect, runtime: Runtime) -> None:
    await declare_queue("q")
    first, second = await connect(), await connect()
    await subscribe(first, "a", "q")
    await subscribe(second, "b", "q")
    for n in range(4):
        await publish(runtime, "", "q", n)
    assert [m["body"] for m in await receive_all(first, 2)] == [0, 2]
    assert [m["body"] for m in await receive_all(second, 2)] == [1, 3]


async def test_prefetch_holds_deliveries_until_ack(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    await subscribe(ws, "s1", "q", ack="client", prefetch=2)
    for n in range(5):
        await publish(runtime, "", "q", n)
    batch = await receive_all(ws, 2)
    assert [m["body"] for m in batch] == [0, 1]
    assert await silent(ws)
    assert runtime.broker.queue_counts("q").messages_ready == 3
    await send(ws, {"type": "ack", "delivery_tag": batch[0]["delivery_tag"]})
    assert (await receive(ws))["body"] == 2
    assert await silent(ws)


async def test_a_dropped_connection_gives_its_messages_to_another(connect: Connect, runtime: Runtime) -> None:
    await declare_queue("q")
    first, second = await connect(), await connect()
    await subscribe(first, "a", "q", ack="client", prefetch=2)
    for n in range(2):
        await publish(runtime, "", "q", n)
    held = await receive_all(first, 2)
    await subscribe(second, "b", "q", ack="client")
    assert await silent(second)
    await first.disconnect()
    again = await receive_all(second, 2)
    assert [m["message_id"] for m in again] == [m["message_id"] for m in held]
    assert all(m["redelivered"] is True and m["subscription"] == "b" for m in again)


async def test_messages_are_sent_one_frame_each_in_order(ws: WebsocketCommunicator, runtime: Runtime) -> None:
    await declare_queue("q")
    await subscribe(ws, "s1", "q")
    for n in range(50):
        await publish(runtime, "", "q", n, persistent=False)
    messages = await receive_all(ws, 50)
    assert [m["body"] for m in messages] == list(range(50))
    assert [m["delivery_tag"] for m in messages] == sorted(m["delivery_tag"] for m in messages)


async def test_an_auto_ack_subscription_over_its_credit_gets_the_rest_as_its_frames_are_written(
    connect: Connect, runtime: Runtime
) -> None:
    """The router sends a subscription to a named queue no more than its connection's
    credit; the session gives the credit back as its frames leave, and the queue drains."""
    body = "x" * 1000
    runtime.broker.credit = 5 * (len(body) + 300)  # about five deliveries, for new connections
    await declare_queue("q")
    for n in range(40):
        await publish(runtime, "", "q", f"{n} {body}")
    client = await connect()
    await subscribe(client, "s1", "q", ack="auto")
    got = [await receive(client) for _ in range(40)]
    assert [int(m["body"].split(" ", 1)[0]) for m in got] == list(range(40))
    assert runtime.queue_counts(["q"])["q"].messages_ready == 0
