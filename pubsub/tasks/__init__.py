"""Django's Tasks interface on the broker: `TASKS = {"default": {"BACKEND":
"pubsub.tasks.BrokerTaskBackend"}}`, then `@task` and `.enqueue()` as Django documents
them (`django.tasks` on Django 6, the `django-tasks` backport on 5.2).

backend.py enqueues (a result row and a message, both in the caller's transaction) and
reads results; execution.py runs a task inside a handler's transaction, so its effects
and its result commit with the message's removal: exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import BrokerTaskBackend

__all__ = ["BrokerTaskBackend"]


def __getattr__(name: str) -> Any:
    # Imported when Django's task backends are first used: models are ready by then.
    if name == "BrokerTaskBackend":
        from .backend import BrokerTaskBackend

        return BrokerTaskBackend
    raise AttributeError(f"module 'pubsub.tasks' has no attribute {name!r}")
