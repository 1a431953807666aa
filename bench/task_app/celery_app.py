"""Celery 5 on the machine's RabbitMQ, configured as its docs advise for many short tasks:
results ignored, a high prefetch multiplier, no gossip/mingle/heartbeat (set on the worker's
command line). The fault comparison runs it with `acks_late` (BENCH_ACKS_LATE=1)."""

from __future__ import annotations

import os
import time

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.task_app.settings")
django.setup()

from bench.task_app.models import BenchLatency, BenchRow  # noqa: E402

app = Celery("bench", broker=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"))
app.conf.update(
    task_ignore_result=True,
    task_default_queue="bench",
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH_MULTIPLIER", "64")),
    task_acks_late=os.environ.get("BENCH_ACKS_LATE") == "1",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # Keep the database connection between tasks (Celery closes it around each task otherwise).
    CELERY_DB_REUSE_MAX=1000,
)


@app.task(name="bench.noop")
def noop() -> None:
    return None


@app.task(name="bench.insert")
def insert(system: str, key: int) -> None:
    BenchRow.objects.create(system=system, key=key)


@app.task(name="bench.probe")
def probe(system: str, enqueued: float) -> None:
    BenchLatency.objects.create(system=system, latency=time.time() - enqueued)
