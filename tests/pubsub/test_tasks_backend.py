"""The broker's Django Tasks backend in this process: what `enqueue` writes (a result row
and an outbox message, in the caller's transaction), what it refuses, and running a task
inside a handler's transaction. End to end with the real processes: tests/e2e/test_tasks_e2e.py."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

import pubsub.tasks.backend as backend_module
from pubsub.handling import Message, registered, unregister
from pubsub.models import OutboxRow, TaskResultRow
from pubsub.tasks.compat import InvalidTask, TaskResultDoesNotExist, signals
from pubsub.tasks.execution import _SKIPPED as SKIPPED
from pubsub.tasks.execution import (
    prune_task_results,
    publish_due_tasks,
    record_failure,
    register_task_handlers,
    run_task,
    task_queue_names,
    write_results,
)

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = {
    "broker": {
        "BACKEND": "pubsub.tasks.BrokerTaskBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"CONCURRENCY": 3, "MAX_ATTEMPTS": 2},
    }
}


@pytest.fixture(autouse=True)
def tasks_setting(settings: Any) -> Iterator[None]:
    settings.TASKS = TASKS  # Django's setting_changed receiver starts its backends afresh
    yield
    for name in [name for name in registered() if name.startswith("tasks:")]:
        unregister(name)


def message(result_id: str, delivery_count: int = 1) -> Message:
    """The task's message as it was published (the outbox row's body)."""
    body = json.loads(OutboxRow.objects.get(message_id=result_id).body)
    return Message(body=body, headers={}, routing_key="tasks.default", exchange="",
                   message_id=result_id, published_at="", queue="tasks.default", redelivered=delivery_count > 1,
                   delivery_count=delivery_count)


def test_enqueue_writes_the_result_and_its_message_in_the_callers_transaction() -> None:
    from tests.pubsub.sample_tasks import double

    with transaction.atomic():
        enqueued = double.enqueue(21)
        assert OutboxRow.objects.count() == 1
    row = TaskResultRow.objects.get(id=enqueued.id)
    assert (row.task_path, row.args, row.status, row.published) == ("tests.pubsub.sample_tasks.double", [21], "READY", True)
    (outbox,) = OutboxRow.objects.all()
    assert (outbox.exchange, outbox.routing_key, outbox.message_id) == ("", "tasks.default", enqueued.id)
    assert str(double.get_backend().get_result(enqueued.id).status) == "READY"


def test_a_rolled_back_enqueue_leaves_nothing() -> None:
    from tests.pubsub.sample_tasks import double

    with pytest.raises(RuntimeError), transaction.atomic():
        double.enqueue(1)
        raise RuntimeError
    assert not TaskResultRow.objects.exists() and not OutboxRow.objects.exists()


def test_a_task_for_another_queue_or_with_a_priority_is_refused() -> None:
    from tests.pubsub.sample_tasks import double

    with pytest.raises(Exception, match="elsewhere"):
        double.using(queue_name="elsewhere").enqueue(1)
    with pytest.raises(Exception, match="priority"):
        double.using(priority=5).enqueue(1)
    assert not TaskResultRow.objects.exists()


def test_an_unknown_result_is_task_result_does_not_exist() -> None:
    from tests.pubsub.sample_tasks import double

    with pytest.raises(TaskResultDoesNotExist):
        double.get_backend().get_result("nope")


def test_a_deferred_task_waits_as_a_row_until_it_is_due() -> None:
    from tests.pubsub.sample_tasks import double

    later = double.using(run_after=timezone.now() + datetime.timedelta(hours=1)).enqueue(2)
    assert not OutboxRow.objects.exists() and publish_due_tasks() == 0
    TaskResultRow.objects.filter(id=later.id).update(run_after=timezone.now() - datetime.timedelta(seconds=1))
    assert publish_due_tasks() == 1
    assert OutboxRow.objects.get().message_id == later.id
    assert TaskResultRow.objects.get(id=later.id).published


def test_a_task_runs_in_the_handlers_transaction_and_keeps_its_result() -> None:
    from tests.pubsub.sample_tasks import double

    enqueued = double.enqueue(21)
    with transaction.atomic():
        first = message(enqueued.id)
        write_results([(first, run_task(first))])
    found = double.get_backend().get_result(enqueued.id)
    assert (str(found.status), found.return_value, found.attempts) == ("SUCCESSFUL", 42, 1)
    assert found.started_at is not None and found.finished_at is not None
    with transaction.atomic():
        again = message(enqueued.id, delivery_count=2)
        write_results([(again, run_task(again))])  # finished: not run again
    assert TaskResultRow.objects.get(id=enqueued.id).worker_ids == found.worker_ids


def test_a_task_message_of_ours_runs_without_reading_its_row_and_another_from_its_row_or_not_at_all() -> None:
    """Anyone who may publish to the default exchange can put a message on a task queue: run
    from its body, it ran any task with any arguments. Only the project's signed messages are."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.pubsub.sample_tasks import double

    enqueued = double.enqueue(21)
    ours = message(enqueued.id)
    assert "signature" in ours.body
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        ran = run_task(ours)
    assert ran.value == 42 and len(queries) == 0  # no read of its row

    forged_args = Message(**{**vars_of(ours), "body": {**ours.body, "args": [1000]}})
    with transaction.atomic():
        assert run_task(forged_args).value == 42  # the row's arguments, not the message's
    unknown = Message(**{**vars_of(ours), "body": {"task_result_id": "forged", "task": ours.body["task"], "args": [5]}})
    with transaction.atomic():
        assert run_task(unknown) is SKIPPED  # no such result: not run


def vars_of(message: Message) -> dict[str, Any]:
    return {field: getattr(message, field) for field in message.__dataclass_fields__}


def test_a_failing_task_rolls_back_and_is_failed_when_given_up() -> None:
    from tests.pubsub.sample_tasks import double

    enqueued = double.enqueue(None)  # None * 2: TypeError
    with pytest.raises(TypeError) as raised, transaction.atomic():
        run_task(message(enqueued.id))
    assert TaskResultRow.objects.get(id=enqueued.id).status == "READY"  # rolled back: may be tried again
    with transaction.atomic():
        record_failure(message(enqueued.id), raised.value)
    found = double.get_backend().get_result(enqueued.id)
    assert str(found.status) == "FAILED" and found.errors[0].exception_class_path == "builtins.TypeError"
    assert "TypeError" in found.errors[0].traceback


def test_each_task_queue_gets_a_handler_with_the_backends_options() -> None:
    register_task_handlers()
    declared = registered()["tasks:broker:emails"]
    assert (declared.queue, declared.concurrency, declared.retry.max_attempts) == ("tasks.emails", 3, 2)
    assert declared.give_up is record_failure
    assert task_queue_names() == ["tasks.default", "tasks.emails"]


def finish(result_id: str, *, ago: datetime.timedelta, status: str = "SUCCESSFUL") -> None:
    TaskResultRow.objects.filter(id=result_id).update(status=status, finished_at=timezone.now() - ago)


def test_finished_results_are_deleted_once_kept_longer_than_keep_results(settings: Any) -> None:
    from tests.pubsub.sample_tasks import double

    settings.TASKS = {"broker": {**TASKS["broker"], "OPTIONS": {"KEEP_RESULTS": 3600}},
                      "forever": {**TASKS["broker"], "QUEUES": ["archive"], "OPTIONS": {"KEEP_RESULTS": None}}}
    old, failed, recent, waiting, running = (double.enqueue(n).id for n in range(5))
    finish(old, ago=datetime.timedelta(hours=2))
    finish(failed, ago=datetime.timedelta(hours=2), status="FAILED")
    finish(recent, ago=datetime.timedelta(minutes=59))
    TaskResultRow.objects.filter(id=running).update(status="RUNNING", started_at=timezone.now() - datetime.timedelta(days=2))
    kept_for_ever = double.using(backend="forever", queue_name="archive").enqueue(5).id
    finish(kept_for_ever, ago=datetime.timedelta(days=400))

    assert prune_task_results() == 2
    assert set(TaskResultRow.objects.values_list("id", flat=True)) == {recent, waiting, running, kept_for_ever}
    with pytest.raises(TaskResultDoesNotExist):
        double.get_backend().get_result(old)
    assert prune_task_results() == 0


def test_results_are_deleted_in_batches_until_none_is_left(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pubsub.tasks import execution
    from tests.pubsub.sample_tasks import double

    monkeypatch.setattr(execution, "PRUNE_BATCH", 2)
    ids = [double.enqueue(n).id for n in range(5)]
    for result_id in ids:
        finish(result_id, ago=datetime.timedelta(days=2))  # past the default of a day
    assert prune_task_results() == 5 and not TaskResultRow.objects.exists()


@pytest.mark.parametrize("kept", [-1, "a day", True, float("nan"), float("inf"), 10**11])
def test_keep_results_must_be_seconds_or_none(settings: Any, kept: Any) -> None:
    from pubsub.tasks.compat import task_backends

    settings.TASKS = {"broker": {**TASKS["broker"], "OPTIONS": {"KEEP_RESULTS": kept}}}
    with pytest.raises(ImproperlyConfigured, match="KEEP_RESULTS"):
        task_backends["broker"]


def test_a_task_s_result_says_when_it_started_not_when_its_batch_was_written() -> None:
    from tests.pubsub.sample_tasks import slowly

    enqueued = slowly.enqueue(0.2)
    with transaction.atomic():
        first = message(enqueued.id)
        write_results([(first, run_task(first))])
    found = slowly.get_backend().get_result(enqueued.id)
    assert found.started_at is not None and found.finished_at is not None
    assert found.finished_at - found.started_at >= datetime.timedelta(seconds=0.2)
    assert found.last_attempted_at == found.started_at


def test_a_task_given_up_after_its_attempts_counts_them() -> None:
    from tests.pubsub.sample_tasks import double

    enqueued = double.enqueue(None)
    with transaction.atomic():
        record_failure(message(enqueued.id, delivery_count=3), TypeError("the third time"))
    found = double.get_backend().get_result(enqueued.id)
    assert str(found.status) == "FAILED" and found.attempts == 3


def test_a_context_shows_the_task_as_enqueued_and_its_attempt() -> None:
    from tests.pubsub.sample_tasks import where

    enqueued = where.using(queue_name="emails").enqueue()
    with transaction.atomic():
        again = message(enqueued.id, delivery_count=2)
        write_results([(again, run_task(again))])
    found = where.get_backend().get_result(enqueued.id)
    assert found.return_value == {"queue": "emails", "attempt": 2}


def test_a_failure_whose_text_holds_u0000_is_recorded() -> None:
    """PostgreSQL keeps no U+0000 in text: the record failed, and the task stayed READY
    while its message was tried again for ever."""
    from tests.pubsub.sample_tasks import double

    enqueued = double.enqueue(None)
    with transaction.atomic():
        record_failure(message(enqueued.id), ValueError("a \x00 byte"))
    found = double.get_backend().get_result(enqueued.id)
    assert str(found.status) == "FAILED" and "a \\x00 byte" in found.errors[0].traceback


def test_task_enqueued_is_sent_once_the_caller_s_transaction_commits_and_not_after_a_rollback() -> None:
    from tests.pubsub.sample_tasks import double

    seen: list[str] = []

    def enqueued(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(task_result.id)

    signals.task_enqueued.connect(enqueued)
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            double.enqueue(1)
            assert seen == []
            raise RuntimeError("rolled back")
        kept = double.enqueue(2)
    finally:
        signals.task_enqueued.disconnect(enqueued)
    assert seen == [kept.id]


def test_task_finished_is_sent_for_a_failed_task_too() -> None:
    from tests.pubsub.sample_tasks import double

    finished: list[tuple[str, str]] = []

    def done(sender: Any, task_result: Any, **kwargs: Any) -> None:
        finished.append((task_result.id, str(task_result.status)))

    enqueued = double.enqueue(None)
    signals.task_finished.connect(done)
    try:
        with transaction.atomic():
            record_failure(message(enqueued.id, delivery_count=2), TypeError("no"))
    finally:
        signals.task_finished.disconnect(done)
    assert finished == [(enqueued.id, "FAILED")]


@pytest.mark.parametrize(
    ("value", "kept"),
    [({1: "a"}, {"1": "a"}), ([{2: [{3: 4}]}], [{"2": [{"3": 4}]}]), (70, 2**70), ({1: "nan"}, {"1": None})],
)
def test_values_django_takes_as_json_are_kept_as_its_json_field_keeps_them(value: Any, kept: Any) -> None:
    """Object keys that are not strings (in the task's arguments and its return value) and
    an integer past 64 bits returned: orjson refused them, and the enqueue, or every
    attempt, failed."""
    from tests.pubsub.sample_tasks import echo

    enqueued = echo.enqueue(value)
    with transaction.atomic():
        first = message(enqueued.id)
        write_results([(first, run_task(first))])
    found = echo.get_backend().get_result(enqueued.id)
    assert str(found.status) == "SUCCESSFUL" and found.return_value == kept


def test_with_no_queues_named_a_task_for_another_queue_than_default_is_refused(settings: Any) -> None:
    """Django lets any queue name through when QUEUES is empty; the task was published to a
    queue no handler serves, and waited for ever."""
    from tests.pubsub.sample_tasks import double

    settings.TASKS = {"broker": {"BACKEND": "pubsub.tasks.BrokerTaskBackend", "QUEUES": []}}
    elsewhere = double.using(queue_name="elsewhere")  # defined (imported) as Django lets it be
    with pytest.raises(InvalidTask, match="not valid"):
        elsewhere.enqueue(1)
    assert str(double.enqueue(1).status) == "READY"
    assert not TaskResultRow.objects.filter(queue_name="elsewhere").exists()


def test_a_failure_whose_text_holds_a_lone_surrogate_is_recorded() -> None:
    """A file name decoded with `surrogateescape` in the exception: PostgreSQL's jsonb refused
    the traceback, and the failure was tried again for ever, the task left READY."""
    from tests.pubsub.sample_tasks import double

    enqueued = double.enqueue(1)
    with transaction.atomic():
        record_failure(message(enqueued.id), ValueError("bad file caf\udce9\x00"))
    found = double.get_backend().get_result(enqueued.id)
    assert str(found.status) == "FAILED"
    assert "bad file caf\\udce9\\x00" in found.errors[0].traceback


def test_enqueue_makes_a_task_queue_that_does_not_exist() -> None:
    """Added to QUEUES after `runbroker` declared the others (or deleted in the admin): its
    messages reached no queue, and its tasks stayed READY for ever."""
    from queues.models import Queue
    from tests.pubsub.sample_tasks import double

    backend_module._queues_seen.clear()
    with pytest.raises(RuntimeError), transaction.atomic():
        double.using(queue_name="emails").enqueue(1)
        raise RuntimeError  # rolled back: the queue too, and it is not taken as seen
    assert not Queue.objects.filter(name="tasks.emails").exists()
    double.using(queue_name="emails").enqueue(1)
    assert Queue.objects.get(name="tasks.emails").durable


def test_enqueue_answers_the_arguments_as_the_row_keeps_them() -> None:
    """`{1: "a"}` is kept `{"1": "a"}`: the result `enqueue` answered said `{1: "a"}`,
    unlike the same result read again."""
    from tests.pubsub.sample_tasks import echo

    enqueued = echo.enqueue({1: "a"}, key={2: "b"})
    again = echo.get_backend().get_result(enqueued.id)
    assert enqueued.args == again.args == [{"1": "a"}]
    assert enqueued.kwargs == again.kwargs == {"key": {"2": "b"}}


def test_a_result_whose_queue_left_queues_is_still_read_and_run(settings: Any) -> None:
    """get_result raised InvalidTask for a task enqueued to a queue since left out of QUEUES."""
    from tests.pubsub.sample_tasks import double

    enqueued = double.using(queue_name="emails").enqueue(4)
    sent = message(enqueued.id)
    settings.TASKS = {"broker": {**TASKS["broker"], "QUEUES": ["default"]}}
    found = double.get_backend().get_result(enqueued.id)
    assert found.task.queue_name == "emails" and str(found.status) == "READY"
    with transaction.atomic():
        write_results([(sent, run_task(sent))])
    assert double.get_backend().get_result(enqueued.id).return_value == 8


def test_task_started_and_finished_tell_the_task_as_it_was_enqueued() -> None:
    """On the fast path (no row read) the signals told the task as defined: its default
    queue and priority, and no time it was enqueued."""
    from tests.pubsub.sample_tasks import double

    seen: list[tuple[str, str, Any, Any]] = []

    def told(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append((str(task_result.status), task_result.task.queue_name, task_result.task.priority,
                     task_result.enqueued_at))

    enqueued = double.using(queue_name="emails").enqueue(3)
    signals.task_started.connect(told)
    signals.task_finished.connect(told)
    try:
        with transaction.atomic():
            sent = message(enqueued.id)
            write_results([(sent, run_task(sent))])
    finally:
        signals.task_started.disconnect(told)
        signals.task_finished.disconnect(told)
    assert seen == [("RUNNING", "emails", 0, enqueued.enqueued_at), ("SUCCESSFUL", "emails", 0, enqueued.enqueued_at)]


def test_two_backends_serving_one_queue_name_are_refused(settings: Any) -> None:
    """Both wrote to the broker queue `tasks.default`, with one handler for both (and
    `runhandlers` refused to start)."""
    from pubsub.tasks.compat import task_backends

    settings.TASKS = {**TASKS, "other": {"BACKEND": "pubsub.tasks.BrokerTaskBackend"}}
    with pytest.raises(ImproperlyConfigured, match="'broker'.*'other'.*'default'|'other'.*'broker'.*'default'"):
        task_backends["other"]


@pytest.mark.parametrize("value", ["a\x00b", {"k\x00": ["\udcff"]}])
def test_a_return_value_holding_u0000_or_a_lone_surrogate_is_kept_as_storable_text(value: Any) -> None:
    """PostgreSQL keeps neither in JSON: the task ran, and then its every attempt failed."""
    from tests.pubsub.sample_tasks import echo

    enqueued = echo.enqueue("x")
    with transaction.atomic():
        sent = message(enqueued.id)
        ran = run_task(sent)
        object.__setattr__(ran, "value", value)
        write_results([(sent, ran)])
    found = echo.get_backend().get_result(enqueued.id)
    assert str(found.status) == "SUCCESSFUL"
    assert found.return_value == ("a\\x00b" if isinstance(value, str) else {"k\\x00": ["\\udcff"]})
