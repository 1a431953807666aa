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
import json
import logging
import math
from dataclasses import dataclass
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
from pubsub.storable import storable_text

from .backend import BrokerTaskBackend, as_enqueued, broker_queue, publish_task, result_of, signed, task_of
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


@dataclass(frozen=True, slots=True)
class _Ran:
    """What `run_task` returns for a task it ran: its value, and when it started."""

    value: Any
    started_at: datetime.datetime


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
    started = timezone.now()
    if body.get("takes_context") or message.delivery_count > 1 or "task" not in body or not signed(body):
        row = TaskResultRow.objects.filter(id=body.get("task_result_id")).first()
        if row is None or row.status in FINISHED:
            log.warning("task message %s: its result is unknown or finished; skipped", message.message_id)
            return _SKIPPED
        task = _task(row.task_path)
        args, kwargs = row.args, row.kwargs
        row.status, row.last_attempted_at = TaskResultRow.Status.RUNNING, started
        row.started_at = row.started_at or started
        row.worker_ids = _attempts(row.worker_ids, message.delivery_count)
        running = result_of(row, as_enqueued(task, row.queue_name, row.priority, row.backend, row.run_after))
        signals.task_started.send(type(task.get_backend()), task_result=running)
    else:
        task = _enqueued(body)
        args, kwargs = body.get("args", []), body.get("kwargs", {})
        if signals.task_started.receivers:
            running = _running_result(task, message, args, kwargs, started)
            signals.task_started.send(type(task.get_backend()), task_result=running)
    if body.get("takes_context"):
        return _Ran(normalize_json(task.call(TaskContext(task_result=running), *args, **kwargs)), started)
    return _Ran(normalize_json(task.call(*args, **kwargs)), started)


def _enqueued(body: dict[str, Any]) -> Any:
    """The task of a message of ours (`signed`) as it was enqueued (its queue, priority...)."""
    return _task_as_enqueued(body["task"], body["queue_name"], body["priority"], body["backend"], body["run_after"])


@lru_cache(maxsize=1024)
def _task_as_enqueued(path: str, queue_name: str, priority: int, backend: str, run_after: str | None) -> Any:
    return as_enqueued(
        _task(path), queue_name, priority, backend, datetime.datetime.fromisoformat(run_after) if run_after else None
    )


def _attempts(worker_ids: list[str], attempt: int) -> list[str]:
    """One worker id per attempt up to this one (`attempt`, counted from 1), so that the
    result's `attempts` counts them: the failed attempts' own writes were rolled back, and
    those not recorded are put down to this worker, as far as the row can tell."""
    attempt = max(attempt, 1)
    known = worker_ids[: attempt - 1]
    return [*known, *[WORKER_ID] * (attempt - 1 - len(known)), WORKER_ID]


def _running_result(task: Any, message: Message, args: Any, kwargs: Any, started: datetime.datetime) -> Any:
    """The task's result as it runs, made from its message (no row read): for the signals."""
    now = started
    body = message.body if isinstance(message.body, dict) else {}
    return TaskResult(
        task=task, id=body.get("task_result_id"), status=TaskResultStatus.RUNNING,
        enqueued_at=datetime.datetime.fromisoformat(body["enqueued_at"]),
        started_at=now, finished_at=None, last_attempted_at=now, args=list(args), kwargs=dict(kwargs),
        backend=task.backend, errors=[], worker_ids=[WORKER_ID] * message.delivery_count,
    )


def _announce_finished(done: list[tuple[Message, Any]]) -> None:
    """`task_finished` for a batch's tasks, once their results are committed."""
    for message, ran in done:
        if not isinstance(ran, _Ran):
            continue
        body = message.body if isinstance(message.body, dict) else {}
        try:
            if signed(body):
                result = _running_result(
                    _enqueued(body), message, body.get("args", []), body.get("kwargs", {}), ran.started_at
                )
                set_field(result, "status", TaskResultStatus.SUCCESSFUL)
                set_field(result, "finished_at", timezone.now())
                set_field(result, "_return_value", ran.value)
            else:  # run from its result row (`run_task`): told as the row says
                row = TaskResultRow.objects.filter(id=body.get("task_result_id")).first()
                if row is None:
                    continue
                result = result_of(row, task_of(row))
            signals.task_finished.send(type(result.task.get_backend()), task_result=result)
        except Exception:
            log.exception("task message %s: the task_finished signal failed", message.message_id)


def write_results(done: list[tuple[Message, Any]]) -> None:
    """The results of a batch's tasks, in its transaction: one statement for the batch."""
    connection = connections[DEFAULT_DB_ALIAS]
    table = connection.ops.quote_name(TaskResultRow._meta.db_table)
    moment = timezone.now()
    rows = []
    for message, ran in done:
        if not isinstance(ran, _Ran):
            continue
        body = message.body if isinstance(message.body, dict) else {}
        workers = [WORKER_ID] * message.delivery_count  # one per attempt; the failed ones rolled back
        rows.append((_json_text(ran.value), dumps(workers), body.get("task_result_id"), ran.started_at))
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
            " worker_ids = v.workers::jsonb, started_at = COALESCE(t.started_at, v.started),"
            " last_attempted_at = v.started, finished_at = %b"
            " FROM unnest(%b::text[], %b::text[], %b::text[], %b::timestamptz[]) AS v(id, value, workers, started)"
            " WHERE t.id = v.id AND t.status NOT IN ('SUCCESSFUL', 'FAILED')",
            [moment, [task_id for _, _, task_id, _ in rows], [value for value, _, _, _ in rows],
             [workers for _, workers, _, _ in rows], [started for _, _, _, started in rows]],
        )
        return
    now = connection.ops.adapt_datetimefield_value(moment)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # psycopg2: one statement for the batch
            values = ", ".join(["(%s, %s::jsonb, %s::jsonb, %s::timestamptz)"] * len(rows))
            cursor.execute(
                f"UPDATE {table} AS t SET status = 'SUCCESSFUL', return_value = v.value, worker_ids = v.workers,"
                " started_at = COALESCE(t.started_at, v.started), last_attempted_at = v.started, finished_at = %s"
                f" FROM (VALUES {values}) AS v(id, value, workers, started)"
                " WHERE t.id = v.id AND t.status NOT IN ('SUCCESSFUL', 'FAILED')",
                [now, *(field for value, workers, task_id, started in rows for field in (task_id, value, workers, started))],
            )
            return
        cursor.executemany(
            f"UPDATE {table} SET status = 'SUCCESSFUL', return_value = %s, worker_ids = %s,"
            " started_at = COALESCE(started_at, %s), last_attempted_at = %s, finished_at = %s"
            " WHERE id = %s AND status NOT IN ('SUCCESSFUL', 'FAILED')",
            [
                (value, workers, started, started, now, task_id)
                for value, workers, task_id, started in (
                    (v, w, t, connection.ops.adapt_datetimefield_value(s)) for v, w, t, s in rows
                )
            ],
        )


def _json_text(value: Any) -> str:
    """A return value as JSON text, as Django's JSONField would store it: object keys that
    are not strings become strings, and integers past 64 bits are kept (orjson refuses both);
    a number that is not finite is null, as orjson writes it (JSON has no NaN); text holding
    U+0000 or a lone surrogate, which PostgreSQL refuses (the task's every attempt failed
    after it ran), is kept as `storable_text` writes it, on every database alike."""
    try:
        text = dumps(value)
    except TypeError:
        return json.dumps(_storable(value))
    return json.dumps(_storable(value)) if "\\u0000" in text else text


def _storable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {(storable_text(key) if isinstance(key, str) else key): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value


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
        "traceback": storable_text("".join(format_exception(error))),
    }]
    row.worker_ids = _attempts(row.worker_ids, message.delivery_count)
    row.started_at = row.started_at or now
    row.last_attempted_at = row.finished_at = now
    row.save()
    log.warning("task %s (%s) failed: %r", row.task_path, row.id, error)
    if signals.task_finished.receivers:  # as for a task that succeeded: once committed
        try:
            finished = result_of(row, task_of(row))
        except Exception:
            log.exception("task %s (%s): no task_finished signal", row.task_path, row.id)
            return
        transaction.on_commit(
            lambda: signals.task_finished.send(type(finished.task.get_backend()), task_result=finished), robust=True
        )


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
