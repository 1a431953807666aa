"""Tasks for the end-to-end tests of the broker's Django Tasks backend."""

from __future__ import annotations

from typing import Any

try:  # Django 6
    from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Django 5.2: the backport
    from django_tasks import task  # type: ignore[no-redef,unused-ignore]

from .models import HandledRow


@task
def record(label: str) -> str:
    HandledRow.objects.create(message_id=label, queue="tasks", delivery_count=1)
    return label.upper()


@task
def fail(label: str) -> None:
    HandledRow.objects.create(message_id=label, queue="tasks", delivery_count=1)  # rolled back
    raise ValueError(f"{label} failed as asked")


@task(takes_context=True)
def attempt(context: Any, label: str) -> dict[str, Any]:
    return {"label": label, "attempt": context.attempt, "id": context.task_result.id}
