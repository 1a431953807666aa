"""Publishing from Django code (docs/outbox.md) against the usual way, `transaction.on_commit` + RabbitMQ.

Both ways run the same Django transaction in processes of the project
(bench/outbox_worker.py) on the broker's own database: a row inserted into
`bench_order`, and the message(s) published. Ours writes them to the outbox
in the transaction (`pubsub.publish`, `publish_many`) and the running router
routes them once committed; theirs publishes them once committed
(`transaction.on_commit`) with pika and publisher confirms, to RabbitMQ.

- `latency`: one process, one message per transaction, paced at 1,000
  transactions/s (a process that cannot keep up goes as fast as it can; the
  rate reached is noted); p50/p99 of (received by a WebSocket subscriber -
  just before the commit). LATENCY_PROCESSES > 1 splits the rate between
  processes taking turns (on the 2-core machine two did no better: the
  publishers' own CPU was the bound).
  Ours are received from our broker, RabbitMQ's through its Web-STOMP
  plugin, by the same load generator.
- `throughput`: 4 processes, as fast as they go, `per_tx` messages per
  transaction; a message counts once committed (and, RabbitMQ's, confirmed).
  Ours must also be routed: the queue's count is read at the window's ends
  (routed/s) and followed after the last commit until it holds them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import httpx
import psutil

from .loadgen import Consumer
from .measure import Measurement, Mode, percentile, window
from .outbox_worker import ORDERS_TABLE
from .processes import ROOT, STARTED, Database, find_postgres, project_env, stop
from .targets import Target
from .ws_scenarios import GRACE, PREFETCH, unique

PROCESSES: Final = 4
LATENCY_RATE: Final = 1000.0
LATENCY_PROCESSES: Final = 1
# Committed faster than routed by more than this share: the outbox grew a backlog.
BACKLOG_SHARE: Final = 0.9
# Between `go` and the workers' start: time for every worker to read it.
LEAD: Final = 0.2
READY_TIMEOUT: Final = 60.0
# The longest ours may take, after the last commit, to have routed every message.
ROUTE_TIMEOUT: Final = 120.0
ROUTE_POLL: Final = 0.05


@dataclass
class Way:
    """One way of publishing: `ours` (the outbox) or `rabbitmq` (on_commit + pika)."""

    name: str
    target: Target  # queues are declared, and deliveries received, here; its process's CPU is measured
    database: Database  # the broker's: the Django processes use it either way
    amqp_url: str | None = None

    @property
    def is_ours(self) -> bool:
        return self.name == "ours"


# Called with the publishers' processes once they are ready (--profile records them too).
Started = Callable[[list[psutil.Process]], None]


def create_orders_table(database: Database) -> None:
    """The business table both ways insert a row into, in the broker's database."""
    if database.url:
        import psycopg

        with psycopg.connect(database.url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {ORDERS_TABLE} (id bigserial PRIMARY KEY, ref text NOT NULL, amount integer NOT NULL)")
        return
    with contextlib.closing(sqlite3.connect(database.sqlite_path, timeout=20)) as lite:
        lite.execute(f"CREATE TABLE IF NOT EXISTS {ORDERS_TABLE} (id integer PRIMARY KEY AUTOINCREMENT, ref text NOT NULL, amount integer NOT NULL)")
        lite.commit()


class Workers:
    """Django processes of the project running bench/outbox_worker.py, started together."""

    def __init__(self, way: Way, count: int, config: dict[str, Any]) -> None:
        self.way = way
        rate = config.get("rate")
        self.configs = [
            {
                **config,
                "way": way.name,
                "amqp_url": way.amqp_url,
                "first_seq": i * 10**9,
                "result": str(self._result_path(way, i)),
                "rate": rate / count if rate else None,
                "phase": i / rate if rate else 0.0,
            }
            for i in range(count)
        ]
        self.procs: list[subprocess.Popen[str]] = []
        self.log_path = way.database.tmpdir / f"outbox-workers-{way.name}.log"
        self._log: IO[str] | None = None

    @property
    def processes(self) -> list[psutil.Process]:
        return [psutil.Process(p.pid) for p in self.procs if p.poll() is None]

    async def start(self) -> None:
        env = project_env(self.way.database)
        env["DJANGO_SETTINGS_MODULE"] = "broker_project.settings"
        self._log = open(self.log_path, "a")  # closed by stop()
        for config in self.configs:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.outbox_worker", json.dumps(config)],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                start_new_session=True,
            )
            STARTED.append(proc)  # type: ignore[arg-type]
            self.procs.append(proc)
        for proc in self.procs:
            line = await asyncio.wait_for(asyncio.to_thread(self._line, proc), READY_TIMEOUT)
            if line.strip() != "ready":
                raise RuntimeError(f"a Django publisher did not start: {line!r}\n{self._tail()}")

    def go(self, at: float) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"go {at!r}\n")
            proc.stdin.flush()

    async def results(self, timeout: float) -> list[dict[str, Any]]:
        found = []
        for proc, config in zip(self.procs, self.configs, strict=True):
            line = await asyncio.wait_for(asyncio.to_thread(self._line, proc), timeout)
            if line.strip() != "done":
                raise RuntimeError(f"a Django publisher failed: {line!r}\n{self._tail()}")
            path = Path(config["result"])
            found.append(json.loads(path.read_text()))
            path.unlink()
        return found

    @staticmethod
    def _result_path(way: Way, index: int) -> Path:
        return way.database.tmpdir / f"outbox-worker-{way.name}-{index}-{uuid.uuid4().hex[:8]}.json"

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)  # type: ignore[arg-type]
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _line(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        return proc.stdout.readline()

    def _tail(self) -> str:
        return Path(self.log_path).read_text(errors="replace")[-2000:] if Path(self.log_path).exists() else ""


def _config(queue: str, mode: Mode, *, per_tx: int, rate: float | None) -> dict[str, Any]:
    return {"queue": queue, "per_tx": per_tx, "rate": rate, "warmup": mode.warmup, "duration": mode.duration}


def _measured(way: Way, workers: list[psutil.Process]) -> Target:
    """The target as `window` sees it: the publishers (and PostgreSQL, which both ways
    commit to) are part of the run, not other programs' load."""
    postgres = find_postgres() if way.database.url else []
    return dataclasses.replace(way.target, support=[*way.target.support, *workers, *postgres])


def queue_depth(target: Target, queue: str) -> int:
    """Messages in one of our queues (a blocking call: the window's ends only)."""
    reply = httpx.get(f"{target.http_base}/api/queues/{queue}/", timeout=GRACE)
    reply.raise_for_status()
    return int(reply.json()["messages"])


async def _forget(way: Way, queue: str) -> None:
    """Ours: delete the run's queue, so that its messages do not weigh on the next runs
    (RabbitMQ's are deleted by the target's cleanup)."""
    if way.is_ours:
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(base_url=way.target.http_base or "", timeout=60) as client:
                await client.delete(f"/api/queues/{queue}/")


async def latency(way: Way, mode: Mode, started: Started | None = None) -> Measurement:
    """Commit to delivery at 1,000 transactions/s, one message each: p99 (p50 in `extra`)."""
    queue = unique("bench.django.lat")
    await way.target.declare_queue(queue)
    arrivals: dict[int, float] = {}
    consumer = Consumer(way.target.dialect, queue=queue, client_ack=True, prefetch=PREFETCH, arrivals=arrivals)
    workers = Workers(way, LATENCY_PROCESSES, _config(queue, mode, per_tx=1, rate=LATENCY_RATE))
    loop = asyncio.get_running_loop()
    stop_event = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await consumer.open(way.target.ws_url)
        await workers.start()
        task = asyncio.create_task(consumer.run(stop_event, loop.time() + LEAD + mode.warmup + mode.duration + 2 * GRACE))
        workers.go(time.perf_counter() + LEAD)
        if started is not None:
            started(workers.processes)
        measured = _measured(way, workers.processes)
        await asyncio.sleep(LEAD)
        count, _seconds, cpu = await window(lambda: consumer.received, measured, mode)
        results = await workers.results(GRACE + mode.warmup)
        before = {int(seq): t for result in results for seq, t in result["before_commit"].items()}
        end = loop.time() + GRACE
        while loop.time() < end and not all(seq in arrivals for seq in before) and not task.done():
            await asyncio.sleep(0.01)
    finally:
        stop_event.set()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await consumer.close()
        workers.stop()
        await _forget(way, queue)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    samples = [arrivals[seq] - t for seq, t in before.items() if seq in arrivals]
    rate = len(before) / mode.duration
    extra: dict[str, float] = {}
    notes = [_publishers(results, 1, extra)]
    if len(samples) < len(before):
        notes.append(f"{len(before) - len(samples)} of {len(before)} messages not received within {GRACE:.0f} s")
    if rate < 0.9 * LATENCY_RATE:
        notes.append(f"the publishers reached only {rate:,.0f} transactions/s")
    if not samples:
        return Measurement(None, count, cpu, note="; ".join(notes) or "no deliveries")
    p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
    extra.update(p50_ms=p50, p99_ms=p99, publish_rate=rate, max_ms=max(samples) * 1000)
    return Measurement(p99, count, cpu, note="; ".join(notes), extra=extra)


async def throughput(way: Way, mode: Mode, per_tx: int, started: Started | None = None) -> Measurement:
    """Transactional publishes from 4 processes, `per_tx` messages per transaction: messages/s."""
    queue = unique(f"bench.django.{per_tx}")
    await way.target.declare_queue(queue)
    workers = Workers(way, PROCESSES, _config(queue, mode, per_tx=per_tx, rate=None))
    notes: list[str] = []
    extra: dict[str, float] = {}
    try:
        await workers.start()
        workers.go(time.perf_counter() + LEAD)
        if started is not None:
            started(workers.processes)
        measured = _measured(way, workers.processes)
        await asyncio.sleep(LEAD)

        def depth() -> int:
            return queue_depth(way.target, queue) if way.is_ours else 0

        routed, seconds, cpu = await window(depth, measured, mode)
        results = await workers.results(GRACE + mode.warmup + mode.duration)
        done = sum(r["done"] for r in results)
        total = sum(r["total"] for r in results)
        notes.append(_publishers(results, per_tx, extra))
        if way.is_ours:
            extra["routed_per_s"] = routed / seconds
            lag = await _routed_lag(way.target, queue, total, max(r["last_commit"] for r in results))
            if lag is None:
                notes.append(f"NOT ALL ROUTED: {queue_depth(way.target, queue):,} of {total:,} in the queue {ROUTE_TIMEOUT:.0f} s after the last commit")
            else:
                extra["routed_lag_s"] = lag
                if routed / seconds < BACKLOG_SHARE * done / mode.duration:
                    notes.append(f"BACKLOG: the router routed only {routed / seconds:,.0f} msg/s while they committed")
                notes.append(f"routed {routed / seconds:,.0f} msg/s in the window; all {total:,} routed {lag:.2f} s after the last commit")
    finally:
        workers.stop()
        await _forget(way, queue)
    return Measurement(done / mode.duration, done, cpu, note="; ".join(notes), extra=extra)


def _publishers(results: list[dict[str, Any]], per_tx: int, extra: dict[str, float]) -> str:
    """What the Django processes spent: CPU per 1,000 messages, and their transactions'
    time from BEGIN to committed (on SQLite, the database's write lock is held meanwhile)."""
    done = sum(r["done"] for r in results)
    transactions = done / per_tx
    if not done:
        return "no transaction in the window"
    extra["publisher_cpu_per_1k"] = sum(r["cpu"] or 0.0 for r in results) / done * 1000
    extra["transaction_ms"] = sum(r["in_transactions"] for r in results) / transactions * 1000
    return f"publishers' cpu s/1k {extra['publisher_cpu_per_1k']:.3f}, BEGIN to committed {extra['transaction_ms']:.2f} ms per transaction"


async def _routed_lag(target: Target, queue: str, total: int, last_commit: float) -> float | None:
    """Seconds from the last commit until our queue held every committed message; None if it never did."""
    deadline = time.perf_counter() + ROUTE_TIMEOUT
    while time.perf_counter() < deadline:
        if await asyncio.to_thread(queue_depth, target, queue) >= total:
            return max(0.0, time.perf_counter() - last_commit)
        await asyncio.sleep(ROUTE_POLL)
    return None
