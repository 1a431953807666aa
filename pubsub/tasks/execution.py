"""Running Django Tasks as handlers: one handler per task queue of every
BrokerTaskBackend in TASKS, registered when `runhandlers` discovers handlers.

A task runs inside its handler's transaction (pubsub/worker/execution.py): its
writes, its result row and the removal of its message commit together, so a
task runs to completion exactly once even when its process is killed. A task
that raises has everything rolled back; it is retried with the handlers'
backoff, and on its last attempt (OPTIONS["MAX_ATTEMPTS"], default 1) recorded
as FAILED, in the transaction that removes its message.
"""

from __future__ import annotations

import datetime
import logging
from functools import lru_cache
from traceback import format_exception
from typing import Any, Final

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.module_loading import import_string

from broker.engine.jsoncodec import dumps
from common.server_binding import execute_bound
from pubsub.handling import Message, handler, registered
from pubsub.models import TaskResultRow

from .backend import BrokerTaskBackend, broker_queue, publish_task, result_of
from .compat import Task, TaskContext, TaskResult, TaskResultStatus, normalize_json, set_field, signals, task_backends

log = logging.getLogger("pubsub.tasks")

WORKER_ID: Final = get_random_string(32)
# Deferred tasks that became due are published this many at a time.
DUE_BATCH: Final = 500
# Finished results past their KEEP_RESULTS are deleted this many at a time, at most
# PRUNE_ROUNDS times a tick of `runhandlers` (one process keeps up with 10,000 a second).
PRUNE_BATCH: Final = 1000
PRUNE_ROUNDS: Final = 10
FINISHED: Final = (TaskResultRow.Status.SUCCESSFUL, TaskResultRow.Status.FAILED)
# What `run_task` returns for a message it did not run (its result was finished or gone).
_SKIPPED: Final = object()


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
                prefetch=options.get("PREFETCH"),
                max_attempts=int(options["MAX_ATTEMPTS"]),
                time_limit=options["TIME_LIMIT"],
                give_up=record_failure,
                flush=write_results,
            )(run_task)


@lru_cache(maxsize=1024)
def _task(path: str) -> Any:
    found = import_string(path)
    if not isinstance(found, Task):
        raise TypeError(f"{path} is not a task")
    return found


def run_task(message: Message) -> Any:
    """Run the task a message names; called inside the handler's transaction. Its result
    is written by `write_results`, before that transaction commits; a task that raises has
    everything rolled back: the handler retries it, or gives up (`record_failure`)."""
    body = message.body if isinstance(message.body, dict) else {}
    running = None
    if body.get("takes_context") or message.delivery_count > 1 or "task" not in body:
        row = TaskResultRow.objects.filter(id=body.get("task_result_id")).first()
        if row is None or row.status in FINISHED:
            log.warning("task message %s: its result is unknown or finished; skipped", message.message_id)
            return _SKIPPED
        task = _task(row.task_path)
        args, kwargs = row.args, row.kwargs
        row.status, row.last_attempted_at = TaskResultRow.Status.RUNNING, timezone.now()
        row.worker_ids = [*row.worker_ids, WORKER_ID]
        running = result_of(row, task)
        signals.task_started.send(type(task.get_backend()), task_result=running)
    else:
        task = _task(body["task"])
        args, kwargs = body.get("args", []), body.get("kwargs", {})
        if signals.task_started.receivers:
            running = _running_result(task, message, args, kwargs)
            signals.task_started.send(type(task.get_backend()), task_result=running)
    if body.get("takes_context"):
        return normalize_json(task.call(TaskContext(task_result=running), *args, **kwargs))
    return normalize_json(task.call(*args, **kwargs))


def _running_result(task: Any, message: Message, args: Any, kwargs: Any) -> Any:
    """The task's result as it runs, made from its message (no row read): for the signals."""
    now = timezone.now()
    body = message.body if isinstance(message.body, dict) else {}
    return TaskResult(
        task=task, id=body.get("task_result_id"), status=TaskResultStatus.RUNNING, enqueued_at=None,
        started_at=now, finished_at=None, last_attempted_at=now, args=list(args), kwargs=dict(kwargs),
        backend=task.backend, errors=[], worker_ids=[WORKER_ID] * message.delivery_count,
    )


def _announce_finished(done: list[tuple[Message, Any]]) -> None:
    """`task_finished` for a batch's tasks, once their results are committed."""
    for message, value in done:
        if value is _SKIPPED:
            continue
        body = message.body if isinstance(message.body, dict) else {}
        try:
            task = _task(body["task"])
            result = _running_result(task, message, body.get("args", []), body.get("kwargs", {}))
            set_field(result, "status", TaskResultStatus.SUCCESSFUL)
            set_field(result, "finished_at", timezone.now())
            set_field(result, "_return_value", value)
            signals.task_finished.send(type(task.get_backend()), task_result=result)
        except Exception:
            log.exception("task message %s: the task_finished signal failed", message.message_id)


def write_results(done: list[tuple[Message, Any]]) -> None:
    """The results of a batch's tasks, in its transaction: one statement for the batch."""
    connection = connections[DEFAULT_DB_ALIAS]
    table = connection.ops.quote_name(TaskResultRow._meta.db_table)
    moment = timezone.now()
    rows = []
    for message, value in done:
        if value is _SKIPPED:
            continue
        body = message.body if isinstance(message.body, dict) else {}
        workers = [WORKER_ID] * message.delivery_count  # one per attempt; the failed ones rolled back
        rows.append((dumps(value), dumps(workers), body.get("task_result_id")))
    if not rows:
        return
    if signals.task_finished.receivers:
        transaction.on_commit(lambda: _announce_finished(done))
    if connection.vendor == "postgresql" and is_psycopg3:
        # One statement for the batch, its text the same whatever the batch's size and its
        # columns arrays bound in binary (nothing to parse and quote per row).
        execute_bound(
            connection,
            f"UPDATE {table} AS t SET status = 'SUCCESSFUL', return_value = v.value::jsonb,"
            " worker_ids = v.workers::jsonb, started_at = COALESCE(t.started_at, %b),"
            " last_attempted_at = %b, finished_at = %b"
            " FROM unnest(%b::text[], %b::text[], %b::text[]) AS v(id, value, workers)"
            " WHERE t.id = v.id AND t.status NOT IN ('SUCCESSFUL', 'FAILED')",
            [moment, moment, moment, [task_id for _, _, task_id in rows], [value for value, _, _ in rows],
             [workers for _, workers, _ in rows]],
        )
        return
    now = connection.ops.adapt_datetimefield_value(moment)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # psycopg2: one statement for the batch
            values = ", ".join(["(%s, %s::jsonb, %s::jsonb)"] * len(rows))
            cursor.execute(
                f"UPDATE {table} AS t SET status = 'SUCCESSFUL', return_value = v.value, worker_ids = v.workers,"
                " started_at = COALESCE(t.started_at, %s), last_attempted_at = %s, finished_at = %s"
                f" FROM (VALUES {values}) AS v(id, value, workers)"
                " WHERE t.id = v.id AND t.status NOT IN ('SUCCESSFUL', 'FAILED')",
                [now, now, now, *(field for value, workers, task_id in rows for field in (task_id, value, workers))],
            )
            return
        cursor.executemany(
            f"UPDATE {table} SET status = 'SUCCESSFUL', return_value = %s, worker_ids = %s,"
            " started_at = COALESCE(started_at, %s), last_attempted_at = %s, finished_at = %s"
            " WHERE id = %s AND status NOT IN ('SUCCESSFUL', 'FAILED')",
            [(value, workers, now, now, now, task_id) for value, workers, task_id in rows],
        )


def record_failure(message: Message, error: BaseException) -> None:
    """The last attempt failed: the task is FAILED, with the exception's class and traceback
    (in the transaction that removes its message)."""
    body = message.body if isinstance(message.body, dict) else {}
    row = TaskResultRow.objects.filter(id=body.get("task_result_id")).first()
    if row is None or row.status in FINISHED:
        return
    now = timezone.now()
    row.status = TaskResultRow.Status.FAILED
    row.errors = [*row.errors, {
        "exception_class_path": f"{type(error).__module__}.{type(error).__qualname__}",
        "traceback": "".join(format_exception(error)),
    }]
    row.worker_ids = [*row.worker_ids, WORKER_ID]
    row.started_at = row.started_at or now
    row.last_attempted_at = row.finished_at = now
    row.save()
    log.warning("task %s (%s) failed: %r", row.task_path, row.id, error)


def publish_due_tasks() -> int:
    """Publish the deferred tasks whose `run_after` has come; how many."""
    due = TaskResultRow.objects.filter(published=False, run_after__lte=timezone.now()).order_by("run_after")
    if not due.exists():  # looked at first without a transaction, which on SQLite takes the write lock
        return 0
    with transaction.atomic():
        rows = list(due.select_for_update(skip_locked=True)[:DUE_BATCH])
        for row in rows:
            publish_task(row)
        TaskResultRow.objects.filter(id__in=[row.id for row in rows]).update(published=True)
    return len(rows)


def prune_task_results() -> int:
    """Delete the finished results kept longer than their backend's KEEP_RESULTS seconds;
    how many. Processes that prune at once each take rows the others have not locked."""
    pruned = 0
    for backend in our_backends():
        kept = backend.options["KEEP_RESULTS"]
        if kept is None:
            continue
        old = TaskResultRow.objects.filter(
            backend=backend.alias, finished_at__lt=timezone.now() - datetime.timedelta(seconds=kept)
        )
        if not old.exists():  # as publish_due_tasks: first without a transaction
            continue
        for _ in range(PRUNE_ROUNDS):
            with transaction.atomic():
                ids = list(old.select_for_update(skip_locked=True).values_list("id", flat=True)[:PRUNE_BATCH])
                TaskResultRow.objects.filter(id__in=ids).delete()
            pruned += len(ids)
            if len(ids) < PRUNE_BATCH:
                break
    return pruned


def task_queue_names() -> list[str]:
    """The broker queues of every task queue of every BrokerTaskBackend."""
    return sorted({broker_queue(name) for backend in our_backends() for name in backend.queue_names()})
