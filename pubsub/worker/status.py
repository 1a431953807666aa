"""What a `runhandlers` process tells the admin and the console: one row per handler
(pubsub.models.HandlerStatus), written every few seconds, removed when it stops.
Rows of processes that stopped without saying so are removed after an hour."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from django.db import transaction
from django.utils import timezone

from pubsub.models import HandlerStatus

from .execution import fresh_connection

# A process that has not reported for this long is gone.
GONE_AFTER: Final = datetime.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class HandlerReport:
    handler: str
    queue: str
    concurrency: int
    running: int
    handled: int
    failed: int
    retried: int
    dead_lettered: int
    already_handled: int
    handled_rate: float


def report(process: str, hostname: str, pid: int, started_at: datetime.datetime,
           reports: Sequence[HandlerReport]) -> None:
    fresh_connection()
    now = timezone.now()
    with transaction.atomic():
        for entry in reports:
            HandlerStatus.objects.update_or_create(
                process=process,
                handler=entry.handler,
                defaults={
                    "hostname": hostname, "pid": pid, "queue": entry.queue, "concurrency": entry.concurrency,
                    "started_at": started_at, "seen_at": now, "running": entry.running, "handled": entry.handled,
                    "failed": entry.failed, "retried": entry.retried, "dead_lettered": entry.dead_lettered,
                    "already_handled": entry.already_handled, "handled_rate": entry.handled_rate,
                },
            )
        HandlerStatus.objects.filter(seen_at__lt=now - GONE_AFTER).delete()


def forget(process: str) -> None:
    fresh_connection()
    HandlerStatus.objects.filter(process=process).delete()
