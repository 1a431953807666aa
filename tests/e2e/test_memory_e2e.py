"""Bounded memory against the real runbroker (docs/protocol.md, "Memory and flow
control"): over MEMORY_LIMIT publishers are held back, not refused silently nor
dropped, and resume once memory falls; the unsent data of subscribers that stop
reading is bounded for the whole process, not only per connection."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import websockets

from tests.e2e.harness import BrokerProcess
from tests.e2e.numbered import assert_told_when_held, drain_numbered, publish_numbered
from tests.e2e.test_backlog_e2e import PeakRss, rss
from tests.eventually import eventually

# The broker's memory against a limit, under load: not beside another test process.
pytestmark = [pytest.mark.e2e, pytest.mark.alone]

MIB = 1024 * 1024
LIMIT = 128 * MIB  # above an idle runbroker's resident size (about 85-90 MiB), with room to clear under 95% of it
MARGIN = 40 * MIB  # what the process may pass the limit by: a sample's worth of frames in flight
FLOOD = 16_000  # non-persistent 10 KiB messages: 160 MB queued if nothing held them back
BODY = "z" * 10_000


async def test_over_the_memory_limit_publishers_wait_and_resume_and_nothing_is_lost(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path, extra_env={"MEMORY_LIMIT": f"{LIMIT // MIB}MiB"})
    broker.start()
    try:
        assert broker.proc is not None
        assert rss(broker.proc.pid) < LIMIT, "an idle broker is over the test's limit: raise LIMIT"
        http = httpx.AsyncClient(base_url=broker.url, timeout=10)
        assert (await http.post("/api/queues/", json={"name": "flood", "durable": False})).status_code == 201
        peak = PeakRss(broker.proc.pid)
        confirmed: list[int] = []
        flow: list[str] = []
        publisher = asyncio.create_task(
            publish_numbered(broker.ws_url, "flood", FLOOD, BODY, persistent=False, in_flight=200, confirmed=confirmed,
                             flow=flow)
        )

        async def alarm() -> dict[str, object]:
            for _ in range(600):
                health = (await http.get("/health")).json()
                if health["memory"]["alarm"]:
                    return health
                assert not publisher.done() or publisher.result() is None
                await asyncio.sleep(0.05)
            raise AssertionError(f"no memory alarm; {len(confirmed)} confirmed")

        health = await alarm()
        assert health["memory"]["limit"] == LIMIT
        held = len(confirmed)
        await asyncio.sleep(1.0)
        assert len(confirmed) - held < 400, "the publisher was not held back"
        assert len(confirmed) < FLOOD
        refused = await http.post("/api/exchanges/amq.default/publish/", json={"routing_key": "flood", "body": 1})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "resource_limit"
        assert refused.headers["retry-after"] == "1"

        # A consumer drains the queue: memory falls, the publisher resumes, nothing is lost.
        got = await drain_numbered(broker.ws_url, "flood", FLOOD, prefetch=200, ack_every=100, timeout=30)
        await asyncio.wait_for(publisher, 30)
        assert sorted(confirmed) == list(range(FLOOD))
        assert got == list(range(FLOOD))  # each once, in order
        assert_told_when_held(flow)
        top = peak.stop()
        assert top < LIMIT + MARGIN, f"RSS reached {top / MIB:.0f} MiB, limit {LIMIT / MIB:.0f} MiB"

        async def cleared() -> bool:  # the queue is empty: memory falls back under the limit
            return (await http.get("/health")).json()["memory"]["alarm"] is False

        await eventually(cleared, timeout=20, interval=0.2, what="the memory alarm clears once drained")
        await http.aclose()
    finally:
        broker.close()


async def test_subscribers_that_stop_reading_cannot_take_the_process_past_its_unsent_budget(tmp_path: Path) -> None:
    """Default settings: 300 subscribers of a fanout exchange that never read, 20,000
    messages of 1 KiB; a subscriber that reads gets them all."""
    broker = BrokerProcess(tmp_path)
    broker.start()
    sleepers: list[websockets.ClientConnection] = []
    try:
        assert broker.proc is not None
        http = httpx.AsyncClient(base_url=broker.url, timeout=10)
        assert (await http.post("/api/exchanges/", json={"name": "news", "type": "fanout"})).status_code == 201
        for n in range(300):
            ws = await websockets.connect(broker.ws_url, max_size=None, max_queue=1)  # reads almost nothing
            await ws.send(json.dumps({"type": "subscribe", "id": f"s{n}", "exchange": "news"}))
            sleepers.append(ws)
        reader = await websockets.connect(broker.ws_url, max_size=None)
        await reader.send(json.dumps({"type": "subscribe", "id": "r", "exchange": "news", "ack": "client",
                                      "prefetch": 500}))
        assert json.loads(await reader.recv())["type"] == "subscribed"
        await asyncio.sleep(0.5)  # the sleepers' subscriptions are made
        peak = PeakRss(broker.proc.pid)
        got: list[int] = []

        async def read() -> None:
            while len(got) < 20_000:
                frame = json.loads(await asyncio.wait_for(reader.recv(), 30))
                if frame["type"] == "message":
                    got.append(frame["body"]["n"])
                    if len(got) % 250 == 0:
                        await reader.send(json.dumps({"type": "ack", "delivery_tag": frame["delivery_tag"],
                                                      "multiple": True}))

        reading = asyncio.create_task(read())
        pad = "p" * 1000
        async with websockets.connect(broker.ws_url, max_size=None) as publisher:
            for start in range(0, 20_000, 500):
                for n in range(start, start + 500):
                    await publisher.send(json.dumps({"type": "publish", "exchange": "news", "body": {"n": n, "pad": pad},
                                                     "persistent": False}))
                answer = await http.get("/health", timeout=2)  # the broker answers throughout
                assert answer.status_code == 200
        await asyncio.wait_for(reading, 60)
        top = peak.stop()
        assert got == list(range(20_000))
        assert top < 512 * MIB, f"RSS reached {top / MIB:.0f} MiB"
        print(f"\n300 sleeping subscribers: peak RSS {top / MIB:.0f} MiB")  # the figure, for the README
        await reader.close()
        await http.aclose()
    finally:
        for ws in sleepers:
            ws.transport.abort()
        broker.close()
