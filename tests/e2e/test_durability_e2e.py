"""Durability (docs/protocol.md, "Durability"): every confirmed message survives SIGKILL,
in its queue's order; acknowledged ones do not come back after the checkpoint.
Runs on SQLite, and on PostgreSQL in the second run of scripts/test."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import httpx
import pytest

from tests.e2e.client import WsClient
from tests.e2e.harness import BrokerProcess
from tests.eventually import eventually

pytestmark = pytest.mark.e2e

QUEUES = ("durable-a", "durable-b")
WS_PUBLISHERS = 2
HTTP_PUBLISHERS = 4
KILL_AFTER = 1500  # confirmed messages before the SIGKILL; publishing goes on meanwhile


async def ws_publisher(url: str, stream: str, confirmed: dict[str, list[tuple[str, int]]], window: int = 64) -> None:
    """Publish n = 0, 1, 2… alternating between the queues, `window` unconfirmed at a time."""
    client = await WsClient.connect(url)
    pending: dict[str, tuple[str, int]] = {}
    n = 0
    try:
        while True:
            while len(pending) < window:
                queue = QUEUES[n % 2]
                frame_id = f"{stream}-{n}"
                pending[frame_id] = (queue, n)
                await client.send({"type": "publish", "id": frame_id, "exchange": "", "routing_key": queue,
                                   "body": {"stream": stream, "n": n}})
                n += 1
            reply = await client.recv(timeout=10)
            if reply["type"] == "confirm":
                queue, number = pending.pop(reply["id"])
                assert reply["routed"] == 1
                confirmed[stream].append((queue, number))
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def http_publisher(url: str, stream: str, confirmed: dict[str, list[tuple[str, int]]]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        n = 0
        while True:
            queue = QUEUES[n % 2]
            answer = await http.post("/api/exchanges/amq.default/publish/",
                                     json={"routing_key": queue, "body": {"stream": stream, "n": n}})
            assert answer.status_code == 200, answer.text
            confirmed[stream].append((queue, n))
            n += 1


async def publish_until_killed(broker: BrokerProcess) -> dict[str, list[tuple[str, int]]]:
    confirmed: dict[str, list[tuple[str, int]]] = defaultdict(list)
    tasks = [asyncio.create_task(ws_publisher(broker.ws_url, f"ws{i}", confirmed)) for i in range(WS_PUBLISHERS)]
    tasks += [asyncio.create_task(http_publisher(broker.url, f"http{i}", confirmed)) for i in range(HTTP_PUBLISHERS)]

    def enough_confirmed() -> bool:
        if sum(len(v) for v in confirmed.values()) >= KILL_AFTER:
            return True
        for task in tasks:
            if task.done():
                task.result()  # a publisher failed before the kill: show why
        return False

    await eventually(enough_confirmed, timeout=120, what=f"{KILL_AFTER} confirmed messages before the kill")
    await asyncio.to_thread(broker.kill)
    await asyncio.gather(*tasks, return_exceptions=True)  # they fail once the process is gone
    return confirmed


def drain(url: str, queue: str) -> list[dict]:  # type: ignore[type-arg]
    got: list[dict] = []  # type: ignore[type-arg]
    with httpx.Client(base_url=url, timeout=30) as http:
        while True:
            batch = http.post(f"/api/queues/{queue}/get/", json={"count": 500, "ack": True}).json()
            if not batch:
                return got
            got.extend(batch)


async def test_confirmed_messages_survive_sigkill_in_order_and_acked_ones_do_not_return(
    broker: BrokerProcess,
) -> None:
    with httpx.Client(base_url=broker.url) as http:
        for queue in QUEUES:
            assert http.post("/api/queues/", json={"name": queue}).status_code == 201

    confirmed = await publish_until_killed(broker)
    total_confirmed = sum(len(v) for v in confirmed.values())
    assert total_confirmed >= KILL_AFTER

    await asyncio.to_thread(broker.start)
    assert "stored messages" in broker.log()
    recovered = {queue: await asyncio.to_thread(drain, broker.url, queue) for queue in QUEUES}

    for queue, messages in recovered.items():
        assert all(m["redelivered"] for m in messages)
        by_stream: dict[str, list[int]] = defaultdict(list)
        for m in messages:
            by_stream[m["body"]["stream"]].append(m["body"]["n"])
        for stream, numbers in by_stream.items():
            assert numbers == sorted(numbers), f"{queue}/{stream} out of order"
            assert len(numbers) == len(set(numbers)), f"{queue}/{stream} duplicated"
        for stream, sent in confirmed.items():
            expected = {n for q, n in sent if q == queue}
            missing = expected - set(by_stream[stream])
            assert not missing, f"{len(missing)} confirmed messages of {stream} lost from {queue}"

    # Everything was acknowledged by the gets; past the checkpoint, a crash brings nothing back.
    # A fixed wait: the checkpoint interval (0.5 s, tests/e2e/harness.py) going by is the scenario.
    await asyncio.sleep(1.5)
    await asyncio.to_thread(broker.kill)
    await asyncio.to_thread(broker.start)
    with httpx.Client(base_url=broker.url) as http:
        for queue in QUEUES:
            assert http.get(f"/api/queues/{queue}/").json()["messages"] == 0
