"""The real `runbroker` process, driven by real HTTP and WebSocket clients."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx
import pytest
import websockets

from tests.e2e.client import WsClient
from tests.e2e.harness import ROOT, BrokerProcess
from tests.eventually import eventually

pytestmark = pytest.mark.e2e


def declare(url: str, *, exchange: tuple[str, str] | None = None, queues: list[str] = (), bindings=()) -> None:  # type: ignore[assignment]
    with httpx.Client(base_url=url, timeout=10) as http:
        if exchange:
            r = http.post("/api/exchanges/", json={"name": exchange[0], "type": exchange[1]})
            assert r.status_code == 201, r.text
        for name in queues:
            r = http.post("/api/queues/", json={"name": name})
            assert r.status_code == 201, r.text
        for exchange_name, queue, key in bindings:
            r = http.post("/api/bindings/", json={"exchange": exchange_name, "queue": queue, "binding_key": key})
            assert r.status_code == 201, r.text


def test_http_publish_routes_by_topic_and_get_returns_in_order(broker: BrokerProcess) -> None:
    declare(
        broker.url,
        exchange=("orders", "topic"),
        queues=["eu", "all"],
        bindings=[("orders", "eu", "orders.eu.*"), ("orders", "all", "orders.#")],
    )
    with httpx.Client(base_url=broker.url, timeout=10) as http:
        routed = [
            http.post("/api/exchanges/orders/publish/", json={"routing_key": key, "body": {"n": n}}).json()["routed"]
            for n, key in enumerate(["orders.eu.created", "orders.us.created", "orders"])
        ]
        assert routed == [2, 1, 1]
        eu = http.post("/api/queues/eu/get/", json={"count": 10}).json()
        everything = http.post("/api/queues/all/get/", json={"count": 10}).json()
        detail = http.get("/api/queues/all/").json()
    assert [m["body"] for m in eu] == [{"n": 0}]
    assert [m["body"] for m in everything] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert detail["messages"] == 0


async def test_round_robin_prefetch_ack_and_redelivery_after_a_client_drops(broker: BrokerProcess) -> None:
    declare(broker.url, queues=["work"])
    a = await WsClient.connect(broker.ws_url)
    b = await WsClient.connect(broker.ws_url)
    for client, sid in ((a, "a"), (b, "b")):
        reply = await client.request({"type": "subscribe", "id": sid, "queue": "work", "ack": "client", "prefetch": 2})
        assert reply["type"] == "subscribed"
    publisher = await WsClient.connect(broker.ws_url)
    for n in range(6):
        confirm = await publisher.request({"type": "publish", "id": f"p{n}", "exchange": "", "routing_key": "work", "body": n})
        assert (confirm["type"], confirm["routed"]) == ("confirm", 1)

    got_a = await a.messages(2)
    got_b = await b.messages(2)
    assert sorted(m["body"] for m in got_a + got_b) == [0, 1, 2, 3]  # round-robin, two each (prefetch 2)
    assert [m["body"] for m in got_a] == [0, 2] and [m["body"] for m in got_b] == [1, 3]
    assert await a.silent() and await b.silent()  # prefetch holds back the rest

    await a.send({"type": "ack", "delivery_tag": got_a[1]["delivery_tag"], "multiple": True})
    more_a = await a.messages(2)
    assert sorted(m["body"] for m in more_a) == [4, 5]

    # b drops with two unacknowledged messages: they go to a, marked redelivered, in order.
    await b.close()
    await a.send({"type": "ack", "delivery_tag": more_a[-1]["delivery_tag"], "multiple": True})
    redelivered = await a.messages(2)
    assert [(m["body"], m["redelivered"]) for m in redelivered] == [(1, True), (3, True)]

    # nack with requeue comes back; nack without requeue is gone.
    await a.send({"type": "nack", "delivery_tag": redelivered[0]["delivery_tag"], "requeue": True})
    again = await a.messages(1)
    assert (again[0]["body"], again[0]["redelivered"]) == (1, True)
    await a.send({"type": "nack", "delivery_tag": again[0]["delivery_tag"], "requeue": False})
    await a.send({"type": "ack", "delivery_tag": redelivered[1]["delivery_tag"]})
    assert await a.silent()
    async with httpx.AsyncClient(base_url=broker.url) as http:
        detail = (await http.get("/api/queues/work/")).json()
    assert (detail["messages_ready"], detail["messages_unacknowledged"], detail["consumers"]) == (0, 0, 1)
    for client in (a, publisher):
        await client.close()


async def test_acks_sent_just_before_a_close_count_while_deliveries_are_on_their_way(broker: BrokerProcess) -> None:
    # The broker is still sending when the close arrives: its send fails, and the acks read
    # before the close must still be carried out (they were lost with the connection, and
    # their messages delivered again).
    declare(broker.url, queues=["steady"])
    publisher = await WsClient.connect(broker.ws_url)
    for n in range(3000):
        await publisher.send({"type": "publish", "exchange": "", "routing_key": "steady", "body": n})
    await publisher.request({"type": "publish", "id": "last", "exchange": "", "routing_key": "steady", "body": "last"})
    await publisher.close()
    for _ in range(3):
        # Reading never paused by the client (`max_queue`): its close is not held up by the
        # deliveries it leaves unread.
        consumer = WsClient(await websockets.connect(broker.ws_url, max_size=None, max_queue=None))
        await consumer.request({"type": "subscribe", "id": "s", "queue": "steady", "ack": "client", "prefetch": 300})
        for message in await consumer.messages(300):
            await consumer.send({"type": "ack", "delivery_tag": message["delivery_tag"]})
        await consumer.close()  # while the deliveries that the acks made room for arrive
    async with httpx.AsyncClient(base_url=broker.url) as http:
        async def settled() -> bool:
            return bool((await http.get("/api/queues/steady/")).json()["consumers"] == 0)

        await eventually(settled, what="the consumers gone")
        detail = (await http.get("/api/queues/steady/")).json()
    assert (detail["messages_ready"], detail["messages_unacknowledged"]) == (3001 - 900, 0)


async def test_exchange_subscription_gets_a_private_queue_and_fanout_reaches_every_subscriber(
    broker: BrokerProcess,
) -> None:
    declare(broker.url, exchange=("news", "fanout"))
    clients = [await WsClient.connect(broker.ws_url) for _ in range(3)]
    queues = set()
    for n, client in enumerate(clients):
        reply = await client.request({"type": "subscribe", "id": f"s{n}", "exchange": "news"})
        assert reply["queue"].startswith("amq.gen-")
        queues.add(reply["queue"])
    assert len(queues) == 3
    async with httpx.AsyncClient(base_url=broker.url) as http:
        answer = (await http.post("/api/exchanges/news/publish/", json={"body": "hello", "persistent": False})).json()
        assert answer["routed"] == 3
        for client in clients:
            (message,) = await client.messages(1)
            assert (message["body"], message["exchange"]) == ("hello", "news")
            await client.close()

        async def private_queues_gone() -> bool:  # private queues go with their connections
            names = {q["name"] for q in (await http.get("/api/queues/")).json()}
            return not names & queues

        await eventually(private_queues_gone, interval=0.05, what="the private queues deleted with their connections")


async def test_a_client_of_the_original_service_works_unchanged(broker: BrokerProcess) -> None:
    async with httpx.AsyncClient(base_url=broker.url) as http:
        assert (await http.get("/ping")).json() == {"message": "PONG"}
        assert (await http.post("/exchanges", json={"name": "legacy", "type": "fanout"})).status_code == 200
        assert (await http.post("/queues", json={"name": "inbox", "durable": True})).status_code == 200
        bound = await http.post("/bindings", json={"key": "", "exchange_name": "legacy", "queue_name": "inbox"})
        assert bound.status_code == 200
        client = await WsClient.connect(broker.ws_url)
        await client.send({"type": "SUBSCRIBE", "payload": {"queue_name": "inbox"}})

        async def subscribed() -> bool:  # the original frame has no reply: the queue shows its consumer
            return bool((await http.get("/api/queues/inbox/")).json()["consumers"] == 1)

        await eventually(subscribed, interval=0.05, what="the SUBSCRIBE carried out")
        published = await http.post("/publish", json={"exchange_name": "legacy", "key": "", "payload": {"hi": 1}})
        assert published.status_code == 200
        frame = await client.recv()
        # What the original clients read: the payload as `body`, and `unique_id`.
        assert frame["body"] == {"hi": 1}
        assert frame["unique_id"] == frame["message_id"] == published.json()["message_id"]
        bad = await http.post("/publish", json={"exchange_name": "legacy"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
        await client.close()


async def test_bad_frames_get_errors_and_the_connection_stays_open(broker: BrokerProcess) -> None:
    client = await WsClient.connect(broker.ws_url)
    await client.connection.send("not json")
    assert (await client.recv())["code"] == "invalid"
    reply = await client.request({"type": "subscribe", "id": 7, "queue": "missing"})
    assert (reply["type"], reply["code"]) == ("error", "not_found")
    assert (await client.request({"type": "ping", "id": "x"}))["type"] == "pong"
    await client.connection.send(json.dumps({"type": "publish", "body": "x" * (1024 * 1024 + 10)}))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_sigterm_stops_cleanly_and_topology_survives_a_restart(broker: BrokerProcess) -> None:
    declare(broker.url, exchange=("keep", "direct"), queues=["kept"], bindings=[("keep", "kept", "k")])
    with httpx.Client(base_url=broker.url) as http:
        assert http.post("/api/exchanges/keep/publish/", json={"routing_key": "k", "body": 1}).json()["routed"] == 1
    assert broker.stop(signal.SIGTERM) == 0
    first = broker.log()
    assert "as a single broker" in first
    assert re.search(r"^database: \S+ .+; applied [1-9]\d* migrations$", first, re.MULTILINE), first
    broker.start()
    assert broker.log()[len(first) :].count("; no migrations to apply\n") == 1
    with httpx.Client(base_url=broker.url) as http:
        got = http.post("/api/queues/kept/get/", json={"count": 5}).json()
        assert [(m["body"], m["redelivered"]) for m in got] == [(1, True)]
        assert http.post("/api/exchanges/keep/publish/", json={"routing_key": "k", "body": 2}).json()["routed"] == 1


def test_a_bad_setting_stops_start_up_with_its_name() -> None:
    env = {**os.environ, "HTTP_PORT": "abc"}
    result = subprocess.run(
        [sys.executable, "manage.py", "runbroker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert result.stderr.strip() == "configuration error: HTTP_PORT='abc' is not an integer"


def test_a_publish_far_over_the_limit_gets_its_413_not_a_reset(broker: BrokerProcess) -> None:
    """The body is read on and thrown away after the refusal, so a client that sends all of it
    before it reads (as most do) reads the answer, rather than a reset connection."""
    import socket
    import time

    body = json.dumps({"routing_key": "q", "body": "x" * (20 * 1024 * 1024)}).encode()
    head = (
        f"POST /api/exchanges/amq.default/publish/ HTTP/1.1\r\nHost: 127.0.0.1:{broker.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as sock:
            sock.sendall(head)
            for start in range(0, len(body), 256 * 1024):  # a client on a slower link
                sock.sendall(body[start : start + 256 * 1024])
                time.sleep(0.002)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status, _, rest = answer.partition(b"\r\n")
        assert status.startswith(b"HTTP/1.1 413"), status
        assert b'"too_large"' in rest


@pytest.mark.parametrize("path", ["/api/queues/", "/publish", "/ping", "/admin/login/"])
def test_any_call_s_body_over_the_limit_is_refused_before_it_is_all_sent(broker: BrokerProcess, path: str) -> None:
    """Django reads a whole body to a temporary file before a view runs, with no cap: a
    client could fill the broker's disk before any authentication, and got its 413 only
    once it had sent everything."""
    import socket

    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{broker.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {500 * 1024 * 1024}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(head + b"x" * (2 * 1024 * 1024))  # 2 MiB of the 500 announced, then it waits
        status = sock.recv(65536).partition(b"\r\n")[0]
    assert status.startswith(b"HTTP/1.1 413"), status


async def test_a_client_that_a_proxy_on_this_machine_forwards_must_authenticate(broker: BrokerProcess) -> None:
    """Anonymous access is on by default because the broker listens on loopback; a proxy on
    this machine (FORWARDED_ALLOW_IPS) that forwards another machine's request says so in
    X-Forwarded-For, and that client was let in as anonymous, with every right."""
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    with httpx.Client(base_url=broker.url, timeout=10) as http:
        refused = http.post("/api/queues/", json={"name": "q"}, headers=forwarded)
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized")
        published = http.post("/api/exchanges/amq.default/publish/", json={"routing_key": "q", "body": 1}, headers=forwarded)
        assert published.status_code == 401
        assert http.post("/api/queues/", json={"name": "q"}).status_code == 201  # from this machine
    async with websockets.connect(broker.ws_url, additional_headers=forwarded) as ws:
        error = json.loads(await ws.recv())
        assert (error["type"], error["code"]) == ("error", "unauthorized")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
