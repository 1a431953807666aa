"""`BrokerTaskBackend`: Django Tasks enqueued as messages of the broker.

    TASKS = {
        "default": {
            "BACKEND": "pubsub.tasks.BrokerTaskBackend",
            "QUEUES": ["default", "emails"],      # Django's task queue names
            "OPTIONS": {"CONCURRENCY": 4, "MAX_ATTEMPTS": 1, "TIME_LIMIT": 300, "KEEP_RESULTS": 86400},
        },
    }

`enqueue` writes the task's result row and publishes its message (to the broker
queue `tasks.<queue_name>`) with the caller's database connection: inside
`transaction.atomic()` both commit with the caller's work, or neither does.
`manage.py runhandlers` runs the tasks (execution.py). A task with `run_after`
waits as a row, and is published when it is due. A finished result is kept
KEEP_RESULTS seconds (None: for ever), then `runhandlers` deletes it.
"""

from __future__ import annotations

import copy
import json
import time
from datetime import datetime
from typing import Any, Final

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, get_random_string, salted_hmac
from django.utils.module_loading import import_string

from pubsub.models import TaskResultRow
from pubsub.publishing import publish
from queues.models import Queue

from .compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    set_field,
    signals,
)

# Broker queues of tasks are named by this prefix and Django's queue name.
QUEUE_PREFIX: Final = "tasks."
# KEEP_RESULTS: a day, as Celery keeps its results; at most a hundred years (None: for ever).
MAX_KEEP_RESULTS: Final = 100 * 365 * 86400
DEFAULT_OPTIONS: Final[dict[str, Any]] = {"CONCURRENCY": 1, "MAX_ATTEMPTS": 1, "TIME_LIMIT": 300.0, "KEEP_RESULTS": 86400}


def broker_queue(queue_name: str) -> str:
    return f"{QUEUE_PREFIX}{queue_name}"


class BrokerTaskBackend(BaseTaskBackend):  # type: ignore[misc]
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False  # queues are first in, first out

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.options = {**DEFAULT_OPTIONS, **(params.get("OPTIONS") or {})}
        kept = self.options["KEEP_RESULTS"]
        if kept is not None and (
            isinstance(kept, bool) or not isinstance(kept, (int, float)) or not 0 <= kept <= MAX_KEEP_RESULTS
        ):
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']['KEEP_RESULTS']: seconds to keep a finished result (0 to"
                f" {MAX_KEEP_RESULTS}, a hundred years), or None to keep them all; not {kept!r}"
            )
        shared = _served_by_others(alias, self.queue_names())
        if shared:
            other, queue_name = shared[0]
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}] and TASKS[{other!r}] both serve the task queue {queue_name!r}: each broker"
                f" queue ({broker_queue(queue_name)!r}) has one handler, with one backend's options; give one"
                " of them another queue name in QUEUES"
            )

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        # Django lets any queue name through when QUEUES is empty; only the queues this
        # backend serves have a handler, and a task for another would wait for ever.
        # Refused here, not in validate_task: that runs when a task is defined, at import.
        if task.queue_name not in self.queue_names():
            raise InvalidTask(f"Queue '{task.queue_name}' is not valid for backend: it serves {self.queue_names()}.")
        now = timezone.now()
        deferred = task.run_after is not None and task.run_after > now
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        if _has_other_keys(args) or _has_other_keys(kwargs):  # as the row keeps them: `{1: 2}` is `{"1": 2}`
            args, kwargs = json.loads(json.dumps(args)), json.loads(json.dumps(kwargs))
        row = TaskResultRow(
            id=get_random_string(32),
            task_path=task.module_path,
            backend=self.alias,
            queue_name=task.queue_name,
            priority=task.priority,
            takes_context=task.takes_context,
            args=args,
            kwargs=kwargs,
            enqueued_at=now,
            run_after=task.run_after,
            published=not deferred,
        )
        with transaction.atomic():
            row.save(force_insert=True)
            if not deferred:
                publish_task(row)
        result = result_of(row, task)
        if signals.task_enqueued.receivers:  # once enqueued: when, and only if, the caller's transaction commits
            transaction.on_commit(lambda: signals.task_enqueued.send(type(self), task_result=result), robust=True)
        return result

    def get_result(self, result_id: str) -> Any:
        row = TaskResultRow.objects.filter(id=result_id, backend=self.alias).first()
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        return result_of(row, task_of(row))

    def queue_names(self) -> list[str]:
        """Django's queue names this backend serves (QUEUES; default: "default")."""
        return sorted(self.queues) if self.queues else ["default"]


def _served_by_others(alias: str, queue_names: list[str]) -> list[tuple[str, str]]:
    """(alias, queue name) of the other BrokerTaskBackends in TASKS that serve one of `queue_names`."""
    found = []
    for other, params in (getattr(settings, "TASKS", {}) or {}).items():
        if other == alias or not isinstance(params, dict):
            continue
        try:
            backend_class = import_string(params.get("BACKEND", ""))
        except ImportError:
            continue  # Django says so for that alias
        if isinstance(backend_class, type) and issubclass(backend_class, BrokerTaskBackend):
            served = params.get("QUEUES") or ["default"]
            found += [(other, name) for name in queue_names if name in served]
    return found


# A task queue found stored (or made) is taken to exist this long (`_ensure_task_queue`).
QUEUE_SEEN_SECONDS: Final = 5.0
_queues_seen: dict[str, float] = {}  # name -> until when


def _ensure_task_queue(name: str) -> None:
    """A task's queue exists when its message is published, or the broker drops the message
    (it reaches no queue) and the task stays READY for ever. `runbroker` declares the task
    queues when it starts; a queue added to QUEUES since (web processes deployed before
    `runbroker` restarted) or deleted in the admin is made here, in the enqueue's
    transaction, unless it was seen lately."""
    if _queues_seen.get(name, 0.0) > time.monotonic():
        return
    Queue.objects.get_or_create(name=name, defaults={"durable": True})
    # Seen once committed: made in a transaction that rolls back, it does not exist.
    transaction.on_commit(lambda: _queues_seen.__setitem__(name, time.monotonic() + QUEUE_SEEN_SECONDS))


def publish_task(row: TaskResultRow) -> None:
    """The task's message: what running it needs, so the common case reads no row first."""
    _ensure_task_queue(broker_queue(row.queue_name))
    body = {
        "task_result_id": row.id, "task": row.task_path, "args": row.args, "kwargs": row.kwargs,
        "takes_context": row.takes_context, "backend": row.backend, "queue_name": row.queue_name,
        "priority": row.priority, "enqueued_at": row.enqueued_at.isoformat(),
        "run_after": row.run_after.isoformat() if row.run_after else None,
    }
    body["signature"] = task_signature(body)
    publish("", body, routing_key=broker_queue(row.queue_name), message_id=row.id)


# What a task message says, all of it signed.
SIGNED_KEYS: Final = (
    "task_result_id", "task", "args", "kwargs", "takes_context", "backend", "queue_name", "priority", "enqueued_at",
    "run_after",
)


def task_signature(body: dict[str, Any]) -> str:
    """The project's mark on a task message it published (an HMAC with its SECRET_KEY): a
    worker runs a message that carries it without reading its result row first. Any other
    message on a task queue (one a client that may write to the default exchange
    published, say) is run from its result row, or not at all: from its body it would run
    any task with any arguments."""
    named = [body.get(key) for key in SIGNED_KEYS]
    text = json.dumps(named, sort_keys=True, separators=(",", ":"))
    return salted_hmac("pubsub.tasks.message", text, algorithm="sha256").hexdigest()


def signed(body: dict[str, Any]) -> bool:
    """Does the message carry the project's mark, for what it says (`task_signature`)?"""
    signature = body.get("signature")
    try:
        return isinstance(signature, str) and constant_time_compare(signature, task_signature(body))
    except (TypeError, ValueError):  # a body no publish of ours makes
        return False


def _has_other_keys(value: Any) -> bool:
    """Does a JSON value hold an object key that is not a string (Django's JSON accepts them)?"""
    if isinstance(value, dict):
        return any(not isinstance(key, str) or _has_other_keys(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_other_keys(item) for item in value)
    return False


def task_of(row: TaskResultRow) -> Any:
    """The task a row names, as it was enqueued (its queue, priority, backend, run_after)."""
    found = import_string(row.task_path)
    if not isinstance(found, Task):
        raise TypeError(f"{row.task_path} is not a task")
    return as_enqueued(found, row.queue_name, row.priority, row.backend, row.run_after)


def as_enqueued(task: Any, queue_name: str, priority: int, backend: str, run_after: datetime | None) -> Any:
    """`task` as it was enqueued. When the settings no longer take that (its queue since left
    out of QUEUES, its backend renamed), as it was all the same, unchecked: its result is
    still read, and its message still runs."""
    try:
        return task.using(queue_name=queue_name, priority=priority, backend=backend, run_after=run_after)
    except (InvalidTask, ImproperlyConfigured):  # the backend's missing alias is ImproperlyConfigured
        enqueued = copy.copy(task)
        for name, value in (("queue_name", queue_name), ("priority", priority), ("backend", backend),
                            ("run_after", run_after)):
            object.__setattr__(enqueued, name, value)
        return enqueued


def result_of(row: TaskResultRow, task: Any) -> Any:
    result: Any = TaskResult(
        task=task,
        id=row.id,
        status=TaskResultStatus(row.status),
        enqueued_at=row.enqueued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        last_attempted_at=row.last_attempted_at,
        args=list(row.args),
        kwargs=dict(row.kwargs),
        backend=row.backend,
        errors=[TaskError(exception_class_path=e["exception_class_path"], traceback=e["traceback"]) for e in row.errors],
        worker_ids=list(row.worker_ids),
    )
    if row.status == TaskResultRow.Status.SUCCESSFUL:
        set_field(result, "_return_value", row.return_value)
    return result
