"""stomp.py, a real STOMP 1.2 client, against the real `runbroker`: over plain TCP
(STOMP_PORT) and over WebSocket (/ws, subprotocol v12.stomp), each test once per
transport (docs/protocol.md, "STOMP").

Connecting with a token, the three ack modes and prefetch, receipts,
transactions, heart-beats, errors, RabbitMQ's destinations with a temporary
reply queue, and messages that cross from STOMP to the HTTP API and back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
import stomp
from stomp.utils import Frame

from tests.eventually import eventually_sync
from tests.interop.client import Client, Transport, quiet
from tests.interop.runbroker import Credentials, counts_become, queue_counts

pytestmark = pytest.mark.e2e

Connect = Callable[..., Client]
# The broker is shared by the module's tests: each names what it makes after itself and its transport.


def test_connects_with_a_user_and_a_token(connect: Connect, transport: Transport) -> None:
    client = connect()
    connected = client.recorder.of("CONNECTED")[0]
    assert connected.headers["version"] == "1.2"
    if transport == "ws":  # the first subprotocol offered that the server speaks
        assert client.conn.transport.socket.headers.get("sec-websocket-protocol") == "v12.stomp"


def test_a_wrong_token_gets_an_error_frame_and_the_connection_closes(open_client: Connect, admin: Credentials) -> None:
    client = open_client()
    client.start(Credentials(admin.login, "not-a-token"))
    error = client.error()
    assert error.headers.get("message")
    eventually_sync(client.closed, what="the connection closed after the ERROR")
    assert client.recorder.of("CONNECTED") == []


def test_auto_ack_delivers_in_order_and_keeps_nothing(
    connect: Connect, http: httpx.Client, transport: Transport
) -> None:
    queue = f"ix-auto-{transport}"
    client = connect()
    client.subscribe(f"/queue/{queue}", "s-auto")
    for n in range(3):
        client.send(f"/queue/{queue}", f"m{n}")
    got = client.wait_messages("s-auto", 3)
    assert [m.body for m in got] == ["m0", "m1", "m2"]
    assert {m.headers["destination"] for m in got} == {f"/queue/{queue}"}
    assert len({m.headers["message-id"] for m in got}) == 3
    counts_become(http, queue, (0, 0))


def test_client_ack_of_the_third_message_acks_all_three(
    connect: Connect, http: httpx.Client, transport: Transport
) -> None:
    queue = f"ix-client-{transport}"
    client = connect()
    client.subscribe(f"/queue/{queue}", "s-client", ack="client")
    for n in range(3):
        client.send(f"/queue/{queue}", f"m{n}")
    got = client.wait_messages("s-client", 3)
    counts_become(http, queue, (3, 3))

    client.ack(got[2])  # cumulative: this one and every earlier one of the subscription
    counts_become(http, queue, (0, 0))
    client.disconnect()

    again = connect()
    again.subscribe(f"/queue/{queue}", "s-again", ack="client")
    quiet()
    assert again.messages("s-again") == []


def test_client_ack_leaves_later_messages_to_be_redelivered(
    connect: Connect, http: httpx.Client, transport: Transport
) -> None:
    queue = f"ix-client-part-{transport}"
    client = connect()
    client.subscribe(f"/queue/{queue}", "s-client", ack="client")
    for n in range(3):
        client.send(f"/queue/{queue}", f"m{n}")
    got = client.wait_messages("s-client", 3)
    client.ack(got[1])
    counts_become(http, queue, (1, 1))
    client.disconnect()  # the unacknowledged third goes back to the queue

    again = connect()
    again.subscribe(f"/queue/{queue}", "s-again", ack="client")
    [redelivered] = again.wait_messages("s-again", 1)
    assert (redelivered.body, redelivered.headers["redelivered"]) == ("m2", "true")
    again.ack(redelivered)
    counts_become(http, queue, (0, 0))


def test_client_individual_acks_one_and_a_nacked_one_comes_back(
    connect: Connect, http: httpx.Client, transport: Transport
) -> None:
    queue = f"ix-individual-{transport}"
    client = connect()
    client.subscribe(f"/queue/{queue}", "s-ind", ack="client-individual")
    client.send(f"/queue/{queue}", "a")
    client.send(f"/queue/{queue}", "b")
    first, second = client.wait_messages("s-ind", 2)
    assert (first.body, second.body) == ("a", "b")
    assert first.headers["redelivered"] == "false"

    client.nack(second, requeue="true")
    client.ack(first)  # after the nack: an individual ack, not a cumulative one
    third = client.wait_messages("s-ind", 3)[2]
    assert (third.body, third.headers["redelivered"]) == ("b", "true")
    counts_become(http, queue, (1, 1))
    client.ack(third)
    counts_become(http, queue, (0, 0))


def test_bool_headers_as_stomp_py_writes_them(connect: Connect, http: httpx.Client, transport: Transport) -> None:
    """stomp.py sends a Python bool header as `True` or `False`; RabbitMQ reads those, and so do
    we: a NACK with `requeue=False` must not bring the message back again and again."""
    queue = f"ix-bool-{transport}"
    client = connect()
    client.subscribe(f"/queue/{queue}", "s-bool", ack="client-individual")
    client.send(f"/queue/{queue}", "poison")
    (message,) = client.wait_messages("s-bool", 1)
    client.conn.nack(message.headers["ack"], requeue=False)
    counts_become(http, queue, (0, 0))  # dropped: the queue has no dead-letter exchange
    quiet()
    assert len(client.messages("s-bool")) == 1

    receipt = "sub-bool-durable"
    headers = {"durable": True, "auto-delete": False, "receipt": receipt}
    client.conn.subscribe(f"/topic/ix.bool.{transport}", "s-bool-durable", headers=headers)
    client.receipt(receipt)
    kept = http.get("/api/queues/stomp-subscription-s-bool-durable/").raise_for_status().json()
    assert kept["durable"] is True


def test_prefetch_count_limits_the_unacknowledged_messages(connect: Connect, transport: Transport) -> None:
    queue = f"ix-prefetch-{transport}"
    client = connect()
    client.subscribe(f"/queue/{queue}", "s-pre", ack="client-individual", **{"prefetch-count": "1"})
    for n in range(3):
        client.send(f"/queue/{queue}", f"m{n}")
    [first] = client.wait_messages("s-pre", 1)
    quiet()
    assert len(client.messages("s-pre")) == 1

    client.ack(first)
    second = client.wait_messages("s-pre", 2)[1]
    quiet()
    assert len(client.messages("s-pre")) == 2
    client.ack(second)
    assert [m.body for m in client.wait_messages("s-pre", 3)] == ["m0", "m1", "m2"]


class SlowReader(stomp.ConnectionListener):  # type: ignore[misc]
    """Holds stomp.py's receiver thread a little per MESSAGE: a client that reads slowly."""

    def on_message(self, frame: Frame) -> None:
        time.sleep(0.002)


def test_an_auto_ack_subscriber_drains_a_backlog_far_over_the_unsent_bound_without_loss(
    connect: Connect, http: httpx.Client, transport: Transport
) -> None:
    """stomp.py subscribes with ack:auto (its default) to a queue holding 10 MB, over twice
    WS_MAX_BUFFERED_BYTES (4 MiB), and reads it slowly: the broker sends no faster than the
    socket takes, so the client gets every message, in order, and is not closed as a slow
    consumer."""
    queue, count, pad = f"ix-backlog-{transport}", 500, "p" * 20_000
    http.post("/api/queues/", json={"name": queue}).raise_for_status()
    for n in range(count):
        answer = http.post("/api/exchanges/amq.default/publish/", json={"routing_key": queue, "body": f"{n} {pad}"})
        assert answer.raise_for_status().json()["routed"] == 1
    client = connect()
    client.conn.set_listener("slow", SlowReader())
    client.subscribe(f"/queue/{queue}", "s-backlog")
    got = client.wait_messages("s-backlog", count, timeout=60)
    assert [int(json.loads(m.body).split(" ", 1)[0]) for m in got] == list(range(count))
    assert not client.closed()
    assert client.recorder.of("ERROR") == []
    counts_become(http, queue, (0, 0))


def test_a_persistent_send_is_received_after_its_receipt(connect: Connect, transport: Transport) -> None:
    queue = f"ix-persistent-{transport}"
    publisher = connect()
    publisher.send(f"/queue/{queue}", "kept", persistent="true")  # declares the queue; waits for the RECEIPT
    consumer = connect()
    consumer.subscribe(f"/queue/{queue}", "s-kept")
    [message] = consumer.wait_messages("s-kept", 1)
    assert (message.body, message.headers["persistent"]) == ("kept", "true")


@pytest.mark.parametrize("transport", ["ws"], indirect=True)  # a WebSocket's subprotocol: nothing to try over TCP
def test_stomp_py_over_websocket_without_a_subprotocol_as_written_for_rabbitmq(connect: Connect) -> None:
    queue = "ix-no-subprotocol"
    client = connect(subprotocol=False)
    assert client.conn.transport.socket.headers.get("sec-websocket-protocol") is None
    client.send(f"/queue/{queue}", "plain", persistent="true")
    client.subscribe(f"/queue/{queue}", "s-plain")
    [message] = client.wait_messages("s-plain", 1)
    assert message.body == "plain"


def test_an_aborted_transaction_delivers_nothing(connect: Connect, transport: Transport) -> None:
    queue = f"ix-abort-{transport}"
    client = connect()
    client.subscribe(f"/queue/{queue}", "s-tx")
    transaction = client.begin()
    client.send(f"/queue/{queue}", "one", receipt=False, transaction=transaction)
    client.send(f"/queue/{queue}", "two", receipt=False, transaction=transaction)
    client.abort(transaction)
    client.send(f"/queue/{queue}", "after")  # in order after the ABORT: the aborted ones would be first
    assert [m.body for m in client.wait_messages("s-tx", 1)] == ["after"]
    quiet()
    assert [m.body for m in client.messages("s-tx")] == ["after"]


def test_a_committed_transaction_delivers_in_order_at_commit(connect: Connect, transport: Transport) -> None:
    queue = f"ix-commit-{transport}"
    client = connect()
    client.subscribe(f"/queue/{queue}", "s-tx")
    transaction = client.begin()
    for body in ("one", "two", "three"):
        client.send(f"/queue/{queue}", body, receipt=False, transaction=transaction)
    quiet()
    assert client.messages("s-tx") == []
    client.commit(transaction)
    assert [m.body for m in client.wait_messages("s-tx", 3)] == ["one", "two", "three"]


def test_an_ack_in_a_transaction_is_applied_at_commit(
    connect: Connect, http: httpx.Client, transport: Transport
) -> None:
    queue = f"ix-tx-ack-{transport}"
    client = connect()
    client.subscribe(f"/queue/{queue}", "s-tx", ack="client-individual")
    client.send(f"/queue/{queue}", "job")
    [message] = client.wait_messages("s-tx", 1)
    counts_become(http, queue, (1, 1))

    transaction = client.begin()
    client.ack(message, transaction=transaction)
    quiet()
    assert queue_counts(http, queue) == (1, 1)
    client.commit(transaction)
    counts_become(http, queue, (0, 0))


def test_heartbeats_keep_an_idle_connection_alive(connect: Connect, transport: Transport) -> None:
    queue = f"ix-heartbeat-{transport}"
    client = connect(heartbeats=(1000, 1000))
    server_sends, server_wants = (int(v) for v in client.recorder.of("CONNECTED")[0].headers["heart-beat"].split(","))
    assert 0 < server_sends <= 1000 and server_wants > 0

    time.sleep(3.5)  # idle: time passing is the scenario (three or more beats each way)
    assert not client.closed()
    assert client.recorder.heartbeats >= 2
    client.subscribe(f"/queue/{queue}", "s-hb")
    client.send(f"/queue/{queue}", "still here")
    assert [m.body for m in client.wait_messages("s-hb", 1)] == ["still here"]


def test_publishing_without_the_write_right_is_an_error_with_the_receipt_id(
    connect: Connect, limited: Credentials, transport: Transport
) -> None:
    client = connect(limited)
    client.send(f"/topic/ix.{transport}.allowed", "may")  # amq.topic: the user may write there
    client.conn.send("/exchange/amq.direct/k", "may not", headers={"receipt": "forbidden-1"})
    error = client.error()
    assert error.headers.get("message")
    assert error.headers.get("receipt-id") == "forbidden-1"
    eventually_sync(client.closed, what="the connection closed after the ERROR")


def test_a_queue_that_must_exist_and_does_not_is_an_error(connect: Connect, transport: Transport) -> None:
    client = connect()
    client.conn.subscribe(f"/amq/queue/ix-missing-{transport}", "s-missing", headers={"receipt": "missing-1"})
    error = client.error()
    assert error.headers.get("message")
    assert error.headers.get("receipt-id") == "missing-1"
    eventually_sync(client.closed, what="the connection closed after the ERROR")


def test_queue_topic_and_exchange_destinations(connect: Connect, transport: Transport) -> None:
    queue = f"ix-amq-{transport}"
    client = connect()
    client.send(f"/queue/{queue}", "declared")  # /queue/ declares the queue; /amq/queue/ needs it
    client.subscribe(f"/amq/queue/{queue}", "s-amq")
    client.subscribe(f"/topic/ix.{transport}.*", "s-topic")
    client.subscribe(f"/exchange/amq.topic/ix.{transport}.#", "s-exchange")
    client.send(f"/topic/ix.{transport}.a", "on the topic")
    client.send(f"/exchange/amq.topic/ix.{transport}.b.c", "deeper")

    assert [m.body for m in client.wait_messages("s-amq", 1)] == ["declared"]
    assert [m.body for m in client.wait_messages("s-topic", 1)] == ["on the topic"]
    assert [m.body for m in client.wait_messages("s-exchange", 2)] == ["on the topic", "deeper"]
    quiet()
    assert len(client.messages("s-topic")) == 1


def test_a_temp_queue_gets_the_reply_to_a_request(connect: Connect, transport: Transport) -> None:
    queue = f"ix-rpc-{transport}"
    responder = connect()
    responder.subscribe(f"/queue/{queue}", "s-rpc")
    requester = connect()
    requester.send(f"/queue/{queue}", "ping", **{"reply-to": "/temp-queue/answers"})

    [request] = responder.wait_messages("s-rpc", 1)
    reply_to = request.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/"), reply_to  # rewritten to a name others can send to
    responder.send(reply_to, "pong")

    eventually_sync(lambda: bool(requester.recorder.of("MESSAGE")), what="the reply")
    [reply] = requester.recorder.of("MESSAGE")
    assert reply.body == "pong"
    assert reply.headers["subscription"] == "/temp-queue/answers"


def test_disconnect_gets_its_receipt_and_closes(connect: Connect) -> None:
    client = connect()
    receipt = client.disconnect()
    assert receipt.headers["receipt-id"].startswith("bye-")
    assert client.closed()


def test_a_stomp_send_reaches_a_queue_read_over_http(
    connect: Connect, http: httpx.Client, transport: Transport
) -> None:
    exchange, queue = f"ix-cross-{transport}", f"ix-cross-got-{transport}"
    http.post("/api/exchanges/", json={"name": exchange, "type": "direct"}).raise_for_status()
    http.post("/api/queues/", json={"name": queue}).raise_for_status()
    http.post("/api/bindings/", json={"exchange": exchange, "queue": queue, "binding_key": "k"}).raise_for_status()

    client = connect()
    client.send(f"/exchange/{exchange}/k", '{"n": 1, "text": "été"}', **{"content-type": "application/json"})
    got: list[dict[str, object]] = []

    def fetched() -> bool:
        got.extend(http.post(f"/api/queues/{queue}/get/", json={"count": 1}).raise_for_status().json())
        return bool(got)

    eventually_sync(fetched, interval=0.1, what=f"the message in {queue}")
    [message] = got
    assert (message["exchange"], message["routing_key"]) == (exchange, "k")
    assert message["body"] == {"n": 1, "text": "été"}


def test_an_http_publish_reaches_a_stomp_subscriber_as_json(
    connect: Connect, http: httpx.Client, transport: Transport
) -> None:
    exchange = f"ix-from-http-{transport}"
    http.post("/api/exchanges/", json={"name": exchange, "type": "direct"}).raise_for_status()
    client = connect()
    client.subscribe(f"/exchange/{exchange}/k", "s-http")  # a private queue bound with k

    body = {"n": 2, "items": [1, "two", None], "text": "été"}
    published = http.post(f"/api/exchanges/{exchange}/publish/", json={"routing_key": "k", "body": body})
    assert published.raise_for_status().json()["routed"] == 1
    [message] = client.wait_messages("s-http", 1)
    assert json.loads(message.body) == body
    assert message.headers["content-type"] == "application/json"
