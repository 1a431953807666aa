"""`/metrics` of the real `runbroker`, read by prometheus-client's parser after a known
workload over the JSON WebSocket and STOMP over TCP: its counts match the API's and the
workload's, and `/health` and `/metrics` say so when the message store goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.client import WsClient
from tests.e2e.harness import BrokerProcess, free_port
from tests.e2e.test_stomp_e2e import Client as StompClient

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(broker: BrokerProcess) -> Samples:
    answer = httpx.get(f"{broker.url}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path, extra_env={"STOMP_PORT": str(free_port())})
    process.start()
    try:
        yield process
    finally:
        process.close()


async def test_a_known_workload_shows_in_every_family(broker: BrokerProcess) -> None:
    with httpx.Client(base_url=broker.url, timeout=10) as api:
        assert api.post("/api/exchanges/", json={"name": "dlx", "type": "fanout"}).status_code == 201
        assert api.post("/api/queues/", json={"name": "jobs.dead"}).status_code == 201
        assert api.post("/api/bindings/", json={"exchange": "dlx", "queue": "jobs.dead"}).status_code == 201
        answer = api.post("/api/queues/", json={"name": "jobs", "arguments": {"x-dead-letter-exchange": "dlx"}})
        assert answer.status_code == 201, answer.text

    worker = await WsClient.connect(broker.ws_url)
    reply = await worker.request({"type": "subscribe", "id": "w", "queue": "jobs", "ack": "client", "prefetch": 20})
    assert reply["type"] == "subscribed"
    stomp = await StompClient.open(int(broker.env["STOMP_PORT"]))
    assert (await stomp.connect()).command == "CONNECTED"
    await stomp.send("SUBSCRIBE", {"id": "0", "destination": "/amq/queue/jobs.dead", "receipt": "r"})
    assert (await stomp.receive()).command == "RECEIPT"

    with httpx.Client(base_url=broker.url, timeout=10) as api:
        for n in range(10):
            answer = api.post("/api/exchanges/amq.default/publish/", json={"routing_key": "jobs", "body": n})
            assert answer.json()["routed"] == 1
        assert api.post("/api/exchanges/dlx/publish/", json={"routing_key": "x", "body": "direct"}).json()["routed"] == 1
    got = await worker.messages(10)
    for message in got[:6]:
        await worker.send({"type": "ack", "delivery_tag": message["delivery_tag"]})
    for message in got[6:8]:
        await worker.send({"type": "nack", "delivery_tag": message["delivery_tag"], "requeue": True})
    for message in await worker.messages(2):
        assert message["redelivered"]
        await worker.send({"type": "ack", "delivery_tag": message["delivery_tag"]})
    for message in got[8:]:
        await worker.send({"type": "nack", "delivery_tag": message["delivery_tag"], "requeue": False})
    dead = [await stomp.receive() for _ in range(3)]  # the direct publish, then the two dead letters
    assert [frame.command for frame in dead] == ["MESSAGE"] * 3

    samples: Samples = {}
    for _ in range(50):  # the acks are on their way
        samples = scrape(broker)
        if samples[("pubsub_queue_messages_acknowledged_total", (("queue", "jobs"),))] == 8:
            break
        await asyncio.sleep(0.1)
    jobs, dead_queue = (("queue", "jobs"),), (("queue", "jobs.dead"),)
    expected = {
        "published": 10, "delivered": 12, "redelivered": 2, "acknowledged": 8, "nacked": 4,
        "dead_lettered": 2, "dropped": 0, "refused": 0,
    }
    assert {name: samples[(f"pubsub_queue_messages_{name}_total", jobs)] for name in expected} == expected
    assert samples[("pubsub_queue_messages_published_total", dead_queue)] == 3
    assert samples[("pubsub_queue_messages_delivered_total", dead_queue)] == 3
    assert samples[("pubsub_exchange_messages_published_total", (("exchange", "amq.default"),))] == 10
    assert samples[("pubsub_exchange_messages_published_total", (("exchange", "dlx"),))] == 1
    with httpx.Client(base_url=broker.url, timeout=10) as api:
        for queue in ("jobs", "jobs.dead"):
            detail = api.get(f"/api/queues/{queue}/").json()
            labels = (("queue", queue),)
            assert samples[("pubsub_queue_messages_ready", labels)] == detail["messages_ready"] == 0
            assert samples[("pubsub_queue_messages_unacknowledged", labels)] == detail["messages_unacknowledged"] == 0
            assert samples[("pubsub_queue_consumers", labels)] == detail["consumers"] == 1
    json_ws = (("protocol", "json"), ("transport", "websocket"))
    stomp_tcp = (("protocol", "stomp"), ("transport", "tcp"))
    assert (samples[("pubsub_connections", json_ws)], samples[("pubsub_subscriptions", json_ws)]) == (1, 1)
    assert (samples[("pubsub_connections", stomp_tcp)], samples[("pubsub_subscriptions", stomp_tcp)]) == (1, 1)
    assert samples[("pubsub_node_role", (("role", "router"),))] == 1
    assert samples[("pubsub_store_reachable", ())] == 1
    assert samples[("pubsub_store_commit_seconds_count", ())] >= 1
    assert samples[("pubsub_store_commit_messages_sum", ())] >= 10  # the ten published (copies acked before their commit are never written)
    assert samples[("pubsub_memory_used_bytes", ())] > 0 and samples[("pubsub_memory_limit_bytes", ())] > 0
    assert samples[("pubsub_memory_alarm", ())] == 0
    assert samples[("process_resident_memory_bytes", ())] > 0
    await worker.close()
    stomp.writer.close()
