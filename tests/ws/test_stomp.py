"""STOMP over /ws (docs/protocol.md, "STOMP"): versions, credentials, SEND and its
receipts, the ack modes, transactions, temp queues, heart-beats and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async

from broker.engine.jsoncodec import dumps
from broker.protocol.publish import PublishRequest
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
from queues.models import Queue
from tests.access.helpers import make_user, session_key
from tests.eventually import eventually
from tests.ws.conftest import Connect
from tests.ws.helpers import declare_binding, declare_exchange, declare_queue, receive, subscribe
from tests.ws.stomp_helpers import StompClient, text

pytestmark = pytest.mark.django_db(transaction=True)

Open = Callable[..., Awaitable[StompClient]]


@pytest.fixture
async def stomp(runtime: Runtime) -> AsyncIterator[Open]:
    """Open STOMP clients, CONNECTed unless `connect=False`; closed afterwards."""
    opened: list[StompClient] = []

    async def open_client(
        subprotocol: str | None = "v12.stomp", *, connect: bool = True, headers: list[tuple[bytes, bytes]] | None = None,
        **connect_headers: str,
    ) -> StompClient:
        client = StompClient(subprotocol, headers)
        await client.open()
        opened.append(client)
        if connect:
            frame = await client.connect(**connect_headers)
            assert frame.command == "CONNECTED", frame
        return client

    yield open_client
    for client in opened:
        await client.close()


user_with = database_sync_to_async(make_user)


@database_sync_to_async
def builtin_topic_exchange() -> None:
    """amq.topic, as the migrations make it (a transactional test's flush drops it)."""
    Exchange.objects.get_or_create(name="amq.topic", defaults={"type": "topic"})


def counts(runtime: Runtime, queue: str) -> tuple[int, int]:
    found = runtime.broker.queue_counts(queue)
    return found.messages_ready, found.messages_unacknowledged


# -- connecting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subprotocol", "accept", "version"),
    [("v12.stomp", "1.0,1.1,1.2", "1.2"), ("v11.stomp", "1.1", "1.1"), ("v10.stomp", None, "1.0")],
)
async def test_the_subprotocol_is_accepted_and_the_best_common_version_chosen(
    stomp: Open, subprotocol: str, accept: str | None, version: str
) -> None:
    client = await stomp(subprotocol, connect=False)
    assert client.subprotocol == subprotocol
    headers = {"host": "/"} if accept is None else {"accept-version": accept}
    await client.send("CONNECT", headers)
    connected = await client.receive()
    assert connected.command == "CONNECTED"
    assert connected.headers["version"] == version
    assert connected.headers["server"].startswith("pubsub-broker")


async def test_no_common_version_is_an_error_naming_ours(stomp: Open) -> None:
    client = await stomp(connect=False)
    error = await client.connect(**{"accept-version": "2.0"})
    assert error.command == "ERROR"
    assert error.headers["version"] == "1.0,1.1,1.2"
    assert await client.closed()


async def test_a_frame_before_connect_is_an_error(stomp: Open) -> None:
    client = await stomp(connect=False)
    await client.send("SEND", {"destination": "/queue/q", "receipt": "r1"}, "x")
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "invalid", "r1")
    assert await client.closed()


async def test_login_and_token_connect_and_bad_credentials_are_refused(stomp: Open, settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False
    _, token = await user_with("alice", superuser=True)
    client = await stomp(login="alice", passcode=token)
    assert client.subprotocol == "v12.stomp"
    for login, passcode in (("alice", "wrong"), ("bob", token), ("", "")):
        refused = await stomp(connect=False)
        headers = {"login": login, "passcode": passcode} if passcode else {}
        error = await refused.connect(**headers)
        assert (error.command, error.headers["code"]) == ("ERROR", "unauthorized"), (login, passcode)
        assert await refused.closed()


async def test_the_websockets_own_token_serves_when_connect_has_no_login(stomp: Open, settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False
    _, token = await user_with("carol", superuser=True)
    client = await stomp(headers=[(b"authorization", f"Token {token}".encode())])
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/queue/x", "receipt": "r"})
    assert (await client.receive()).headers["receipt-id"] == "r"


async def test_the_session_cookie_serves_when_connect_has_no_login(stomp: Open, settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False
    user, _ = await user_with("erin", superuser=True)
    key = await database_sync_to_async(session_key)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={key}".encode()
    client = await stomp(headers=[(b"cookie", cookie)])
    await client.send("SEND", {"destination": "/queue/by-cookie", "receipt": "r"}, "x")
    assert (await client.receive()).headers["receipt-id"] == "r"


async def test_permissions_are_the_json_frames_own(stomp: Open, runtime: Runtime) -> None:
    await declare_exchange("allowed", "topic")
    await declare_exchange("secret", "topic")
    _, token = await user_with("dave", configure="", write="allowed", read="allowed")
    client = await stomp(login="dave", passcode=token)
    await client.send("SEND", {"destination": "/exchange/allowed/k", "receipt": "ok"}, "x")
    assert (await client.receive()).headers["receipt-id"] == "ok"
    await client.send("SEND", {"destination": "/exchange/secret/k", "receipt": "no"}, "x")
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "forbidden", "no")
    assert "secret" in error.headers["message"]
    assert await client.closed()


async def test_a_queue_s_dead_letter_exchange_needs_write_on_it(stomp: Open, runtime: Runtime) -> None:
    """A SEND's headers may declare its `/queue/` queue with a dead-letter exchange: the
    queue would publish there, so, as RabbitMQ, that needs write on it."""
    writes = r"erin\..*|amq\.default"  # a SEND to /queue/ publishes to the default exchange
    _, token = await user_with("erin", configure=r"erin\..*", write=writes, read=r"erin\..*")
    client = await stomp(login="erin", passcode=token)
    headers = {"destination": "/queue/erin.q", "x-dead-letter-exchange": "amq.direct", "receipt": "no"}
    await client.send("SEND", headers, "x")
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "forbidden", "no")
    assert "amq.direct" in error.headers["message"]
    assert not await database_sync_to_async(Queue.objects.filter(name="erin.q").exists)()
    client = await stomp(login="erin", passcode=token)
    await client.send("SEND", {**headers, "x-dead-letter-exchange": "erin.dlx", "receipt": "yes"}, "x")
    assert (await client.receive()).headers["receipt-id"] == "yes"


# -- publishing and consuming ------------------------------------------------------


async def test_send_to_a_queue_declares_it_and_receipts_once_committed(stomp: Open, runtime: Runtime) -> None:
    client = await stomp()
    await client.send("SEND", {"destination": "/queue/orders", "persistent": "true", "receipt": "r1"}, '{"id": 1}')
    assert (await client.receive()).headers == {"receipt-id": "r1"}
    queue = await database_sync_to_async(Queue.objects.get)(name="orders")
    assert (queue.durable, queue.auto_delete) == (True, False)
    stored = await database_sync_to_async(lambda: queue.stored_messages.count())()
    assert stored == 1  # committed before the receipt
    assert counts(runtime, "orders") == (1, 0)


async def test_bodies_and_headers_cross_to_json_subscribers_and_back(
    stomp: Open, connect: Connect, runtime: Runtime
) -> None:
    await declare_queue("mixed")
    json_client = await connect()
    await subscribe(json_client, "j", "mixed")
    client = await stomp()
    await client.send("SEND", {"destination": "/amq/queue/mixed", "colour": "blue"}, '{"n": [1, 2]}')
    await client.send("SEND", {"destination": "/amq/queue/mixed", "content-type": "text/plain"}, "héllo")
    await client.send("SEND", {"destination": "/amq/queue/mixed", "content-type": "image/png"}, b"\x89PNG\x00\xff")
    first, second, third = [await receive(json_client) for _ in range(3)]
    assert (first["body"], first["headers"]) == ({"n": [1, 2]}, {"colour": "blue"})
    assert (second["body"], second["headers"]) == ("héllo", {"content-type": "text/plain", "body-encoding": "text"})
    assert (third["body"], third["headers"]) == ("iVBORwD/", {"content-type": "image/png", "body-encoding": "base64"})
    assert first["persistent"] is False  # STOMP's default, as RabbitMQ's

    # ... and back: every body as it was sent, and a JSON publisher's body as JSON.
    await json_client.send_json_to({"type": "unsubscribe", "id": "j"})
    await receive(json_client)
    for message in (first, second, third):
        request = PublishRequest("", "mixed", dumps(message["body"]), message["headers"], False, None)
        await runtime.publish(request)
    await runtime.publish(PublishRequest("", "mixed", dumps({"json": True}), {"n": 5}, True, None))
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/amq/queue/mixed"})
    frames = [await client.receive() for _ in range(4)]
    assert [frame.body for frame in frames] == [b'{"n":[1,2]}', "héllo".encode(), b"\x89PNG\x00\xff", b'{"json":true}']
    assert [frame.headers.get("content-type") for frame in frames] == [
        "application/json", "text/plain", "image/png", "application/json"
    ]
    assert "body-encoding" not in frames[1].headers
    assert frames[0].headers["colour"] == "blue" and frames[3].headers["n"] == "5"
    assert frames[3].headers["persistent"] == "true" and frames[0].headers["redelivered"] == "false"
    assert frames[0].headers["destination"] == "/queue/mixed"
    assert isinstance(client.raw[-2], bytes) and isinstance(client.raw[-1], str)  # binary body: a binary frame


async def test_destinations_route_as_rabbitmqs(stomp: Open, runtime: Runtime) -> None:
    await declare_exchange("events", "direct")
    await builtin_topic_exchange()
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "t", "destination": "/topic/a.*", "receipt": "1"})
    await client.send("SUBSCRIBE", {"id": "e", "destination": "/exchange/events/created", "receipt": "2"})
    await client.send("SUBSCRIBE", {"id": "q", "destination": "/queue/work", "receipt": "3"})
    assert [(await client.receive()).headers["receipt-id"] for _ in range(3)] == ["1", "2", "3"]
    await client.send("SEND", {"destination": "/topic/a.b"}, "topic")
    await client.send("SEND", {"destination": "/exchange/events/created"}, "event")
    await client.send("SEND", {"destination": "/exchange/events/deleted"}, "unrouted")
    await client.send("SEND", {"destination": "/queue/work"}, "work")
    got = {(await client.receive()).headers["subscription"]: None for _ in range(3)}
    assert set(got) == {"t", "e", "q"}
    assert await client.nothing()


async def test_client_ack_settles_every_earlier_delivery_of_its_subscription(stomp: Open, runtime: Runtime) -> None:
    await declare_queue("c")
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/amq/queue/c", "ack": "client", "prefetch-count": "10"})
    for n in range(3):
        await runtime.publish(PublishRequest("", "c", dumps(n), {}, True, None))
    frames = [await client.receive() for _ in range(3)]
    assert counts(runtime, "c") == (0, 3)
    await client.send("ACK", {"id": frames[1].headers["ack"], "receipt": "a"})
    assert (await client.receive()).headers["receipt-id"] == "a"
    assert counts(runtime, "c") == (0, 1)
    await client.send("ACK", {"id": frames[2].headers["ack"]})
    await client.send("DISCONNECT", {"receipt": "bye"})
    assert (await client.receive()).headers["receipt-id"] == "bye"
    assert await client.closed()
    assert counts(runtime, "c") == (0, 0)


async def test_client_individual_ack_and_nack(stomp: Open, runtime: Runtime) -> None:
    await declare_queue("ci")
    client = await stomp()
    await client.send(
        "SUBSCRIBE", {"id": "s", "destination": "/amq/queue/ci", "ack": "client-individual", "prefetch-count": "2"}
    )
    for n in range(3):
        await runtime.publish(PublishRequest("", "ci", dumps(n), {}, True, None))
    one, two = await client.receive(), await client.receive()
    assert await client.nothing()  # prefetch-count 2
    await client.send("ACK", {"id": two.headers["ack"]})
    three = await client.receive()
    assert text(three) == "2"
    await client.send("NACK", {"id": one.headers["ack"]})  # requeued, to the head
    again = await client.receive()
    assert (text(again), again.headers["redelivered"], again.headers["x-delivery-count"]) == ("0", "true", "1")
    assert "x-delivery-count" not in one.headers
    await client.send("NACK", {"id": again.headers["ack"], "requeue": "false", "receipt": "n"})
    assert (await client.receive()).headers["receipt-id"] == "n"
    assert counts(runtime, "ci") == (0, 1)


async def test_ack_of_an_unknown_delivery_is_an_error(stomp: Open) -> None:
    client = await stomp()
    await client.send("ACK", {"id": "99", "receipt": "x"})
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "precondition_failed", "x")
    assert (await client.receive_output())["type"] == "websocket.close"  # nothing after the ERROR, no RECEIPT


async def test_a_transaction_applies_its_sends_and_acks_at_commit(stomp: Open, runtime: Runtime) -> None:
    await declare_queue("tx")
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/amq/queue/tx", "ack": "client-individual"})
    await client.send("BEGIN", {"transaction": "t1"})
    await client.send("SEND", {"destination": "/amq/queue/tx", "transaction": "t1"}, "dropped")
    await client.send("ABORT", {"transaction": "t1", "receipt": "aborted"})
    assert (await client.receive()).headers["receipt-id"] == "aborted"
    assert await client.nothing()
    await client.send("BEGIN", {"transaction": "t2"})
    for body in ("one", "two"):
        await client.send("SEND", {"destination": "/amq/queue/tx", "transaction": "t2", "persistent": "true"}, body)
    assert await client.nothing()
    await client.send("COMMIT", {"transaction": "t2", "receipt": "committed"})
    frames = [await client.receive() for _ in range(3)]
    assert [frame.command for frame in frames] == ["MESSAGE", "MESSAGE", "RECEIPT"]
    assert [text(frame) for frame in frames[:2]] == ["one", "two"]
    await client.send("BEGIN", {"transaction": "t3"})
    await client.send("ACK", {"id": frames[0].headers["ack"], "transaction": "t3"})
    await asyncio.sleep(0.05)
    assert counts(runtime, "tx") == (0, 2)  # the ACK waits for the COMMIT
    await client.send("COMMIT", {"transaction": "t3", "receipt": "c3"})
    assert (await client.receive()).headers["receipt-id"] == "c3"
    assert counts(runtime, "tx") == (0, 1)
    await client.send("COMMIT", {"transaction": "t3"})
    error = await client.receive()
    assert (error.command, error.headers["code"]) == ("ERROR", "not_found")


async def test_receipts_of_frames_in_a_transaction_come_once_they_are_held_and_after_an_abort_too(
    stomp: Open, runtime: Runtime
) -> None:
    await declare_queue("tx")
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/amq/queue/tx", "ack": "client-individual"})
    await client.send("SEND", {"destination": "/amq/queue/tx"}, "m")
    message = await client.receive()
    await client.send("BEGIN", {"transaction": "t"})
    await client.send("SEND", {"destination": "/amq/queue/tx", "transaction": "t", "receipt": "sent"}, "dropped")
    await client.send("ACK", {"id": message.headers["ack"], "transaction": "t", "receipt": "acked"})
    assert [(await client.receive()).headers["receipt-id"] for _ in range(2)] == ["sent", "acked"]
    await client.send("ABORT", {"transaction": "t", "receipt": "aborted"})
    assert (await client.receive()).headers["receipt-id"] == "aborted"
    assert await client.nothing()
    assert counts(runtime, "tx") == (0, 1)  # neither the SEND nor the ACK was carried out


async def test_an_error_of_a_frame_a_commit_carries_out_names_the_commit_s_receipt(stomp: Open) -> None:
    client = await stomp()
    await client.send("BEGIN", {"transaction": "t"})
    await client.send("SEND", {"destination": "/exchange/nowhere", "transaction": "t", "receipt": "sent"}, "x")
    assert (await client.receive()).headers["receipt-id"] == "sent"
    await client.send("COMMIT", {"transaction": "t", "receipt": "committed"})
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "not_found", "committed")


async def test_a_commit_refused_for_a_missing_exchange_carries_out_none_of_its_frames(
    stomp: Open, runtime: Runtime
) -> None:
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/queue/tq", "receipt": "sub"})
    assert (await client.receive()).headers["receipt-id"] == "sub"
    await client.send("BEGIN", {"transaction": "t1"})
    await client.send("SEND", {"destination": "/queue/tq", "transaction": "t1"}, "one")
    await client.send("SEND", {"destination": "/exchange/nope/k", "transaction": "t1"}, "two")
    await client.send("COMMIT", {"transaction": "t1", "receipt": "c1"})
    error = await client.receive()  # no MESSAGE "one" before it
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "not_found", "c1")
    assert await client.closed()
    assert counts(runtime, "tq") == (0, 0)


async def test_a_commit_refused_for_an_unknown_delivery_carries_out_none_of_its_frames(
    stomp: Open, runtime: Runtime
) -> None:
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/queue/tk", "ack": "client-individual"})
    await client.send("SEND", {"destination": "/queue/tk"}, "first")
    message = await client.receive()
    await client.send("BEGIN", {"transaction": "t"})
    await client.send("ACK", {"id": message.headers["ack"], "transaction": "t"})
    await client.send("SEND", {"destination": "/queue/tk", "transaction": "t"}, "second")
    await client.send("ACK", {"id": message.headers["ack"], "transaction": "t"})  # settled by the first
    await client.send("COMMIT", {"transaction": "t", "receipt": "c"})
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "precondition_failed", "c")
    assert await client.closed()
    await eventually(lambda: counts(runtime, "tk") == (1, 0), what="the first message requeued, alone")


@pytest.mark.parametrize("mode", ["client", "client-individual"])
async def test_a_commit_refuses_an_ack_of_a_delivery_its_unsubscribe_gave_back(
    stomp: Open, runtime: Runtime, mode: str
) -> None:
    """The UNSUBSCRIBE requeued the message: its delivery tag names nothing the client may
    settle, and the COMMIT is refused before its SEND is carried out."""
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/queue/ru", "ack": mode})
    await client.send("SEND", {"destination": "/queue/ru"}, "m")
    message = await client.receive()
    await client.send("UNSUBSCRIBE", {"id": "s", "receipt": "gone"})
    assert (await client.receive()).headers["receipt-id"] == "gone"
    await client.send("BEGIN", {"transaction": "t"})
    await client.send("SEND", {"destination": "/queue/ru2", "transaction": "t"}, "x")
    await client.send("ACK", {"id": message.headers["ack"], "transaction": "t"})
    await client.send("COMMIT", {"transaction": "t", "receipt": "c"})
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "precondition_failed", "c")
    assert error.headers["message"] == f"unknown delivery tag {message.headers['ack']}"
    assert await client.closed()
    assert counts(runtime, "ru") == (1, 0)
    assert not await database_sync_to_async(Queue.objects.filter(name="ru2").exists)()  # not even declared


@pytest.mark.parametrize(
    ("command", "headers", "code"),
    [
        ("SEND", {"destination": "/nowhere"}, "invalid"),
        ("SEND", {"destination": "/temp-queue/t"}, "invalid"),
        ("SEND", {"destination": "/queue/tx-h", "persistent": "maybe"}, "invalid"),
        ("SEND", {"destination": "/queue/tx-h", "reply-to": "/temp-queue/"}, "invalid"),
        ("SEND", {"destination": "/queue/tx-h", "x-max-length": "many"}, "invalid"),
        ("ACK", {"id": "one"}, "not_found"),
        ("NACK", {"id": "1", "requeue": "maybe"}, "invalid"),
        ("ACK", {}, "invalid"),
    ],
)
async def test_a_frame_refused_as_it_is_held_gets_its_error_at_once(
    stomp: Open, command: str, headers: dict[str, str], code: str
) -> None:
    client = await stomp()
    await client.send("BEGIN", {"transaction": "t"})
    await client.send(command, {**headers, "transaction": "t", "receipt": "held"}, "x" if command == "SEND" else "")
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", code, "held")


async def test_a_send_held_without_the_write_right_is_refused_at_once(stomp: Open, runtime: Runtime) -> None:
    await builtin_topic_exchange()
    _, token = await user_with("gil", configure=".*", write="", read=".*")
    client = await stomp(login="gil", passcode=token)
    await client.send("BEGIN", {"transaction": "t"})
    await client.send("SEND", {"destination": "/topic/x", "transaction": "t", "receipt": "held"}, "x")
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "forbidden", "held")


async def test_a_send_held_with_a_temp_queue_reply_to_needs_its_right_at_once(
    stomp: Open, runtime: Runtime
) -> None:
    """Read on amq.default, as outside a transaction: refused as it is held, not at COMMIT."""
    await declare_queue("rpc")
    _, token = await user_with("nick", configure="", write=r"amq\.default", read="rpc")
    client = await stomp(login="nick", passcode=token)
    await client.send("BEGIN", {"transaction": "t"})
    headers = {"destination": "/queue/rpc", "reply-to": "/temp-queue/answers", "transaction": "t", "receipt": "held"}
    await client.send("SEND", headers, "x")
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "forbidden", "held")
    assert "read permission on exchange 'amq.default'" in error.headers["message"]
    assert await client.closed()


async def test_configure_on_a_sent_to_queue_is_checked_by_the_commit_before_any_frame(
    stomp: Open, runtime: Runtime
) -> None:
    """Whether it is needed depends on the queue existing when the COMMIT declares it."""
    await declare_queue("open")
    _, token = await user_with("cleo", configure="", write=r"amq\.default", read="")
    client = await stomp(login="cleo", passcode=token)
    await client.send("BEGIN", {"transaction": "t"})
    await client.send("SEND", {"destination": "/queue/open", "transaction": "t", "receipt": "exists"}, "x")
    await client.send("SEND", {"destination": "/queue/cleo-new", "transaction": "t", "receipt": "missing"}, "y")
    assert [(await client.receive()).headers["receipt-id"] for _ in range(2)] == ["exists", "missing"]
    await client.send("COMMIT", {"transaction": "t", "receipt": "c"})
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "forbidden", "c")
    assert await client.closed()
    assert counts(runtime, "open") == (0, 0)


async def test_temp_queue_reply_to_is_rewritten_and_replies_come_back(stomp: Open, runtime: Runtime) -> None:
    await declare_queue("rpc")
    server = await stomp()
    await server.send("SUBSCRIBE", {"id": "requests", "destination": "/amq/queue/rpc"})
    client = await stomp()
    await client.send("SEND", {"destination": "/amq/queue/rpc", "reply-to": "/temp-queue/answers"}, "ping")
    request = await server.receive()
    reply_to = request.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/amq.gen-")
    await server.send("SEND", {"destination": reply_to}, "pong")
    reply = await client.receive()
    assert (reply.headers["subscription"], text(reply)) == ("/temp-queue/answers", "pong")
    # The same temp queue serves the connection's later requests; it goes with the connection.
    await client.send("SEND", {"destination": "/amq/queue/rpc", "reply-to": "/temp-queue/answers"}, "again")
    assert (await server.receive()).headers["reply-to"] == reply_to
    await client.close()
    await asyncio.sleep(0.05)
    assert reply_to.removeprefix("/reply-queue/") not in runtime.broker.queues


def private_queues(runtime: Runtime) -> list[str]:
    return [name for name, state in runtime.broker.queues.items() if state.spec.exclusive_to is not None]


@pytest.mark.parametrize(
    ("frame", "headers"),
    [
        ("SUBSCRIBE", {"id": "s", "destination": "/temp-queue/answers"}),
        ("SEND", {"destination": "/queue/rpc", "reply-to": "/temp-queue/answers"}),
    ],
)
async def test_a_temp_queue_needs_read_on_the_default_exchange(
    stomp: Open, runtime: Runtime, frame: str, headers: dict[str, str]
) -> None:
    """It is the private queue a JSON subscription to the default exchange makes, and
    needs what that needs; without any right a client made them until MAX_QUEUES."""
    await declare_queue("rpc")
    _, token = await user_with("nora", configure="", write=r"amq\.default", read="rpc")
    client = await stomp(login="nora", passcode=token)
    await client.send(frame, {**headers, "receipt": "no"}, "x" if frame == "SEND" else "")
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "forbidden", "no")
    assert "read permission on exchange 'amq.default'" in error.headers["message"]
    assert private_queues(runtime) == [] and counts(runtime, "rpc") == (0, 0)  # the SEND was not carried out
    _, token = await user_with("olga", configure="", write=r"amq\.default", read=r"rpc|amq\.default")
    client = await stomp(login="olga", passcode=token)
    await client.send(frame, {**headers, "receipt": "yes"}, "x" if frame == "SEND" else "")
    assert (await client.receive()).headers["receipt-id"] == "yes"
    assert len(private_queues(runtime)) == 1


async def test_temp_queues_past_the_connection_s_share_are_limit_exceeded(stomp: Open, runtime: Runtime) -> None:
    runtime.broker.max_private_queues = 2  # MAX_PRIVATE_QUEUES_PER_CONNECTION
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "a", "destination": "/temp-queue/a", "receipt": "a"})
    await client.send("SEND", {"destination": "/queue/rpc", "reply-to": "/temp-queue/b", "receipt": "b"}, "x")
    assert [(await client.receive()).headers["receipt-id"] for _ in range(2)] == ["a", "b"]
    other = await stomp()  # each connection has its own share
    await other.send("SUBSCRIBE", {"id": "c", "destination": "/temp-queue/c", "receipt": "c"})
    assert (await other.receive()).headers["receipt-id"] == "c"
    await client.send("SUBSCRIBE", {"id": "d", "destination": "/temp-queue/d", "receipt": "d"})
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "limit_exceeded", "d")
    assert "MAX_PRIVATE_QUEUES_PER_CONNECTION" in error.headers["message"]
    assert await client.closed()  # as any ERROR; its private queues go with it, not the other's
    await eventually(lambda: len(private_queues(runtime)) == 1, what="the closed connection's private queues gone")


async def test_unsubscribe_answers_after_the_last_delivery(stomp: Open, runtime: Runtime) -> None:
    await declare_queue("u")
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/amq/queue/u"})
    await client.send("UNSUBSCRIBE", {"id": "s", "receipt": "gone"})
    assert (await client.receive()).headers["receipt-id"] == "gone"
    await runtime.publish(PublishRequest("", "u", dumps(1), {}, True, None))
    assert await client.nothing()
    assert counts(runtime, "u") == (1, 0)


# -- heart-beats -----------------------------------------------------------------------


async def test_heart_beats_are_negotiated_sent_and_expected(stomp: Open, settings: Any) -> None:
    settings.STOMP_HEARTBEAT_MS = 200
    client = await stomp(connect=False)
    connected = await client.connect(**{"heart-beat": "150,100"})
    assert connected.headers["heart-beat"] == "100,200"  # ours every 100 ms; theirs at least every 200
    beats = 0
    for _ in range(3):
        output = await client.receive_output(timeout=1)
        beats += output.get("text") == "\n"
    assert beats == 3
    # Silent for twice the interval: the server gives up on the client.
    error = await client.receive(timeout=2)
    assert (error.command, error.headers["code"]) == ("ERROR", "unavailable")
    assert await client.closed()


async def test_a_frame_between_two_heart_beats_does_not_stretch_the_silence_after_it(stomp: Open) -> None:
    """The next EOL comes within the interval of the last frame, wherever that frame fell:
    stomp.py gives up on a server silent for 1.5 intervals. (Looking once per interval for
    any frame since the last look let a frame sent just after a look stretch it to two.)"""
    client = await stomp(connect=False)
    connected = await client.connect(**{"heart-beat": "0,1000"})
    assert connected.headers["heart-beat"] == "1000,0"
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/queue/beats"})
    loop = asyncio.get_running_loop()
    await asyncio.sleep(1.05)  # just after the server's first look
    await client.send("SEND", {"destination": "/queue/beats"}, "x")
    while True:  # the heart-beats before it, then the MESSAGE
        output = await client.receive_output(timeout=2)
        if output.get("text") != "\n":
            break
    assert (output.get("text") or "").startswith("MESSAGE")
    delivered = loop.time()
    beat = await client.receive_output(timeout=3)
    assert beat.get("text") == "\n"
    assert loop.time() - delivered < 1.4


async def test_a_client_is_not_blamed_for_the_silence_while_its_frame_waits_on_the_broker(
    stomp: Open, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is read from the client while one of its frames waits (here a SUBSCRIBE whose
    queue takes a second to declare): its heart-beats sent meanwhile are read afterwards, and
    that silence is not its own."""
    from broker.transport.stomp_session import StompSession

    settings.STOMP_HEARTBEAT_MS = 200
    real = StompSession._ensure_queue

    async def slow(session: StompSession, name: str, headers: dict[str, str]) -> None:
        await asyncio.sleep(1.0)
        await real(session, name, headers)

    monkeypatch.setattr(StompSession, "_ensure_queue", slow)
    client = await stomp(connect=False)
    connected = await client.connect(**{"heart-beat": "200,0"})
    assert connected.headers["heart-beat"] == "0,200"  # closed after 400 ms of its silence
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/queue/slow", "receipt": "r"})
    for _ in range(10):  # its heart-beats, while the broker is busy with its SUBSCRIBE
        await client.send_raw("\n")
        await asyncio.sleep(0.1)
    receipt = await client.receive(timeout=3)
    assert (receipt.command, receipt.headers.get("receipt-id")) == ("RECEIPT", "r")


async def test_no_heart_beats_unless_both_sides_want_them(stomp: Open) -> None:
    client = await stomp(connect=False)
    connected = await client.connect(**{"heart-beat": "0,0"})
    assert connected.headers["heart-beat"] == "0,0"


# -- bad frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("FLY\n\n\x00", "invalid"),
        ("SUBSCRIBE\ndestination:/queue/x\n\n\x00", "invalid"),  # no id in 1.2
        ("SEND\ndestination:/nowhere/x\n\nx\x00", "invalid"),
        ("SEND\n\nx\x00", "invalid"),
        ("SEND\ndestination:/queue/x\ncontent-length:nine\n\nx\x00", "invalid"),
        ("SEND\ndestination:/queue/x\nbad\\tescape:1\n\nx\x00", "invalid"),
        ("SUBSCRIBE\nid:s\ndestination:/queue/x\nack:sometimes\n\n\x00", "invalid"),
        ("SEND\ndestination:/exchange/missing/k\n\nx\x00", "not_found"),
        ("SEND\ndestination:/queue/amq.x\n\nx\x00", "forbidden"),
        ("SEND\ndestination:/temp-queue/x\n\nx\x00", "invalid"),
        ("COMMIT\ntransaction:never\n\n\x00", "not_found"),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_close(stomp: Open, frame: str, code: str) -> None:
    client = await stomp()
    await client.send_raw(frame)
    error = await client.receive()
    assert (error.command, error.headers["code"]) == ("ERROR", code)
    assert error.headers["message"] and error.body
    assert await client.closed()


@pytest.mark.parametrize("together", [True, False], ids=["read together", "read apart"])
async def test_the_frames_before_a_malformed_one_are_carried_out_and_answered_first(
    stomp: Open, runtime: Runtime, together: bool
) -> None:
    """The ERROR comes after the RECEIPTs of the frames before the malformed one, whether
    they were read in the same chunk (they were dropped with it) or before it (the ERROR
    overtook their RECEIPTs, which then never came)."""
    await declare_queue("kept")
    client = await stomp()
    good = "SEND\ndestination:/queue/kept\npersistent:true\nreceipt:r1\n\nx\x00"
    bad = "SEND\ndestination:/queue/kept\nbad\\tescape:1\n\ny\x00"
    if together:
        await client.send_raw(good + bad)
    else:
        await client.send_raw(good)
        await client.send_raw(bad)
    receipt = await client.receive()
    assert (receipt.command, receipt.headers.get("receipt-id")) == ("RECEIPT", "r1")
    error = await client.receive()
    assert (error.command, error.headers["code"]) == ("ERROR", "invalid")
    assert await client.closed()
    assert counts(runtime, "kept") == (1, 0)


async def test_a_frame_over_the_size_limit_is_refused(stomp: Open, settings: Any) -> None:
    settings.MAX_MESSAGE_BYTES = 1000
    client = await stomp()
    await client.send("SEND", {"destination": "/queue/big", "content-length": "200000"}, b"x" * 200_000)
    error = await client.receive()
    assert (error.command, error.headers["code"]) == ("ERROR", "too_large")


async def test_a_durable_topic_subscription_keeps_its_messages_while_away(stomp: Open, runtime: Runtime) -> None:
    await builtin_topic_exchange()
    headers = {"id": "news", "destination": "/topic/news.*", "durable": "true", "auto-delete": "false"}
    first = await stomp()
    await first.send("SUBSCRIBE", {**headers, "receipt": "s"})
    assert (await first.receive()).headers["receipt-id"] == "s"
    await first.close()
    publisher = await stomp()
    await publisher.send("SEND", {"destination": "/topic/news.sport", "persistent": "true", "receipt": "p"}, "goal")
    assert (await publisher.receive()).headers["receipt-id"] == "p"
    assert counts(runtime, "stomp-subscription-news") == (1, 0)
    again = await stomp()
    await again.send("SUBSCRIBE", headers)
    message = await again.receive()
    assert (text(message), message.headers["subscription"]) == ("goal", "news")
    named = await stomp()
    await named.send("SUBSCRIBE", {**headers, "id": "n2", "x-queue-name": "my-news", "receipt": "n"})
    assert (await named.receive()).headers["receipt-id"] == "n"
    assert "my-news" in runtime.broker.queues and runtime.broker.queues["my-news"].spec.durable


async def test_a_stomp_delivery_count_stays_with_its_copy(stomp: Open, runtime: Runtime) -> None:
    """STOMP 1.2 makes a message's shared frame part once: the count of a copy given back must
    not show on another queue's copy of the same message."""
    await declare_exchange("fan2", "fanout")
    for name in ("c1", "c2"):
        await declare_queue(name)
        await declare_binding("fan2", name)
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "s1", "destination": "/amq/queue/c1", "ack": "client-individual"})
    await runtime.publish(PublishRequest("fan2", "", dumps("m"), {}, True, None))
    first = await client.receive()
    await client.send("NACK", {"id": first.headers["ack"]})
    assert (await client.receive()).headers["x-delivery-count"] == "1"
    await client.send("SUBSCRIBE", {"id": "s2", "destination": "/amq/queue/c2", "ack": "client-individual"})
    other = await client.receive()
    assert (other.headers["subscription"], "x-delivery-count" in other.headers) == ("s2", False)


async def test_subscribing_to_the_default_exchange_is_refused(stomp: Open) -> None:
    """It takes no bindings: 403, as docs/protocol.md's "Names" says (and RabbitMQ's access refused)."""
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "d", "destination": "/exchange/amq.default/q", "receipt": "s"})
    error = await client.receive()
    assert (error.command, error.headers["code"]) == ("ERROR", "forbidden")


async def test_a_durable_subscription_of_stomp_1_0_needs_an_id(stomp: Open, runtime: Runtime) -> None:
    """1.0 lets a SUBSCRIBE go without an id (the destination stands in), but a durable
    subscription's queue is named after its id: RabbitMQ refuses one without, and so do we."""
    await builtin_topic_exchange()
    client = await stomp("v10.stomp", **{"accept-version": "1.0"})
    await client.send("SUBSCRIBE", {"destination": "/topic/news.*", "durable": "true", "receipt": "s"})
    error = await client.receive()
    assert (error.command, error.headers["message"]) == ("ERROR", "a durable subscription needs an id header")
    assert not any(name.startswith("stomp-subscription-") for name in runtime.broker.queues)
    plain = await stomp("v10.stomp", **{"accept-version": "1.0"})  # not durable: the destination stands in for the id
    await plain.send("SUBSCRIBE", {"destination": "/topic/news.*", "receipt": "p"})
    assert (await plain.receive()).headers["receipt-id"] == "p"


async def test_a_stomp_connect_as_the_first_message_selects_stomp_without_a_subprotocol(
    stomp: Open, connect: Connect
) -> None:
    """As RabbitMQ's Web-STOMP, which speaks STOMP whatever the subprotocol (stomp.py offers none)."""
    client = await stomp(None, connect=False)
    assert client.subprotocol is None
    connected = await client.connect()
    assert (connected.command, connected.headers["version"]) == ("CONNECTED", "1.2")
    await client.send("SEND", {"destination": "/queue/sniffed", "receipt": "r"}, "x")
    assert (await client.receive()).headers["receipt-id"] == "r"
    json_client = await connect()  # a JSON client's first frame is JSON, as before
    await json_client.send_json_to({"type": "ping", "id": 1})
    assert await receive(json_client) == {"type": "pong", "id": 1}


async def test_a_fanout_reaches_each_stomp_subscriber_under_its_own_subscription(
    stomp: Open, connect: Connect, runtime: Runtime
) -> None:
    await declare_exchange("fan", "fanout")
    clients = [await stomp(), await stomp(), await stomp("v11.stomp", **{"accept-version": "1.1"})]
    for n, client in enumerate(clients):
        await client.send("SUBSCRIBE", {"id": f"sub:{n}", "destination": "/exchange/fan", "receipt": "r"})
        assert (await client.receive()).headers["receipt-id"] == "r"
    json_client = await connect()
    await json_client.send_json_to({"type": "subscribe", "id": "j", "exchange": "fan"})
    await receive(json_client)
    await runtime.publish(PublishRequest("fan", "k", dumps({"x": [1]}), {"h": "v"}, True, None))
    for n, client in enumerate(clients):
        frame = await client.receive()
        assert (frame.headers["subscription"], frame.body, frame.headers["h"]) == (f"sub:{n}", b'{"x":[1]}', "v")
        assert ("ack" in frame.headers) == (n < 2)  # 1.2 only
    assert (await receive(json_client))["body"] == {"x": [1]}


# -- what a review found --------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "SEND\ndestination:/queue/x\nh:a\x00b\n\nx\x00",  # a NUL within the headers
        "SEND\ndestination:/queue/x\ncontent-length:" + "0" * 5000 + "\n\nx\x00",
        "SUBSCRIBE\nid:s\ndestination:/queue/x\nprefetch-count:\u00b2\n\n\x00",
        "SEND\ndestination:/queue/x\nx-max-length:\u00b2\n\nx\x00",
    ],
)
async def test_odd_numbers_and_nul_bytes_are_invalid_not_a_crash(stomp: Open, frame: str) -> None:
    client = await stomp()
    await client.send_raw(frame)
    error = await client.receive()
    assert (error.command, error.headers["code"]) == ("ERROR", "invalid")
    assert await client.closed()


async def test_a_subscribes_receipt_comes_before_the_messages_waiting_in_its_queue(
    stomp: Open, runtime: Runtime
) -> None:
    await declare_queue("waiting")
    for n in range(3):
        await runtime.publish(PublishRequest("", "waiting", dumps(n), {}, True, None))
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/amq/queue/waiting", "receipt": "r"})
    frames = [await client.receive() for _ in range(4)]
    assert [frame.command for frame in frames] == ["RECEIPT", "MESSAGE", "MESSAGE", "MESSAGE"]


async def test_an_error_comes_after_the_receipts_of_the_frames_before_it(stomp: Open) -> None:
    client = await stomp()
    await client.send("SEND", {"destination": "/queue/first", "persistent": "true", "receipt": "r1"}, "x")
    await client.send("SUBSCRIBE", {"id": "s", "destination": "/amq/queue/missing", "receipt": "r2"})
    await client.send("SEND", {"destination": "/queue/never", "receipt": "r3"}, "not carried out")
    receipt, error = await client.receive(), await client.receive()
    assert (receipt.command, receipt.headers["receipt-id"]) == ("RECEIPT", "r1")
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "not_found", "r2")
    assert await client.closed()
    assert not await database_sync_to_async(Queue.objects.filter(name="never").exists)()


async def test_nothing_after_disconnect_is_carried_out(stomp: Open) -> None:
    client = await stomp()
    await client.send_raw(
        "DISCONNECT\nreceipt:bye\n\n\x00SEND\ndestination:/queue/after-disconnect\n\nx\x00"
    )
    assert (await client.receive()).headers["receipt-id"] == "bye"
    assert await client.closed()
    assert not await database_sync_to_async(Queue.objects.filter(name="after-disconnect").exists)()


async def test_open_transactions_hold_a_bounded_number_of_bytes(stomp: Open, settings: Any) -> None:
    settings.WS_MAX_BUFFERED_BYTES = 4096
    client = await stomp()
    await client.send("BEGIN", {"transaction": "t"})
    for n in range(3):
        await client.send("SEND", {"destination": "/queue/tx-big", "transaction": "t", "receipt": f"s{n}"},
                          b"z" * 1200)  # and HELD_FRAME_COST each: two fit in 4096, not three
    held = [await client.receive() for _ in range(3)]
    assert [(f.command, f.headers.get("receipt-id")) for f in held[:2]] == [("RECEIPT", "s0"), ("RECEIPT", "s1")]
    assert (held[2].command, held[2].headers["code"], held[2].headers["receipt-id"]) == ("ERROR", "too_large", "s2")


async def test_a_durable_subscription_needs_read_on_its_queue(stomp: Open, runtime: Runtime) -> None:
    await builtin_topic_exchange()
    _, token = await user_with("fay", configure=".*", write="", read="amq.topic")
    client = await stomp(login="fay", passcode=token)
    await client.send("SUBSCRIBE", {
        "id": "s", "destination": "/topic/pay.#", "durable": "true", "x-queue-name": "payroll", "receipt": "r",
    })
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "forbidden", "r")
    assert "payroll" in error.headers["message"]


async def test_a_durable_subscription_binds_its_queue_only_with_write_on_it(stomp: Open, runtime: Runtime) -> None:
    """Its queue is bound to the exchange: a binding, which needs write on the queue (as
    RabbitMQ's queue.bind and the API's), not configure; a refusal makes no queue."""
    await builtin_topic_exchange()
    headers = {"id": "s", "destination": "/topic/pay.#", "durable": "true", "x-queue-name": "payroll"}
    _, token = await user_with("fay", configure="payroll", write="", read="amq.topic|payroll")
    client = await stomp(login="fay", passcode=token)
    await client.send("SUBSCRIBE", {**headers, "receipt": "r"})
    error = await client.receive()
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "forbidden", "r")
    assert "write permission on queue 'payroll'" in error.headers["message"]
    assert not await database_sync_to_async(Queue.objects.filter(name="payroll").exists)()
    _, token = await user_with("gil", configure="payroll", write="payroll", read="amq.topic|payroll")
    client = await stomp(login="gil", passcode=token)
    await client.send("SUBSCRIBE", {**headers, "receipt": "ok"})
    assert (await client.receive()).headers["receipt-id"] == "ok"
    keys = await database_sync_to_async(
        lambda: list(Queue.objects.get(name="payroll").bindings.values_list("binding_key", flat=True))
    )()
    assert keys == ["pay.#"]


async def test_a_temp_queue_cannot_take_a_subscriptions_id(stomp: Open) -> None:
    client = await stomp()
    await client.send("SUBSCRIBE", {"id": "/temp-queue/x", "destination": "/queue/a", "receipt": "r"})
    assert (await client.receive()).headers["receipt-id"] == "r"
    await client.send("SEND", {"destination": "/queue/a", "reply-to": "/temp-queue/x", "receipt": "p"}, "q")
    error = await client.receive()  # the SEND is not carried out
    assert (error.command, error.headers["code"], error.headers["receipt-id"]) == ("ERROR", "conflict", "p")
    assert await client.closed()


async def test_a_connection_that_never_connects_is_closed(
    stomp: Open, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.transport.stomp_session.CONNECT_TIMEOUT", 0.2)
    client = await stomp(connect=False)
    error = await client.receive(timeout=2)
    assert (error.command, error.headers["code"]) == ("ERROR", "invalid")
    assert "CONNECT" in error.headers["message"]
    assert await client.closed()


async def test_frames_sent_with_the_connect_are_read_with_the_version_it_chose(stomp: Open) -> None:
    client = await stomp("v10.stomp", connect=False)
    client.parser.version = "1.0"  # STOMP 1.0 has no escapes: a backslash in a header is a backslash
    await client.send_raw(
        "CONNECT\naccept-version:1.0\n\n\x00"
        "SEND\ndestination:/queue/windows\npath:C:\\temp\nreceipt:r\n\nx\x00"
        "SUBSCRIBE\ndestination:/queue/windows\n\n\x00"
    )
    assert (await client.receive()).command == "CONNECTED"
    assert (await client.receive()).headers["receipt-id"] == "r"
    message = await client.receive()
    assert (message.command, message.headers["path"]) == ("MESSAGE", "C:\\temp")


async def test_unsubscribe_with_durable_deletes_a_durable_subscriptions_queue(stomp: Open, runtime: Runtime) -> None:
    await builtin_topic_exchange()
    client = await stomp()
    headers = {"destination": "/topic/gone.*", "durable": "true", "auto-delete": "false"}
    await client.send("SUBSCRIBE", {**headers, "id": "kept", "receipt": "1"})
    await client.send("SUBSCRIBE", {**headers, "id": "dropped", "receipt": "2"})
    assert [(await client.receive()).headers["receipt-id"] for _ in range(2)] == ["1", "2"]
    await client.send("UNSUBSCRIBE", {"id": "kept", "receipt": "3"})  # without durable: the queue stays
    await client.send("UNSUBSCRIBE", {"id": "dropped", "durable": "true", "receipt": "4"})
    assert [(await client.receive()).headers["receipt-id"] for _ in range(2)] == ["3", "4"]
    exists = database_sync_to_async(lambda name: Queue.objects.filter(name=name).exists())
    assert await exists("stomp-subscription-kept")
    assert not await exists("stomp-subscription-dropped")
    assert "stomp-subscription-dropped" not in runtime.broker.queues


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"persistent": "maybe"}, "invalid"),
        ({"expiration": "soon"}, "invalid"),
        ({"message-id": "m" * 65}, "invalid"),
        ({"reply-to": "/temp-queue/"}, "invalid"),
    ],
)
async def test_a_refused_send_to_a_new_queue_makes_no_queue(stomp: Open, headers: dict[str, str], code: str) -> None:
    """The queue was declared first, then the SEND refused: a refusal changed something."""
    client = await stomp()
    await client.send("SEND", {"destination": "/queue/never", "receipt": "r", **headers}, "x")
    error = await client.receive()
    assert (error.command, error.headers["code"]) == ("ERROR", code)
    assert not await database_sync_to_async(Queue.objects.filter(name="never").exists)()


async def test_a_send_or_subscribe_refused_for_want_of_permission_makes_no_queue(stomp: Open, runtime: Runtime) -> None:
    await declare_exchange("events", "topic")
    _, token = await user_with("erin", configure=".*", write="", read="")
    for frame, headers in (
        ("SEND", {"destination": "/queue/erin-send"}),
        ("SUBSCRIBE", {"destination": "/queue/erin-sub", "id": "s"}),
        ("SUBSCRIBE", {"destination": "/exchange/events/k", "id": "d", "durable": "true", "auto-delete": "false"}),
    ):
        client = await stomp(login="erin", passcode=token)
        await client.send(frame, {**headers, "receipt": "r"}, "x" if frame == "SEND" else "")
        error = await client.receive()
        assert (error.command, error.headers["code"]) == ("ERROR", "forbidden")
    names = await database_sync_to_async(lambda: list(Queue.objects.values_list("name", flat=True)))()
    assert not [name for name in names if "erin" in name or name.startswith("stomp-subscription-")]


async def test_a_durable_subscription_to_a_missing_exchange_makes_no_queue(stomp: Open) -> None:
    client = await stomp()
    await client.send("SUBSCRIBE", {"destination": "/exchange/nosuchx/k", "id": "ghost", "durable": "true",
                                    "auto-delete": "false", "receipt": "r"})
    error = await client.receive()
    assert (error.command, error.headers["code"]) == ("ERROR", "not_found")
    assert not await database_sync_to_async(Queue.objects.filter(name__contains="ghost").exists)()


async def test_an_ack_id_of_other_digits_than_ascii_names_no_delivery(stomp: Open, runtime: Runtime) -> None:
    """int() reads "١" (Arabic-Indic one) as 1: it acked delivery 1."""
    await declare_queue("digits")
    client = await stomp()
    await client.send("SUBSCRIBE", {"destination": "/amq/queue/digits", "id": "s", "ack": "client"})
    await client.send("SEND", {"destination": "/amq/queue/digits"}, "x")
    message = await client.receive()
    assert message.command == "MESSAGE"
    await client.send("ACK", {"id": "\u0661", "receipt": "r"})
    error = await client.receive()
    assert (error.command, error.headers["code"]) == ("ERROR", "not_found")
    assert await client.closed()
    await eventually(lambda: counts(runtime, "digits") == (1, 0), what="the message back, not acknowledged")
