"""The WebSocket scenarios: publish, consume, latency, fanout saturated, fanout paced.

Each function runs one repetition against one target and returns a
`Measurement`; every client is closed and every task ended before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Final

from .loadgen import Consumer, Publisher
from .measure import Measurement, Mode, percentile, window
from .targets import Target

PUBLISHERS: Final = 4
CONFIRM_WINDOW: Final = 256
PREFETCH: Final = 100
LATENCY_RATE: Final = 1000.0
FANOUT_SUBSCRIBERS: Final = 100
FANOUT_RATE: Final = 100.0  # x 100 subscribers = 10k deliveries/s
# Deliveries the fanout publisher may be ahead of its subscribers (all together)
# before it holds: bounds the broker's memory without limiting its throughput.
FANOUT_LAG: Final = FANOUT_SUBSCRIBERS * 500
# Time for clients to finish after a window (confirms in flight, closes).
GRACE: Final = 10.0
OPEN_CONCURRENCY: Final = 50


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


async def _finish(stop: asyncio.Event, tasks: Sequence[asyncio.Task[None]]) -> list[str]:
    """Stop the clients and wait for them (bounded); their errors become notes."""
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=GRACE)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    errors = []
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            errors.append(f"{type(task.exception()).__name__}: {task.exception()}"[:200])
    return errors


@contextlib.asynccontextmanager
async def _opened(clients: Sequence[Publisher | Consumer], target: Target) -> AsyncIterator[None]:
    """Open every client (a few at a time) and close them all afterwards, whatever happens.

    Consumers connect to `target.ws_url`, publishers to `target.publisher_url`
    (in a cluster, another edge: every message crosses the cluster).
    """
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one(client: Publisher | Consumer, index: int) -> None:
        async with gate:
            if isinstance(client, Consumer):
                await client.open(target.ws_url, tag=f"s{index}")
            else:
                await client.open(target.publisher_url)

    try:
        await asyncio.wait_for(asyncio.gather(*(open_one(c, i) for i, c in enumerate(clients))), GRACE * 6)
        yield
    finally:
        await asyncio.gather(*(asyncio.wait_for(c.close(), GRACE) for c in clients if c.ws is not None), return_exceptions=True)


async def publish(target: Target, mode: Mode) -> tuple[Measurement, str, int]:
    """Scenario 1. Also returns the filled queue and how many messages it holds, for `consume`."""
    queue = unique("bench.fill")
    await target.declare_queue(queue)
    publishers = [Publisher(target.dialect, target.queue_destination(queue), persistent=True, window=CONFIRM_WINDOW) for _ in range(PUBLISHERS)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with _opened(publishers, target):
        deadline = loop.time() + mode.warmup + mode.duration + GRACE
        tasks = [asyncio.create_task(p.run(stop, deadline)) for p in publishers]
        count, seconds, cpu = await window(lambda: sum(p.confirmed for p in publishers), target, mode)
        errors = await _finish(stop, tasks)
        await asyncio.gather(*(p.drain(GRACE) for p in publishers))
    stored = sum(p.confirmed for p in publishers)
    return Measurement(count / seconds, count, cpu, note="; ".join(errors)), queue, stored


async def consume(target: Target, mode: Mode, queue: str, stored: int) -> Measurement:
    """Scenario 2: drain a pre-filled durable queue with one client-ack consumer."""
    consumer = Consumer(target.dialect, queue=queue, client_ack=True, prefetch=PREFETCH)
    limit = None if target.is_ceiling else stored
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with _opened([consumer], target):
        task = asyncio.create_task(consumer.run(stop, loop.time() + mode.warmup + mode.duration + GRACE, limit=limit))
        count, seconds, cpu = await window(lambda: consumer.received, target, mode, done=task.done)
        errors = await _finish(stop, [task])
    note = "; ".join(errors)
    if limit is not None and consumer.received < min(limit, 1) and not note:
        note = "queue was empty"
    return Measurement(count / seconds if seconds > 0 else None, count, cpu, note=note, extra={"stored": stored})


async def latency(target: Target, mode: Mode) -> Measurement:
    """Scenario 3: p50/p99 of publish-to-delivery at 1,000 persistent messages/s, one consumer."""
    queue = unique("bench.lat")
    await target.declare_queue(queue)
    return await _paced(
        target,
        mode,
        [Consumer(target.dialect, queue=queue, client_ack=True, prefetch=PREFETCH, latencies=True)],
        Publisher(target.dialect, target.queue_destination(queue), persistent=True, window=CONFIRM_WINDOW),
        LATENCY_RATE,
    )


async def fanout_latency(target: Target, mode: Mode) -> Measurement:
    """Scenario 5: 100 msg/s to a fanout exchange with 100 subscribers (10k deliveries/s), p99."""
    exchange = target.fanout_name(uuid.uuid4().hex[:8])
    await target.declare_fanout(exchange)
    consumers = [Consumer(target.dialect, exchange=exchange, client_ack=False, latencies=True) for _ in range(FANOUT_SUBSCRIBERS)]
    publisher = Publisher(target.dialect, target.fanout_destination(exchange), persistent=False, window=CONFIRM_WINDOW)
    return await _paced(target, mode, consumers, publisher, FANOUT_RATE)


async def _paced(target: Target, mode: Mode, consumers: list[Consumer], publisher: Publisher, rate: float) -> Measurement:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with _opened([*consumers, publisher], target):
        deadline = loop.time() + mode.warmup + mode.duration + GRACE
        tasks = [asyncio.create_task(c.run(stop, deadline)) for c in consumers]
        tasks.append(asyncio.create_task(publisher.run(stop, deadline, rate=rate, timestamps=True)))
        await asyncio.sleep(mode.warmup)
        marks = [len(c.latencies or []) for c in consumers]
        sent0 = publisher.sent
        t0 = loop.time()
        count, _seconds, cpu = await window(lambda: sum(c.received for c in consumers), target, dataclasses.replace(mode, warmup=0.0))
        samples = [x for c, mark in zip(consumers, marks, strict=True) for x in (c.latencies or [])[mark:]]
        sent = publisher.sent - sent0
        errors = await _finish(stop, tasks)
    if not samples:
        return Measurement(None, count, cpu, note="; ".join(errors) or "no deliveries")
    expected = sent * len(consumers)
    notes = errors
    if expected and count < 0.9 * expected:
        notes.append(f"overloaded: {count} of {expected} deliveries in the window")
    achieved = sent / (loop.time() - t0) if loop.time() > t0 else 0.0
    p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
    return Measurement(p99, count, cpu, note="; ".join(notes), extra={"p50_ms": p50, "p99_ms": p99, "publish_rate": achieved})


async def fanout(target: Target, mode: Mode) -> Measurement:
    """Scenario 4: one publisher, as fast as 100 subscribers take it; deliveries/s across them."""
    exchange = target.fanout_name(uuid.uuid4().hex[:8])
    await target.declare_fanout(exchange)
    consumers = [Consumer(target.dialect, exchange=exchange, client_ack=False) for _ in range(FANOUT_SUBSCRIBERS)]
    publisher = Publisher(target.dialect, target.fanout_destination(exchange), persistent=False, window=CONFIRM_WINDOW)
    publisher.hold = asyncio.Event()
    publisher.hold.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def delivered() -> int:
        return sum(c.received for c in consumers)

    async def regulate() -> None:
        while not stop.is_set():
            if publisher.sent * len(consumers) - delivered() > FANOUT_LAG:
                publisher.hold.clear()  # type: ignore[union-attr]
            else:
                publisher.hold.set()  # type: ignore[union-attr]
            await asyncio.sleep(0.002)
        # A publisher held when the window ends must see `stop`, not wait out its timeout
        # and report subscribers that no longer count (they stop with the window).
        publisher.hold.set()  # type: ignore[union-attr]

    async with _opened([*consumers, publisher], target):
        deadline = loop.time() + mode.warmup + mode.duration + GRACE
        tasks = [asyncio.create_task(c.run(stop, deadline)) for c in consumers]
        tasks.append(asyncio.create_task(publisher.run(stop, deadline)))
        regulator = asyncio.create_task(regulate())
        count, seconds, cpu = await window(delivered, target, mode)
        errors = await _finish(stop, tasks)
        regulator.cancel()
        await asyncio.gather(regulator, return_exceptions=True)
    return Measurement(count / seconds, count, cpu, note="; ".join(errors))
