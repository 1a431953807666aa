"""Module-level tasks for tests/pubsub/test_tasks_backend.py (Django requires them at module level)."""

from __future__ import annotations

import time
from typing import Any

from pubsub.tasks.compat import task


@task(backend="broker")
def double(value: int) -> int:
    return value * 2


@task(backend="broker", queue_name="emails")
def send(address: str) -> str:
    return address


@task(backend="broker")
def slowly(seconds: float) -> None:
    time.sleep(seconds)


@task(backend="broker", takes_context=True)
def where(context: Any) -> dict[str, Any]:
    return {"queue": context.task_result.task.queue_name, "attempt": context.attempt}


@task(backend="broker")
def echo(value: Any) -> Any:
    """The value, or for a number n, 2 to the power n; "nan" is NaN."""
    if isinstance(value, dict) and value.get("1") == "nan":
        return {1: float("nan")}
    return 2**value if isinstance(value, int) else value
