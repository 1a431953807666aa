"""The same three tasks for every system: a no-op, one ORM insert, and the latency probe."""

from __future__ import annotations

import time

from django_tasks import task

from .models import BenchLatency, BenchRow


@task(queue_name="bench")
def noop() -> None:
    return None


@task(queue_name="bench")
def insert(system: str, key: int) -> None:
    BenchRow.objects.create(system=system, key=key)


@task(queue_name="bench")
def probe(system: str, enqueued: float) -> None:
    BenchLatency.objects.create(system=system, latency=time.time() - enqueued)
