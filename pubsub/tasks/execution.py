"""Running Django Tasks as handlers: one handler per task queue of every
BrokerTaskBackend in TASKS, registered when `runhandlers` discovers handlers.

A task runs inside its handler's transaction (pubsub/worker/execution.py), in a
savepoint of its own: its writes, its result row and the removal of its message
commit together, so a task runs to completion exactly once even when its
process is killed. A task that raises is recorded as FAILED (its writes rolled
back) on its last attempt (OPTIONS["MAX_ATTEMPTS"], default 1); before that,
it is retried with the handlers' backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from traceback import format_exception
from typing import Final

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import get_random_string

from pubsub.handling import Message, handler, registered
from pubsub.models import TaskResultRow
from pubsub.worker.time_limit import TimeLimitExceeded

from .backend import BrokerTaskBackend, broker_queue, publish_task, result_of, task_of
from .compat import TaskContext, TaskResultStatus, normalize_json, set_field, signals, task_backends

log = logging.getLogger("pubsub.tasks")

WORKER_ID: Final = get_random_string(32)
# Deferred tasks that became due are published this many at a time.
DUE_BATCH: Final = 500


def our_backends() -> list[BrokerTaskBackend]:
    found = []
    for alias in getattr(settings, "TASKS", {}) or {}:
        backend = task_backends[alias]
        if isinstance(backend, BrokerTaskBackend):
            found.append(backend)
    return found


def register_task_handlers() -> None:
    """A handler for each task queue of each BrokerTaskBackend (idempotent)."""
    for backend in our_backends():
        options = backend.options
        for queue_name in backend.queue_names():
            name = f"tasks:{backend.alias}:{queue_name}"
            if name in registered():
                continue
            handler(
                queue=broker_queue(queue_name),
                name=name,
                concurrency=int(options["CONCURRENCY"]),
                max_attempts=int(options["MAX_ATTEMPTS"]),
                time_limit=options["TIME_LIMIT"],
            )(_runner(int(options["MAX_ATTEMPTS"])))


def _runner(max_attempts: int) -> Callable[[Message], None]:
    def run(message: Message) -> None:
        run_task(message, max_attempts=max_attempts)

    return run


def run_task(message: Message, *, max_attempts: int) -> None:
    """Run the task a message names; called inside the handler's transaction."""
    body = message.body if isinstance(message.body, dict) else {}
    row = TaskResultRow.objects.select_for_update().filter(id=body.get("task_result_id")).first()
    if row is None or row.status in (TaskResultRow.Status.SUCCESSFUL, TaskResultRow.Status.FAILED):
        log.warning("task message %s: its result %s is unknown or finished; skipped", message.message_id,
                    "row" if row is None else row.status)
        return
    task = task_of(row)
    now = timezone.now()
    row.status = TaskResultRow.Status.RUNNING
    row.started_at = row.started_at or now
    row.last_attempted_at = now
    row.worker_ids = [*row.worker_ids, WORKER_ID]
    result = result_of(row, task)
    signals.task_started.send(type(task.get_backend()), task_result=result)
    try:
        with transaction.atomic():
            if row.takes_context:
                value = task.call(TaskContext(task_result=result), *row.args, **row.kwargs)
            else:
                value = task.call(*row.args, **row.kwargs)
        row.return_value = normalize_json(value)
        row.status = TaskResultRow.Status.SUCCESSFUL
    except (Exception, TimeLimitExceeded) as error:
        if message.delivery_count < max_attempts:
            raise  # rolled back whole; tried again after the handlers' backoff
        row.errors = [*row.errors, {
            "exception_class_path": f"{type(error).__module__}.{type(error).__qualname__}",
            "traceback": "".join(format_exception(error)),
        }]
        row.status = TaskResultRow.Status.FAILED
        log.warning("task %s (%s) failed: %r", row.task_path, row.id, error)
    row.finished_at = timezone.now()
    row.save()
    finished = result_of(row, task)
    set_field(finished, "status", TaskResultStatus(row.status))
    signals.task_finished.send(type(task.get_backend()), task_result=finished)


def publish_due_tasks() -> int:
    """Publish the deferred tasks whose `run_after` has come; how many."""
    with transaction.atomic():
        due = TaskResultRow.objects.filter(published=False, run_after__lte=timezone.now()).order_by("run_after")
        rows = list(due.select_for_update(skip_locked=True)[:DUE_BATCH])
        for row in rows:
            publish_task(row)
        TaskResultRow.objects.filter(id__in=[row.id for row in rows]).update(published=True)
    return len(rows)


def task_queue_names() -> list[str]:
    """The broker queues of every task queue of every BrokerTaskBackend."""
    return sorted({broker_queue(name) for backend in our_backends() for name in backend.queue_names()})


def has_task_backend() -> bool:
    return bool(our_backends())

