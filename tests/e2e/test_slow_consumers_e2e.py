"""1,000 WebSocket clients stop reading while the broker keeps publishing.

The real `runbroker` process, real sockets: every client subscribes (auto-ack) to
one fanout exchange, 1,000 of them then read nothing while a publisher goes on.
Each slow client's unsent data grows until WS_MAX_BUFFERED_BYTES and it is
closed (1008 `slow_consumer`, or cut when even the close cannot be written);
the broker's RSS stays under RSS_BOUND throughout, and the well-behaved
clients receive every message, in order, the whole time.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import time
from pathlib import Path
from typing import Final

import httpx
import psutil
import pytest
import websockets

from tests.e2e.harness import BrokerProcess

# A thousand clients and the broker's memory over time: not beside another test process.
pytestmark = pytest.mark.alone

SLOW_CLIENTS: Final = 1000
GOOD_CLIENTS: Final = 3
RATE: Final = 25  # messages per second, each to 1,003 subscribers
SECONDS: Final = 16
PAD: Final = 4000  # bytes of body per message: ~100 KB/s per subscriber
BUFFERED: Final = 128 * 1024  # WS_MAX_BUFFERED_BYTES for this run
# Expected peak: an empty broker (~75 MiB), 1,000 connections (~27 KiB each), and per slow
# client up to BUFFERED in its outbox plus the server transport's 64 KiB high-water mark:
# ~290 MiB. Measured 314 MiB at the peak on a 2-core VM; 400 MiB leaves a quarter for noise.
# Without the bound the 1,000 clients that do not read would add ~100 MB for every second.
RSS_BOUND: Final = 400 * 1024 * 1024


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = SLOW_CLIENTS + GOOD_CLIENTS + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


async def open_client(url: str, *, small_buffer: bool) -> websockets.ClientConnection:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small_buffer:
        # A small receive window: what the client does not read stays on the broker's side.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    # No compression: the bytes on the wire are the bytes the broker holds.
    return await websockets.connect(url, sock=sock, max_size=None, max_queue=1 if small_buffer else 1024, compression=None)


async def subscribe(ws: websockets.ClientConnection, exchange: str) -> None:
    await ws.send(json.dumps({"type": "subscribe", "id": "s", "exchange": exchange}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert reply["type"] == "subscribed", reply


class Good:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.seqs: list[int] = []

    async def read(self, count: int) -> None:
        while len(self.seqs) < count:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if frame["type"] == "message":
                self.seqs.append(frame["body"]["seq"])


async def watch_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        await asyncio.sleep(0.1)


async def run(broker: BrokerProcess) -> tuple[int, list[Good], list[websockets.ClientConnection], float]:
    http = httpx.Client(base_url=broker.url, timeout=30)
    assert http.post("/api/exchanges/", json={"name": "feed", "type": "fanout"}).status_code == 201
    peak, stop = [0], asyncio.Event()
    watcher = asyncio.create_task(watch_rss(broker.proc.pid, peak, stop))  # type: ignore[union-attr]
    goods = [Good(await open_client(broker.ws_url, small_buffer=False)) for _ in range(GOOD_CLIENTS)]
    for good in goods:
        await subscribe(good.ws, "feed")
    gate = asyncio.Semaphore(100)

    async def slow_one() -> websockets.ClientConnection:
        async with gate:
            ws = await open_client(broker.ws_url, small_buffer=True)
            await subscribe(ws, "feed")
            return ws

    slow = await asyncio.gather(*(slow_one() for _ in range(SLOW_CLIENTS)))
    total = RATE * SECONDS
    readers = [asyncio.create_task(good.read(total)) for good in goods]
    publisher = await open_client(broker.ws_url, small_buffer=False)
    started = time.monotonic()
    pad = "x" * PAD
    for seq in range(total):
        frame = {"type": "publish", "id": seq, "exchange": "feed", "body": {"seq": seq, "pad": pad}, "persistent": False}
        await publisher.send(json.dumps(frame))
        reply = json.loads(await asyncio.wait_for(publisher.recv(), 10))
        assert reply["type"] == "confirm", reply
        await asyncio.sleep(max(0.0, started + (seq + 1) / RATE - time.monotonic()))
    await asyncio.wait_for(asyncio.gather(*readers), 30)
    elapsed = time.monotonic() - started
    stop.set()
    await watcher
    await publisher.close()
    return peak[0], goods, slow, elapsed


def test_slow_consumers_are_dropped_and_memory_stays_bounded(tmp_path: Path) -> None:
    raise_open_files_limit()
    broker = BrokerProcess(
        tmp_path,
        extra_env={"WS_MAX_BUFFERED_BYTES": str(BUFFERED), "MAX_CONNECTIONS_PER_IP": str(SLOW_CLIENTS + 100)},
    )
    broker.start()
    try:
        peak, goods, _slow, elapsed = asyncio.run(asyncio.wait_for(run(broker), 100))
        log = broker.log()
        dropped = log.count("(slow consumer)")
        print(f"peak RSS {peak / 2**20:.0f} MiB, {dropped} slow consumers dropped, {elapsed:.1f} s")
        assert peak < RSS_BOUND, f"peak RSS {peak / 2**20:.0f} MiB"
        assert dropped == SLOW_CLIENTS
        for good in goods:
            assert good.seqs == list(range(RATE * SECONDS))  # every message, in order
        # The broker still serves: a new client subscribes and is answered.
        assert httpx.get(f"{broker.url}/api/exchanges/feed/", timeout=10).status_code == 200
    finally:
        broker.close()
