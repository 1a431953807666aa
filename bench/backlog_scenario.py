"""The backlog scenario: a durable queue deeper than a broker would keep in memory.

Publish `mode.recovery_messages` persistent messages (100,000 with --quick, 1,000,000
otherwise) to a durable queue with no consumer, then drain it with one client-ack
consumer. Ours keeps a window of the queue in memory and the rest in its database;
RabbitMQ's queue is a lazy one (`x-queue-mode: lazy`: messages on disk, as few as
possible in memory). Both rates are measured, and the broker's peak RSS over the
whole run (sampled every 100 ms; every process of the server). Each rate comes with the
server's CPU seconds over its phase, so that a change can be judged by its cost per
message, which varies less from run to run than the rate.
"""

from __future__ import annotations

import asyncio
import threading

import psutil

from .loadgen import Consumer, Publisher
from .measure import Measurement, Mode
from .processes import total_cpu_seconds
from .targets import Target
from .ws_scenarios import CONFIRM_WINDOW, GRACE, PREFETCH, PUBLISHERS, _finish, _opened, unique

SAMPLE_SECONDS = 0.1
MIB = 1024 * 1024


class PeakRss:
    """The largest summed RSS of some processes, sampled in a thread."""

    def __init__(self, processes: list[psutil.Process]) -> None:
        self.processes, self.peak = processes, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                self.peak = max(self.peak, sum(p.memory_info().rss for p in self.processes))
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


async def backlog(target: Target, mode: Mode) -> dict[str, Measurement]:
    """{"backlog_publish", "backlog_consume", "backlog_rss"}: both rates and the peak RSS (MiB)."""
    total = mode.recovery_messages
    queue = unique("bench.backlog")
    await target.declare_queue(queue, lazy=True)
    peak = PeakRss(target.servers)
    loop = asyncio.get_running_loop()
    try:
        publishers = [
            Publisher(target.dialect, target.queue_destination(queue), persistent=True, window=CONFIRM_WINDOW)
            for _ in range(PUBLISHERS)
        ]
        stop = asyncio.Event()
        async with _opened(publishers, target):
            started, cpu = loop.time(), total_cpu_seconds(target.servers)
            tasks = [asyncio.create_task(p.run(stop, started + 3600)) for p in publishers]
            while sum(p.confirmed for p in publishers) < total and not all(t.done() for t in tasks):
                await asyncio.sleep(0.01)
            published_in, publish_cpu = loop.time() - started, total_cpu_seconds(target.servers) - cpu
            errors = await _finish(stop, tasks)
            await asyncio.gather(*(p.drain(GRACE) for p in publishers))
        stored = sum(p.confirmed for p in publishers)
        publish_rate = Measurement(
            total / published_in, total, publish_cpu, note="; ".join(errors), extra={"stored": stored}
        )

        consumer = Consumer(target.dialect, queue=queue, client_ack=True, prefetch=PREFETCH)
        stop = asyncio.Event()
        async with _opened([consumer], target):
            started, cpu = loop.time(), total_cpu_seconds(target.servers)
            task = asyncio.create_task(consumer.run(stop, started + 3600, limit=stored))
            await asyncio.wait([task])
            consumed_in, consume_cpu = loop.time() - started, total_cpu_seconds(target.servers) - cpu
            errors = await _finish(stop, [task])
        note = "; ".join(errors)
        if consumer.received < stored and not note:
            note = f"only {consumer.received} of {stored} received"
        consume_rate = Measurement(consumer.received / consumed_in, consumer.received, consume_cpu, note=note)
    finally:
        top = peak.stop()
    return {
        "backlog_publish": publish_rate,
        "backlog_consume": consume_rate,
        "backlog_rss": Measurement(top / MIB, total, note=f"{total:,} messages"),
    }
