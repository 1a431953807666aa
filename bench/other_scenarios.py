"""HTTP publish, recovery with stored messages, and idle connections.

`recovery` fills a fresh database directly (bulk SQL into queues_message, as
the migrations left it) and starts `runbroker` on it; the other two use a
running target like the WebSocket scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Final

import httpx

from .dialects import body_text
from .loadgen import Consumer
from .measure import Measurement, Mode, window
from .processes import Database, OurBroker, rss_bytes
from .targets import HttpPublish, Target
from .ws_scenarios import GRACE, OPEN_CONCURRENCY, unique

HTTP_CLIENTS: Final = 8
RECOVERY_QUEUE: Final = "bench.recovery"
INSERT_CHUNK: Final = 50_000
SETTLE: Final = 1.0  # after the last connection opens, before RSS is read


async def _http_client(request: HttpPublish, stop: asyncio.Event, counter: list[int], index: int) -> None:
    """One keep-alive connection: send the pre-encoded request, read the answer, repeat."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(request.host, request.port), GRACE)
    try:
        while not stop.is_set():
            writer.write(request.request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GRACE)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"HTTP publish answered {head[:200]!r}")
            lower = head.lower()
            i = lower.find(b"content-length:")
            if i >= 0:
                await reader.readexactly(int(lower[i + 15 : lower.find(b"\r\n", i)]))
            elif b"transfer-encoding: chunked" in lower:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            counter[index] += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def http_publish(target: Target, mode: Mode) -> Measurement:
    """Scenario 6: 8 keep-alive clients POSTing persistent messages to a durable queue."""
    queue = unique("bench.http")
    request = target.http_publish(queue)
    if request is None:
        return Measurement(None, note="no HTTP publish API (RabbitMQ management plugin not enabled)")
    await target.declare_queue(queue)
    stop = asyncio.Event()
    counter = [0] * HTTP_CLIENTS
    tasks = [asyncio.create_task(_http_client(request, stop, counter, i)) for i in range(HTTP_CLIENTS)]
    try:
        count, seconds, cpu = await window(lambda: sum(counter), target, mode)
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=GRACE)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    errors = [str(t.exception())[:200] for t in done if not t.cancelled() and t.exception() is not None]
    return Measurement(count / seconds, count, cpu, note="; ".join(errors))


def _rows(queue_id: int, start: int, stop: int) -> Iterator[tuple[object, ...]]:
    body = body_text()
    published = "2026-01-01T00:00:00.000000Z"
    for i in range(start, stop):
        yield (i, queue_id, f"{i:032x}", "", RECOVERY_QUEUE, body, "{}", published)


def fill(database: Database, count: int) -> None:
    """Store `count` messages in one durable queue, straight into the migrated tables."""
    columns = "(id, queue_id, message_id, exchange, routing_key, body, headers, published_at)"
    if database.url:
        import psycopg

        with psycopg.connect(database.url) as conn:
            queue_id = conn.execute(
                "INSERT INTO queues_queue (name, durable, auto_delete, arguments, created_at) "
                "VALUES (%s, true, false, '{}', now()) RETURNING id",
                (RECOVERY_QUEUE,),
            ).fetchone()[0]  # type: ignore[index]
            with conn.cursor().copy(f"COPY queues_message {columns} FROM STDIN") as copy:
                for row in _rows(queue_id, 1, count + 1):
                    copy.write_row(row)
        return
    lite = sqlite3.connect(database.sqlite_path)
    try:
        lite.execute("PRAGMA journal_mode=WAL")
        lite.execute("PRAGMA synchronous=OFF")
        cursor = lite.execute(
            "INSERT INTO queues_queue (name, durable, auto_delete, arguments, created_at) VALUES (?, 1, 0, '{}', ?)",
            (RECOVERY_QUEUE, time.strftime("%Y-%m-%d %H:%M:%S")),
        )
        queue_id = cursor.lastrowid
        assert queue_id is not None
        for start in range(1, count + 1, INSERT_CHUNK):
            lite.executemany(f"INSERT INTO queues_message {columns} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _rows(queue_id, start, min(count + 1, start + INSERT_CHUNK)))
        lite.commit()
    finally:
        lite.close()


def recovery(mode: Mode, database_url: str | None) -> Measurement:
    """Scenario 7: start-up time and RSS of runbroker with N stored messages (ours only)."""
    database = Database(database_url)
    broker = OurBroker(database)
    try:
        broker.start()  # migrates the fresh database; its idle RSS is the baseline
        empty_rss, empty_start = rss_bytes(broker.ps), broker.startup_seconds
        broker.stop()
        filled = time.monotonic()
        fill(database, mode.recovery_messages)
        fill_seconds = time.monotonic() - filled
        broker = OurBroker(database)
        broker.start()
        rss = rss_bytes(broker.ps)
        loaded = _loaded_count(broker)
    finally:
        broker.stop()
        database.drop()
    n = mode.recovery_messages
    per_message = (rss - empty_rss) / 1024 / n
    note = (
        f"{n:,} stored; RSS {rss / 2**20:.0f} MiB, {per_message:.2f} KiB/message over the empty broker's "
        f"{empty_rss / 2**20:.0f} MiB; empty start {empty_start:.2f} s"
    )
    if loaded is not None and loaded != n:
        note += f"; BROKER REPORTS {loaded} messages in the queue"
    return Measurement(
        broker.startup_seconds,
        note=note,
        extra={
            "rss_mib": rss / 2**20,
            "empty_rss_mib": empty_rss / 2**20,
            "kib_per_message": per_message,
            "fill_seconds": fill_seconds,
        },
    )


def _loaded_count(broker: OurBroker) -> int | None:

    try:
        reply = httpx.get(f"{broker.url}/api/queues/{RECOVERY_QUEUE}/", timeout=GRACE)
        return int(json.loads(reply.text)["messages"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


async def connections(target: Target, mode: Mode, limit: int | None = None) -> Measurement:
    """Scenario 8: RSS growth per idle WebSocket connection subscribed to an exchange."""
    n = min(mode.connections, limit) if limit else mode.connections
    exchange = target.fanout_name(uuid.uuid4().hex[:8])
    await target.declare_fanout(exchange)
    clients = [Consumer(target.dialect, exchange=exchange, client_ack=False) for _ in range(n)]
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    before = rss_bytes(target.process)

    async def open_one(index: int) -> None:
        async with gate:
            await clients[index].open(target.ws_url, tag=f"c{index}")

    try:
        results = await asyncio.wait_for(asyncio.gather(*(open_one(i) for i in range(n)), return_exceptions=True), 60 + n / 50)
        failures = [r for r in results if isinstance(r, BaseException)]
        await asyncio.sleep(SETTLE)
        after = rss_bytes(target.process)
    finally:
        gate2 = asyncio.Semaphore(500)

        async def close_one(client: Consumer) -> None:
            async with gate2:
                await asyncio.wait_for(client.close(), GRACE)

        await asyncio.gather(*(close_one(c) for c in clients if c.ws is not None), return_exceptions=True)
    opened = n - len(failures)
    note = f"{opened:,} connections"
    if n < mode.connections:
        note += f" (limited by the server's open-file limit, {mode.connections:,} asked)"
    if failures:
        note += f"; {len(failures)} failed ({type(failures[0]).__name__}: {str(failures[0])[:80]})"
    if opened <= 0:
        return Measurement(None, note=note)
    return Measurement((after - before) / 1024 / opened, note=note, extra={"rss_before_mib": before / 2**20, "rss_after_mib": after / 2**20})
