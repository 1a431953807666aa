"""The real PostgreSQL stops under load: durable publishes fail with `unavailable`
while it is away, memory-only traffic keeps flowing, /health and /metrics say
that the store does not answer, and the broker recovers by itself when it is back. Needs E2E_DATABASE_URL and the right to run
pg_ctlcluster: it fails, never skips, without them (scripts/test runs it in the
PostgreSQL phase)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.client import WsClient
from tests.e2e.harness import BrokerProcess
from tests.eventually import eventually, eventually_sync

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    extra = ["-m", "fast"] if action == "stop" else []
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *extra],
        check=True, capture_output=True, timeout=60,
    )


def wait_for_postgres() -> None:
    eventually_sync(
        lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True).returncode == 0,
        timeout=60,
        interval=0.5,
        what="PostgreSQL back",
    )


@pytest.fixture
def pg_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    assert os.environ.get("E2E_DATABASE_URL", "").startswith("postgres"), "E2E_DATABASE_URL must name PostgreSQL"
    process = BrokerProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        cluster("start") if subprocess.run(["pg_isready", "-h", "127.0.0.1"], capture_output=True).returncode else None
        wait_for_postgres()
        process.close()


async def test_postgres_outage_gives_unavailable_then_recovers(pg_broker: BrokerProcess) -> None:
    url = pg_broker.url
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        assert (await http.post("/api/queues/", json={"name": "stored"})).status_code == 201
        assert (await http.post("/api/queues/", json={"name": "memory", "durable": False})).status_code == 201
        subscriber = await WsClient.connect(pg_broker.ws_url)
        await subscriber.request({"type": "subscribe", "id": "m", "queue": "memory"})

        confirmed: list[int] = []
        refused: list[str] = []

        async def load() -> None:
            n = 0
            while True:
                answer = await http.post("/api/exchanges/amq.default/publish/",
                                         json={"routing_key": "stored", "body": n})
                if answer.status_code == 200:
                    confirmed.append(n)
                else:
                    refused.append(answer.json()["error"]["code"])
                n += 1
                await asyncio.sleep(0.005)

        publisher = asyncio.create_task(load())
        await asyncio.sleep(0.5)  # the load runs a while before the outage
        await asyncio.to_thread(cluster, "stop")
        try:
            # A fixed wait: the outage lasts a while, and every refusal in it must be `unavailable`.
            await asyncio.sleep(2)
            assert refused and set(refused) == {"unavailable"}
            # Memory-only traffic does not need the database.
            answer = await http.post("/api/exchanges/amq.default/publish/",
                                     json={"routing_key": "memory", "body": "still here"})
            assert (answer.status_code, answer.json()["routed"]) == (200, 1)
            assert (await subscriber.messages(1))[0]["body"] == "still here"
            # And the node says so: /health is 503 naming the store, the metrics count it out.
            health = await http.get("/health")
            assert health.status_code == 503
            assert (health.json()["router"], health.json()["store"]) == (True, False)
            assert "pubsub_store_reachable 0.0" in (await http.get("/metrics")).text
        finally:
            await asyncio.to_thread(cluster, "start")
            await asyncio.to_thread(wait_for_postgres)

        recovered_at = len(confirmed)
        try:
            await eventually(
                lambda: len(confirmed) > recovered_at + 20,
                timeout=30,
                interval=0.1,
                what="durable publishing recovers",
            )
        finally:
            publisher.cancel()
        health = await http.get("/health")
        assert (health.status_code, health.json()["store"]) == (200, True)

        stored = (await http.post("/api/queues/stored/get/", json={"count": 100000})).json()
        got = {m["body"] for m in stored}
        assert set(confirmed) <= got  # every confirmed message, before and after the outage
        await subscriber.close()


async def test_publishes_retried_through_an_outage_by_the_python_client_are_delivered_once(
    pg_broker: BrokerProcess,
) -> None:
    """PostgreSQL stopped for 10 s under load: the bundled client publishes again on
    `unavailable` with the same message id, and the broker routes each message once."""
    from pubsub_client import Backoff, Client

    async with httpx.AsyncClient(base_url=pg_broker.url, timeout=30) as http:
        assert (await http.post("/api/queues/", json={"name": "retried"})).status_code == 201
    confirmed: list[str] = []
    sent: list[str] = []

    async def publisher(client: Client, name: str) -> None:
        n = 0
        while True:
            message_id = f"{name}-{n}"
            sent.append(message_id)
            await client.publish("", {"n": n}, routing_key="retried", message_id=message_id)
            confirmed.append(message_id)
            n += 1

    backoff = Backoff(initial=0.05, maximum=0.5)
    clients = [Client(pg_broker.url, backoff=backoff) for _ in range(8)]
    tasks = [asyncio.create_task(publisher(client, f"p{i}")) for i, client in enumerate(clients)]
    try:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster, "stop")
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.to_thread(cluster, "start")
            await asyncio.to_thread(wait_for_postgres)
        at_recovery = len(confirmed)
        await eventually(lambda: len(confirmed) > at_recovery + 200, timeout=60, what="publishing recovers")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()
    async with httpx.AsyncClient(base_url=pg_broker.url, timeout=60) as http:
        stored = (await http.post("/api/queues/retried/get/", json={"count": 1_000_000})).json()
    delivered = Counter(m["message_id"] for m in stored)
    assert [i for i, count in delivered.items() if count > 1] == [], "delivered more than once"
    assert set(confirmed) <= set(delivered), "confirmed, never delivered"
    assert set(delivered) <= set(sent), "delivered, never sent"
