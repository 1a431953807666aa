"""A cluster of real processes on the real PostgreSQL and Redis.

A router, a hot standby and edges are `runbroker` processes sharing one
database and one Redis database. They check that publishing through one edge
reaches a subscriber on another, that the standby takes over from a router
killed under load with every confirmed message delivered and the
subscriptions resumed by themselves, and that a dead edge's unacknowledged
messages go to another subscriber. Needs E2E_DATABASE_URL and Redis
(TEST_REDIS_URL, default redis://127.0.0.1:6379): fails, never skips, without them.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import psycopg
import pytest

from tests.e2e.client import WsClient
from tests.eventually import eventually
from tests.integration.cluster_harness import HEALTH_INTERVAL, Cluster, role

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

class Publisher:
    """Publishes numbered persistent messages through one WebSocket; records the confirmed."""

    def __init__(self, client: WsClient, routing_key: str) -> None:
        self.client = client
        self.routing_key = routing_key
        self.confirmed: set[int] = set()
        self.failed: set[int] = set()
        self.next = 0
        self.stopping = False

    async def run(self, window: int = 64) -> None:
        outstanding: set[int] = set()
        while not self.stopping or outstanding:
            while not self.stopping and len(outstanding) < window:
                number = self.next
                self.next += 1
                outstanding.add(number)
                await self.client.send(
                    {"type": "publish", "id": number, "routing_key": self.routing_key, "body": number}
                )
            frame = await self.client.recv(timeout=15)
            if frame["type"] == "confirm":
                outstanding.discard(frame["id"])
                self.confirmed.add(frame["id"])
            elif frame["type"] == "error" and isinstance(frame.get("id"), int):
                assert frame["code"] == "unavailable", frame
                outstanding.discard(frame["id"])
                self.failed.add(frame["id"])
                await asyncio.sleep(0.01)


class Consumer:
    """Acks everything it gets; records the bodies and whether a delivery was a redelivery."""

    def __init__(self, client: WsClient) -> None:
        self.client = client
        self.bodies: set[int] = set()
        self.redelivered = 0
        self.other: list[dict[str, object]] = []

    async def run(self) -> None:
        while True:
            frame = await self.client.recv(timeout=60)
            if frame["type"] != "message":
                self.other.append(frame)
                continue
            self.bodies.add(frame["body"])
            self.redelivered += frame["redelivered"]
            await self.client.send({"type": "ack", "delivery_tag": frame["delivery_tag"]})


async def test_publish_on_one_edge_reaches_a_subscriber_on_another(cluster: Cluster) -> None:
    cluster.node("router")
    edge_a = cluster.node("edge-a", edge=True)
    edge_b = cluster.node("edge-b", edge=True)
    assert role(edge_a) == "edge"
    async with httpx.AsyncClient(base_url=edge_a.url, timeout=10) as http:
        # Declared through an edge: live on the router before the answer.
        assert (await http.post("/api/exchanges/", json={"name": "news", "type": "topic"})).status_code == 201
        assert (await http.post("/api/queues/", json={"name": "sport"})).status_code == 201
        binding = {"exchange": "news", "queue": "sport", "binding_key": "sport.#"}
        assert (await http.post("/api/bindings/", json=binding)).status_code == 201
        subscriber = await WsClient.connect(edge_b.ws_url)
        reply = await subscriber.request({"type": "subscribe", "id": "s", "queue": "sport", "ack": "client"})
        assert reply == {"type": "subscribed", "id": "s", "subscription": "s", "queue": "sport"}
        published = await http.post("/api/exchanges/news/publish/", json={"routing_key": "sport.ski", "body": 1})
        assert published.json()["routed"] == 1
        publisher = await WsClient.connect(edge_a.ws_url)
        confirm = await publisher.request(
            {"type": "publish", "id": 7, "exchange": "news", "routing_key": "sport.golf", "body": 2}
        )
        assert confirm["type"] == "confirm" and confirm["routed"] == 1
        missing = await publisher.request({"type": "publish", "id": 8, "exchange": "nope", "body": 3})
        assert missing["type"] == "error" and missing["code"] == "not_found"
        got = await subscriber.messages(2)
        assert [m["body"] for m in got] == [1, 2]
        assert [m["delivery_tag"] for m in got] == [1, 2]
        # Prefetch, acks and counts go through the router too.
        detail = (await http.get("/api/queues/sport/")).json()
        assert (detail["messages_unacknowledged"], detail["consumers"]) == (2, 1)
        await subscriber.send({"type": "ack", "delivery_tag": 2, "multiple": True})
        bad_ack = await subscriber.request({"type": "ack", "id": "a", "delivery_tag": 99})
        assert bad_ack["code"] == "precondition_failed"
        detail = (await http.get("/api/queues/sport/")).json()
        assert detail["messages_unacknowledged"] == 0
        got_http = await http.post("/api/queues/sport/get/", json={"count": 1})
        assert got_http.status_code == 200 and got_http.json() == []
        await subscriber.close()
        await publisher.close()


async def test_standby_takes_over_from_a_killed_router_without_losing_confirmed_messages(
    cluster: Cluster,
) -> None:
    router = cluster.node("router")
    standby = cluster.node("standby")
    edge_a = cluster.node("edge-a", edge=True)
    edge_b = cluster.node("edge-b", edge=True)
    assert (role(router), role(standby)) == ("router", "standby")
    async with httpx.AsyncClient(base_url=edge_a.url, timeout=10) as http:
        assert (await http.post("/api/queues/", json={"name": "work"})).status_code == 201
    consumer = Consumer(await WsClient.connect(edge_b.ws_url))
    reply = await consumer.client.request(
        {"type": "subscribe", "id": "w", "queue": "work", "ack": "client", "prefetch": 50}
    )
    assert reply["type"] == "subscribed"
    publisher = Publisher(await WsClient.connect(edge_a.ws_url), "work")
    consuming = asyncio.create_task(consumer.run())
    publishing = asyncio.create_task(publisher.run())
    try:
        await eventually(lambda: len(publisher.confirmed) >= 500, timeout=30, what="500 confirms before the kill")
        router.kill()
        confirmed_at_kill = len(publisher.confirmed)
        await eventually(
            lambda: role(standby) == "router", timeout=20, interval=HEALTH_INTERVAL, what="the standby takes over"
        )
        await eventually(
            lambda: len(publisher.confirmed) >= confirmed_at_kill + 500,
            timeout=30,
            what="500 confirms through the new router",
        )
        publisher.stopping = True
        await asyncio.wait_for(publishing, 30)
        await eventually(
            lambda: publisher.confirmed <= consumer.bodies,
            timeout=30,
            what="every confirmed message delivered to the resumed subscription",
        )
    finally:
        consuming.cancel()
        publishing.cancel()
    # The same WebSocket connections carried on: no resubscribe, nothing but messages.
    assert consumer.other == []
    assert "router lease taken" in standby.log()
    await consumer.client.close()
    await publisher.client.close()


async def test_a_router_cut_off_from_the_database_steps_down(cluster: Cluster) -> None:
    router = cluster.node("router")
    standby = cluster.node("standby")
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'broker-router-lease' AND datname = current_database()"
            " AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
        ).fetchall()
    assert killed == [(True,)]
    assert router.proc is not None
    assert router.proc.wait(10) == 75  # the lease is lost: it stops rather than run as a second router
    await eventually(lambda: role(standby) == "router", timeout=20, interval=HEALTH_INTERVAL, what="the standby takes over")


async def test_unacknowledged_messages_of_a_dead_edge_go_to_another_subscriber(cluster: Cluster) -> None:
    router = cluster.node("router")
    edge_a = cluster.node("edge-a", edge=True)
    edge_b = cluster.node("edge-b", edge=True)
    async with httpx.AsyncClient(base_url=router.url, timeout=10) as http:
        assert (await http.post("/api/queues/", json={"name": "jobs"})).status_code == 201
        doomed = await WsClient.connect(edge_a.ws_url)
        await doomed.request({"type": "subscribe", "id": 1, "queue": "jobs", "ack": "client", "prefetch": 10})
        for number in range(5):
            response = await http.post("/api/exchanges/amq.default/publish/", json={"routing_key": "jobs", "body": number})
            assert response.json()["routed"] == 1
        assert [m["body"] for m in await doomed.messages(5)] == [0, 1, 2, 3, 4]
        survivor = await WsClient.connect(edge_b.ws_url)
        await survivor.request({"type": "subscribe", "id": 1, "queue": "jobs", "ack": "client"})
        assert await survivor.silent(0.5)
        edge_a.stop(signal.SIGKILL)
        got = await survivor.messages(5, timeout=15)
        assert [m["body"] for m in got] == [0, 1, 2, 3, 4]
        assert all(m["redelivered"] for m in got)
        await survivor.close()
