"""Read-only queries about the outbox, for the API, the admin and the router's statistics."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Min
from django.utils import timezone

from .models import OutboxRow


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
