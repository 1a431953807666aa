"""A Prometheus scrape with many queues: ours (`GET /metrics`) against RabbitMQ's
`rabbitmq_prometheus` plugin (`GET :15692/metrics/per-object`, its per-queue
metrics; `rabbitmq-plugins enable rabbitmq_prometheus`).

Each side holds N queues with a consumer and a binding: ours are a JSON
WebSocket subscriber's private queues bound to `amq.fanout`, RabbitMQ's
exclusive queues declared, bound and consumed over AMQP (pika); closing the
connection deletes them all. The value is the median time of a scrape; the
server's CPU seconds per scrape and the body's size go in `extra`.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import websockets

from .measure import Measurement
from .processes import cpu_seconds
from .targets import Target

SCRAPES = 5


async def _scrape_times(target: Target, url: str, auth: tuple[str, str] | None) -> Measurement:
    async with httpx.AsyncClient(timeout=60, auth=auth) as http:
        await http.get(url)  # warm: label caches, connections
        times: list[float] = []
        size = 0
        cpu_before = cpu_seconds(target.process)
        for _ in range(SCRAPES):
            started = time.perf_counter()
            answer = await http.get(url)
            times.append(time.perf_counter() - started)
            answer.raise_for_status()
            size = len(answer.content)
        cpu = cpu_seconds(target.process) - cpu_before
    return Measurement(
        statistics.median(times) * 1000,
        note=f"{size / 2**20:.1f} MiB and {cpu / SCRAPES * 1000:.0f} ms of server CPU per scrape",
        extra={"cpu_ms_per_scrape": cpu / SCRAPES * 1000, "mib": size / 2**20},
    )


async def ours(target: Target, queues: int) -> Measurement:
    assert target.http_base is not None
    async with websockets.connect(target.ws_url, max_size=None) as ws:
        for n in range(queues):
            await ws.send(json.dumps({"type": "subscribe", "id": f"s{n}", "exchange": "amq.fanout"}))
        subscribed = 0
        while subscribed < queues:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if frame.get("type") == "subscribed":
                subscribed += 1
            elif frame.get("type") == "error":
                raise RuntimeError(f"subscribe refused: {frame}")
        return await _scrape_times(target, f"{target.http_base}/metrics", None)


def _rabbit_queues(amqp_url: str, queues: int, ready: Callable[[], None], done: Any) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for _ in range(queues):
            name = channel.queue_declare("", exclusive=True).method.queue
            channel.queue_bind(name, "amq.fanout")
            channel.basic_consume(name, lambda *_: None, auto_ack=True)
        ready()
        while not done.is_set():
            connection.process_data_events(time_limit=0.2)
    finally:
        connection.close()  # the exclusive queues go with it


async def rabbitmq(target: Target, amqp_url: str, prometheus_url: str, queues: int) -> Measurement:
    import threading

    loop = asyncio.get_running_loop()
    declared: asyncio.Future[None] = loop.create_future()
    done = threading.Event()

    def ready() -> None:
        loop.call_soon_threadsafe(declared.set_result, None)

    holder = asyncio.create_task(asyncio.to_thread(_rabbit_queues, amqp_url, queues, ready, done))
    try:
        await asyncio.wait([holder, asyncio.ensure_future(declared)], timeout=300, return_when=asyncio.FIRST_COMPLETED)
        if holder.done():
            holder.result()  # its failure
        if not declared.done():
            raise TimeoutError(f"RabbitMQ did not declare {queues} queues in 300 s")
        await asyncio.sleep(6)  # rabbitmq_prometheus serves metrics collected every 5 s
        return await _scrape_times(target, f"{prometheus_url}/metrics/per-object", None)
    finally:
        done.set()
        await holder
