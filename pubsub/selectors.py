"""Read-only queries about the outbox and the handler processes, for the API, the admin
and the router's statistics."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Final

from django.db.models import Count, Min
from django.utils import timezone

from .models import HandlerStatus, OutboxRow

# A handler process that has not reported for longer is not shown as running (it
# reports every 2 s: pubsub/worker/runner.py).
HANDLER_ALIVE_SECONDS: Final = 10.0
_HANDLER_FIELDS: Final = (
    "handler", "queue", "process", "concurrency", "running", "handled_rate", "handled", "failed", "retried",
    "dead_lettered", "already_handled",
)


@dataclass(frozen=True, slots=True)
class OutboxState:
    """Rows waiting for the router, and how long the oldest has waited (None: no row)."""

    depth: int
    oldest_age_seconds: float | None


def outbox_state(*, using: str = "default") -> OutboxState:
    found = OutboxRow.objects.using(using).aggregate(depth=Count("id"), oldest=Min("created_at"))
    oldest = found["oldest"]
    age = None if oldest is None else max(0.0, (timezone.now() - oldest).total_seconds())
    return OutboxState(int(found["depth"]), age)


def running_handlers() -> list[dict[str, Any]]:
    """The handlers of the processes that reported lately, as the `stats` frame lists them."""
    since = timezone.now() - datetime.timedelta(seconds=HANDLER_ALIVE_SECONDS)
    return list(HandlerStatus.objects.filter(seen_at__gte=since).order_by("queue", "process").values(*_HANDLER_FIELDS))
