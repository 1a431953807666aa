"""A replay of 10,000 dead-lettered messages, and the broker SIGKILLed half way: after a
restart every message is in exactly one of the two queues (none lost, none twice), and a
second replay finishes the job. The dead-letter queue is deeper than its window, so the
replay reads its backlog from the database too."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import httpx
import websockets

from broker.runtime.browser import BATCH
from tests.e2e.harness import DEAD_LETTER_TOPOLOGY, BrokerProcess

COUNT = 10_000


async def publish_and_reject(broker: BrokerProcess) -> None:
    async with websockets.connect(broker.ws_url, max_size=None) as ws:
        for n in range(COUNT):
            await ws.send(json.dumps({"type": "publish", "id": n, "exchange": "orders", "routing_key": "new",
                                      "body": {"n": n}, "message_id": f"order-{n}"}))
        confirmed = 0
        while confirmed < COUNT:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert frame["type"] == "confirm", frame
            confirmed += 1
        await ws.send(json.dumps({"type": "subscribe", "id": "s", "queue": "work", "ack": "client", "prefetch": 0}))
        last = 0
        received = 0
        while received < COUNT:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame["type"] == "message":
                received += 1
                last = frame["delivery_tag"]
        await ws.send(json.dumps({"type": "nack", "delivery_tag": last, "multiple": True, "requeue": False}))
        await ws.send(json.dumps({"type": "unsubscribe", "id": "s"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] != "unsubscribed":
            pass


def ids_in(broker: BrokerProcess, queue: str) -> list[str]:
    found: list[str] = []
    with httpx.Client(base_url=broker.url, timeout=60) as api:
        while True:
            page = api.get(f"/api/queues/{queue}/messages/", params={"offset": len(found), "limit": 1000}).json()
            found += [message["message_id"] for message in page["messages"]]
            if len(found) >= page["count"]:
                return found


async def test_a_replay_killed_half_way_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path, extra_env={"QUEUE_WINDOW": "1000"})
    broker.start()
    try:
        async with httpx.AsyncClient(base_url=broker.url, timeout=60) as api:
            for path, data in DEAD_LETTER_TOPOLOGY:
                assert (await api.post(path, json=data)).status_code == 201
            await publish_and_reject(broker)
            assert (await api.get("/api/queues/dead/")).json()["messages_ready"] == COUNT

            replay = asyncio.create_task(api.post("/api/queues/dead/messages/replay/", json={"all": True}))
            while True:  # kill it once a batch is committed (the next one started), before the last
                ready = (await api.get("/api/queues/work/")).json()["messages_ready"]
                if ready > BATCH:
                    break
                await asyncio.sleep(0.005)
            broker.kill()
            replay.cancel()
        assert BATCH < ready < COUNT, f"the kill came after the replay ended ({ready} moved)"

        broker.start()
        moved, left = ids_in(broker, "work"), ids_in(broker, "dead")
        counts = Counter(moved + left)
        assert len(counts) == COUNT and set(counts.values()) == {1}, "lost or duplicated"
        assert 0 < len(moved) < COUNT  # it did stop half way

        async with httpx.AsyncClient(base_url=broker.url, timeout=60) as api:
            done = (await api.post("/api/queues/dead/messages/replay/", json={"all": True})).json()
        assert done["taken"] == len(left)
        assert sorted(ids_in(broker, "work")) == sorted(f"order-{n}" for n in range(COUNT))
        assert ids_in(broker, "dead") == []
    finally:
        broker.close()
