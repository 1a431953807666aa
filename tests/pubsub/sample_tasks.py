"""Module-level tasks for tests/pubsub/test_tasks_backend.py (Django requires them at module level)."""

from __future__ import annotations

from pubsub.tasks.compat import task


@task(backend="broker")
def double(value: int) -> int:
    return value * 2


@task(backend="broker", queue_name="emails")
def send(address: str) -> str:
    return address
