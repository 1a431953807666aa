"""Every operation of the asyncio and synchronous clients against the real broker process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import FAST_BACKOFF, unique
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from pubsub_client import (
    Backoff,
    BrokerError,
    Client,
    ConnectionFailed,
    Event,
    EventKind,
    Forbidden,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    SubscriptionCancelled,
    SyncClient,
    Unauthorized,
    connect,
)
from tests.e2e.harness import BrokerProcess, free_port
from tests.eventually import eventually

pytestmark = pytest.mark.e2e


async def test_exchanges_declare_inspect_list_delete(client: Client) -> None:
    name = unique("ex")
    declared = await client.declare_exchange(name, "topic")
    assert (declared.name, declared.type, declared.durable) == (name, "topic", True)
    assert await client.declare_exchange(name, "topic") == declared  # identical: accepted again

    with pytest.raises(PreconditionFailed) as conflict:
        await client.declare_exchange(name, "fanout")
    assert (conflict.value.code, conflict.value.status) == ("precondition_failed", 409)
    with pytest.raises(Forbidden) as reserved:
        await client.declare_exchange("amq.mine", "direct")
    assert reserved.value.code == "forbidden"
    with pytest.raises(InvalidRequest) as invalid:
        await client.declare_exchange("bad name!", "direct")
    assert invalid.value.code == "invalid" and "name" in invalid.value.fields

    assert name in {e.name for e in await client.exchanges()}
    assert (await client.exchange(name)).bindings == ()
    await client.delete_exchange(name)
    with pytest.raises(NotFound) as missing:
        await client.exchange(name)
    assert (missing.value.code, missing.value.status) == ("not_found", 404)
    assert isinstance(missing.value, BrokerError)


async def test_queues_declare_counts_get_purge_delete(client: Client) -> None:
    name = unique("q")
    queue = await client.declare_queue(name, durable=False, arguments={"max_length": 100})
    assert (queue.name, queue.durable, queue.messages, queue.arguments["max_length"]) == (name, False, 0, 100)
    generated = await client.declare_queue("")
    assert generated.name.startswith("amq.gen-")

    for n in range(4):
        await client.publish("", {"n": n}, routing_key=name)
    counts = await client.queue(name)
    assert (counts.messages, counts.messages_ready, counts.messages_unacknowledged) == (4, 4, 0)
    assert {q.name: q.messages for q in await client.queues()}[name] == 4

    assert [q.name for q in await client.queues(name=name.upper())] == [name]  # a part of the name, any case

    peeked = await client.get(name, count=1, ack=False)
    assert [m.body for m in peeked] == [{"n": 0}] and not peeked[0].redelivered
    taken = await client.get(name, count=2)
    assert [m.body for m in taken] == [{"n": 0}, {"n": 1}]
    assert taken[0].redelivered and taken[0].message_id == peeked[0].message_id
    assert (await client.purge_queue(name)) == 2
    assert (await client.queue(name)).messages == 0

    await client.delete_queue(name)
    await client.delete_queue(generated.name)
    with pytest.raises(NotFound):
        await client.delete_queue(name)


async def test_bindings_bind_list_unbind(client: Client) -> None:
    exchange, queue = unique("ex"), unique("q")
    await client.declare_exchange(exchange, "direct")
    await client.declare_queue(queue)
    binding = await client.bind(exchange, queue, "red")
    assert (binding.exchange, binding.queue, binding.binding_key) == (exchange, queue, "red")
    assert await client.bindings(exchange=exchange) == [binding]
    assert (await client.exchange(exchange)).bindings == (binding,)

    assert (await client.publish(exchange, "r", routing_key="red")).routed == 1
    assert (await client.publish(exchange, "g", routing_key="green")).routed == 0

    await client.delete_binding(binding)
    assert await client.bindings(queue=queue) == []
    assert (await client.publish(exchange, "r", routing_key="red")).routed == 0


async def test_an_exchange_bound_to_an_exchange(client: Client) -> None:
    source, destination, queue = unique("ex"), unique("ex"), unique("q")
    await client.declare_exchange(source, "topic")
    await client.declare_exchange(destination, "fanout")
    await client.declare_queue(queue)
    await client.bind(destination, queue)
    binding = await client.bind_exchange(source, destination, "eu.*")
    assert (binding.exchange, binding.queue, binding.destination_exchange) == (source, None, destination)
    assert await client.bindings(destination_exchange=destination) == [binding]

    assert (await client.publish(source, "m", routing_key="eu.new")).routed == 1
    assert (await client.publish(source, "m", routing_key="us.new")).routed == 0
    await client.delete_binding(binding)
    assert (await client.publish(source, "m", routing_key="eu.new")).routed == 0


async def test_publish_confirms_keep_the_message_id_and_errors_are_final(client: Client) -> None:
    queue = unique("q")
    await client.declare_queue(queue)
    result = await client.publish("", {"a": 1}, routing_key=queue, headers={"x-trace": "t1"}, message_id="m-1")
    assert (result.message_id, result.routed) == ("m-1", 1)
    [message] = await client.get(queue)
    assert (message.message_id, message.body, message.headers, message.persistent) == ("m-1", {"a": 1},
                                                                                        {"x-trace": "t1"}, True)

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NotFound) as missing:
        await client.publish(unique("nowhere"), 1)
    assert missing.value.code == "not_found"
    assert loop.time() - started < 2  # not retried: only `unavailable` is


async def test_fire_and_forget_publish_and_its_error_as_an_event(broker: BrokerProcess) -> None:
    events: list[Event] = []
    queue = unique("q")
    async with connect(broker.url, on_event=events.append) as client:
        await client.declare_queue(queue)
        message_id = await client.publish_nowait("", "fire", routing_key=queue)
        await client.publish_nowait(unique("nowhere"), "lost")
        assert await client.ping() < 5  # the broker read both frames before this one

        async def stored_and_refused() -> bool:
            return (await client.queue(queue)).messages == 1 and any(e.kind is EventKind.ERROR for e in events)

        await eventually(stored_and_refused, interval=0.05, what="the message stored and the error event")
        [message] = await client.get(queue)
        assert message.message_id == message_id
        [error] = [e.error for e in events if e.kind is EventKind.ERROR]
        assert isinstance(error, NotFound)
    assert events[0].kind is EventKind.CONNECTED


async def test_consume_a_queue_with_client_acks_prefetch_and_nack(client: Client) -> None:
    queue = unique("q")
    await client.declare_queue(queue)
    for n in range(5):
        await client.publish("", n, routing_key=queue)

    async with client.consume(queue, prefetch=2) as messages:
        first, second = await messages.next(5), await messages.next(5)
        assert first is not None and second is not None
        assert (first.body, second.body) == (0, 1)
        assert await messages.next(0.3) is None  # prefetch 2: the third waits for an ack
        assert (await client.queue(queue)).messages_unacknowledged == 2

        await first.nack(requeue=True)
        again = await messages.next(5)
        assert again is not None and (again.body, again.redelivered) == (0, True)
        await again.ack()
        await second.ack()
        rest = []
        async for message in messages:
            rest.append(message.body)
            await message.ack()
            if len(rest) == 3:
                break
        assert rest == [2, 3, 4]

    async def settled_and_gone() -> bool:
        counts = await client.queue(queue)
        return (counts.messages, counts.consumers) == (0, 0)

    await eventually(settled_and_gone, interval=0.05, what="the queue empty and without consumers")


async def test_unacknowledged_messages_return_when_the_subscription_ends(client: Client) -> None:
    queue = unique("q")
    await client.declare_queue(queue)
    await client.publish("", "keep", routing_key=queue)
    subscription = await client.subscribe(queue)
    delivery = await subscription.next(5)
    assert delivery is not None and delivery.body == "keep"
    await subscription.cancel()
    assert await subscription.next(0.1) is None  # ended
    [back] = await client.get(queue)
    assert (back.body, back.redelivered) == ("keep", True)


async def test_auto_ack_mode_needs_no_acks(client: Client) -> None:
    queue = unique("q")
    await client.declare_queue(queue)
    async with client.consume(queue, ack="auto") as messages:
        await client.publish("", "a", routing_key=queue)
        delivery = await messages.next(5)
        assert delivery is not None and delivery.settled
        await delivery.ack()  # nothing to do in auto mode
        assert (await client.queue(queue)).messages == 0


async def test_consume_an_exchange_with_a_binding_key(client: Client) -> None:
    exchange = unique("news")
    await client.declare_exchange(exchange, "topic")
    async with client.consume(exchange=exchange, binding_key="sports.#") as messages:
        assert messages.queue.startswith("amq.gen-")
        assert (await client.publish(exchange, "goal", routing_key="sports.football")).routed == 1
        assert (await client.publish(exchange, "rain", routing_key="weather.today")).routed == 0
        delivery = await messages.next(5)
        assert delivery is not None and (delivery.body, delivery.routing_key) == ("goal", "sports.football")
        await delivery.ack()
        private = messages.queue

    async def private_queue_gone() -> bool:  # the private queue goes with its subscription
        return private not in {q.name for q in await client.queues()}

    await eventually(private_queue_gone, interval=0.05, what="the private queue deleted with its subscription")


async def test_subscription_errors_carry_the_broker_code(client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        await client.subscribe(unique("absent"))
    assert missing.value.code == "not_found"

    queue = unique("q")
    await client.declare_queue(queue)
    subscription = await client.subscribe(queue)
    await client.delete_queue(queue)
    with pytest.raises(SubscriptionCancelled):
        await subscription.next(5)


def test_sync_client_does_every_kind_of_operation(broker: BrokerProcess) -> None:
    exchange, queue = unique("ex"), unique("q")
    with SyncClient(broker.url, backoff=FAST_BACKOFF) as client:
        client.declare_exchange(exchange, "fanout")
        client.declare_queue(queue)
        client.bind(exchange, queue)
        assert client.publish(exchange, {"n": 1}).routed == 1
        client.publish_nowait(exchange, {"n": 2})
        assert client.ping() < 5
        with client.consume(queue, prefetch=10) as messages:
            got = []
            for message in messages:
                got.append(message.body)
                message.ack()
                if len(got) == 2:
                    break
        assert got == [{"n": 1}, {"n": 2}]
        assert client.queue(queue).messages == 0
        client.publish(exchange, "x")
        assert [m.body for m in client.get(queue, count=5)] == ["x"]
        assert client.purge_queue(queue) == 0
        assert {b.queue for b in client.bindings(exchange=exchange)} == {queue}
        client.delete_queue(queue)
        client.delete_exchange(exchange)
        with pytest.raises(NotFound):
            client.queue(queue)


async def test_the_token_goes_on_every_http_request_and_the_websocket_handshake() -> None:
    """A stand-in server records the Authorization header of each request it sees."""
    seen: list[tuple[str, str | None]] = []

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        seen.append((request.path, request.headers.get("Authorization")))
        if request.path.startswith("/api/"):
            return connection.respond(200, "[]")
        return None

    async def handler(connection: ServerConnection) -> None:
        async for frame in connection:
            if '"ping"' in str(frame):
                await connection.send(f'{{"type": "pong", "id": "{_frame_id(str(frame))}"}}')

    port = free_port()
    async with serve(handler, "127.0.0.1", port, process_request=process_request):
        async with connect(f"http://127.0.0.1:{port}", token="s3cret") as client:
            assert await client.queues() == []
            await client.ping()
    assert seen == [("/ws", "Bearer s3cret"), ("/api/queues/", "Bearer s3cret")]


def _frame_id(frame: str) -> Any:
    return json.loads(frame)["id"]


async def test_unavailable_on_a_publish_is_retried_with_the_same_message_id() -> None:
    """A cluster failing over answers `unavailable`: the client sends the same message again."""
    received: list[dict[str, Any]] = []

    async def handler(connection: ServerConnection) -> None:
        async for text in connection:
            frame = json.loads(text)
            received.append(frame)
            if len(received) == 1:
                await connection.send(json.dumps({"type": "error", "id": frame["id"], "code": "unavailable",
                                                  "message": "failing over"}))
            else:
                await connection.send(json.dumps({"type": "confirm", "id": frame["id"],
                                                  "message_id": frame["message_id"], "routed": 1}))

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        async with connect(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            result = await client.publish("x", "body", message_id="once")
    assert (result.message_id, result.routed) == ("once", 1)
    assert [f["message_id"] for f in received] == ["once", "once"]


async def test_after_max_attempts_the_client_gives_up_and_says_so() -> None:
    events: list[Event] = []
    kinds: list[str] = []

    async def handler(connection: ServerConnection) -> None:
        async for raw in connection:
            kinds.append(json.loads(raw)["type"])  # never confirms

    port = free_port()
    async with serve(handler, "127.0.0.1", port) as server:
        client = await connect(f"http://127.0.0.1:{port}", on_event=events.append,
                               backoff=Backoff(initial=0.01, maximum=0.02, max_attempts=2))
        publishing = asyncio.create_task(client.publish("x", "body"))
        await eventually(lambda: "publish" in kinds, what="the publish at the broker")
        server.close()  # the broker goes away and does not come back
    with pytest.raises(ConnectionFailed):
        await asyncio.wait_for(publishing, 5)
    assert [e.kind for e in events] == [EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.GAVE_UP]
    await client.close()


async def test_queues_and_exchanges_by_name_read_every_page(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pubsub_client.http.PAGE_SIZE", 2)
    prefix = unique("paged")
    names = sorted(f"{prefix}.{n}" for n in range(5))
    for name in names:
        await client.declare_queue(name, durable=False)
        await client.declare_exchange(name, "fanout", durable=False)
    assert [q.name for q in await client.queues(name=prefix)] == names
    assert [x.name for x in await client.exchanges(name=prefix.upper())] == names
    assert await client.queues(name=f"{prefix}.none") == []


async def test_a_token_the_broker_refuses_fails_the_calls_and_is_not_tried_again(tmp_path: Any) -> None:
    """The broker accepts the handshake, sends `unauthorized` and closes with 4401: the client
    gives up (a publish raises `Unauthorized`) instead of reconnecting for ever."""
    process = BrokerProcess(tmp_path, extra_env={"BROKER_ALLOW_ANONYMOUS": "false"})
    process.start()
    events: list[Event] = []
    try:
        client = Client(process.url, token="not-a-token", backoff=FAST_BACKOFF, on_event=events.append)
        try:
            await client.open()
            with pytest.raises(Unauthorized):
                await client.publish("amq.topic", "x", timeout=5)
            await asyncio.sleep(0.5)
            assert [e.kind for e in events if e.kind is EventKind.RECONNECTED] == []
            assert [e.kind for e in events if e.kind is EventKind.GAVE_UP] == [EventKind.GAVE_UP]
            with pytest.raises(Unauthorized):  # at once, without dialling again
                await client.publish("amq.topic", "y", timeout=5)
            assert [e.kind for e in events if e.kind is EventKind.CONNECTED] == [EventKind.CONNECTED]
        finally:
            await client.close()
    finally:
        process.close()
