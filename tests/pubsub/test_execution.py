"""A handler's batch against the database (pubsub/worker/execution.py): each stored copy is
claimed once by its id and message id, a handler's caught database error commits nothing,
a connection left inside a transaction or dropped by the server is replaced, and a database
failure before the handler ran uses up no attempt."""

from __future__ import annotations

import asyncio
import functools
import inspect
import sqlite3
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, DatabaseError, IntegrityError, OperationalError, connections, transaction

from pubsub.handling import Handler, Message, Retry
from pubsub.models import HandlerAttempt
from pubsub.testing import capture_published
from pubsub.worker import execution
from pubsub.worker.execution import (
    Failed,
    NowhereToDeadLetter,
    Outcome,
    begin_attempt,
    handle_batch,
    settle_failure,
)
from pubsub.worker.time_limit import Watched
from queues.models import Message as StoredMessage
from queues.models import Queue

pytestmark = pytest.mark.django_db(transaction=True)


def spec(function: Any) -> Handler:
    return Handler(name="h", function=function, queue="q", exchange=None, binding_key="", concurrency=1,
                   prefetch=10, retry=Retry(), time_limit=None, is_async=False)


def stored(store_id: int, message_id: str) -> int:
    queue, _ = Queue.objects.get_or_create(name="q")
    StoredMessage.objects.create(id=store_id, queue=queue, message_id=message_id, body="1", published_at="")
    return store_id


def message(message_id: str) -> Message:
    return Message(body=1, headers={}, routing_key="q", exchange="", message_id=message_id, published_at="",
                   queue="q", redelivered=False, delivery_count=1)


def test_a_copy_given_twice_in_one_batch_runs_once() -> None:
    runs: list[str] = []
    store_id = stored(7, "m7")
    outcomes = handle_batch(spec(lambda m: runs.append(m.message_id)), [(message("m7"), store_id)] * 2, Watched())
    assert outcomes == [Outcome.HANDLED, Outcome.ALREADY_HANDLED]
    assert runs == ["m7"] and not StoredMessage.objects.exists()


def test_a_row_id_given_again_to_another_message_is_not_claimed() -> None:
    stored(8, "the-new-one")  # the router restarted and gave id 8 to another message
    runs: list[str] = []
    outcomes = handle_batch(spec(lambda m: runs.append(m.message_id)), [(message("the-old-one"), 8)], Watched())
    assert outcomes == [Outcome.ALREADY_HANDLED] and runs == []
    assert StoredMessage.objects.filter(id=8, message_id="the-new-one").exists()


def test_a_caught_database_error_commits_nothing_and_fails_only_its_message() -> None:
    def handler(m: Message) -> None:
        Queue.objects.create(name=f"made-by-{m.message_id}")
        if m.message_id == "bad":
            try:
                with transaction.atomic(savepoint=False):
                    Queue.objects.create(name="q")  # exists: IntegrityError, caught below
            except IntegrityError:
                pass

    items = [(message("good"), stored(1, "good")), (message("bad"), stored(2, "bad"))]
    outcomes = handle_batch(spec(handler), items, Watched())
    assert outcomes[0] == Outcome.HANDLED and isinstance(outcomes[1], Failed)
    assert "marked for rollback" in str(outcomes[1].error)
    assert Queue.objects.filter(name="made-by-good").exists() and not Queue.objects.filter(name="made-by-bad").exists()
    assert list(StoredMessage.objects.values_list("id", flat=True)) == [2]  # the bad one is still there


class Custom(BaseException):
    pass


@pytest.mark.parametrize("raised", [SystemExit(3), asyncio.CancelledError(), Custom()], ids=["exit", "cancelled", "custom"])
def test_a_handler_s_base_exception_fails_its_own_message_only(raised: BaseException) -> None:
    """A `sys.exit()`, an async handler's own CancelledError, any BaseException: its message's
    failure (a CancelledError ended the worker's lane, its batch never settled)."""
    def handler(m: Message) -> None:
        Queue.objects.create(name=f"made-by-{m.message_id}")
        if m.message_id == "bad":
            raise raised

    items = [(message("good"), stored(1, "good")), (message("bad"), stored(2, "bad"))]
    outcomes = handle_batch(spec(handler), items, Watched())
    assert outcomes[0] == Outcome.HANDLED and isinstance(outcomes[1], Failed)
    assert outcomes[1].error is raised
    assert Queue.objects.filter(name="made-by-good").exists() and not Queue.objects.filter(name="made-by-bad").exists()
    assert list(StoredMessage.objects.values_list("id", flat=True)) == [2]


@pytest.mark.postgresql
@pytest.mark.skipif(
    connections[DEFAULT_DB_ALIAS].vendor != "postgresql", reason="PostgreSQL aborts a transaction at a failed statement"
)
def test_a_database_error_django_does_not_mark_fails_its_message_on_postgresql() -> None:
    """PostgreSQL aborts the transaction at a failed statement. Django marks it for rollback
    when the error went through one of its atomic blocks (the ORM's writes), not for a raw
    cursor's or a query's error caught in the handler: the COMMIT would roll back in silence,
    the message's removal too, while it was acknowledged as handled."""

    def handler(m: Message) -> None:
        Queue.objects.create(name=f"made-by-{m.message_id}")
        if m.message_id == "bad":
            try:
                with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
                    cursor.execute("SELECT 1 / 0")
            except DatabaseError:
                pass

    items = [(message("good"), stored(1, "good")), (message("bad"), stored(2, "bad"))]
    outcomes = handle_batch(spec(handler), items, Watched())
    assert outcomes[0] == Outcome.HANDLED and isinstance(outcomes[1], Failed)
    assert "a statement failed in the transaction" in str(outcomes[1].error)
    assert Queue.objects.filter(name="made-by-good").exists() and not Queue.objects.filter(name="made-by-bad").exists()
    assert list(StoredMessage.objects.values_list("id", flat=True)) == [2]  # the bad one is still there


def test_a_connection_left_inside_a_transaction_is_replaced() -> None:
    runs: list[str] = []
    store_id = stored(3, "m3")
    connection = connections[DEFAULT_DB_ALIAS]
    transaction.atomic().__enter__()  # and never left, as an interrupted call may leave it
    assert connection.in_atomic_block
    outcomes = handle_batch(spec(lambda m: runs.append(m.message_id)), [(message("m3"), store_id)], Watched())
    assert outcomes == [Outcome.HANDLED] and runs == ["m3"]
    assert not connection.in_atomic_block


@contextmanager
def _dropped_by_the_server() -> Iterator[None]:
    """The thread's connection ended under it, as a server's restart or idle timeout ends it:
    it looks usable until its next statement. (SQLite: a closed connection put in its place.)"""
    connection = connections[DEFAULT_DB_ALIAS]
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        dropped = connection.connection
        other = connections.create_connection(DEFAULT_DB_ALIAS)
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])  # returns once it ended
        finally:
            other.close()
        try:
            yield
        finally:
            if connection.connection is dropped:  # not replaced: the next test gets a working one
                connection.close()
        return
    working, dropped = connection.connection, sqlite3.connect(":memory:")
    dropped.close()
    connection.connection = dropped
    try:
        yield
    finally:
        if connection.connection is dropped:  # not replaced: put the test database's back
            connection.connection = working
        else:
            working.close()


def test_a_connection_the_server_dropped_is_replaced_and_the_handler_runs() -> None:
    """Its first statement (the claim) fails: that is no attempt of the handler's. A one-message
    batch counted it as a failed attempt without running the handler (max_attempts=1: a task
    FAILED that never ran)."""
    runs: list[str] = []
    store_id = stored(4, "m4")
    with _dropped_by_the_server():
        outcomes = handle_batch(spec(lambda m: runs.append(m.message_id)), [(message("m4"), store_id)], Watched())
    assert outcomes == [Outcome.HANDLED] and runs == ["m4"]
    assert not StoredMessage.objects.exists()


@pytest.mark.postgresql
@pytest.mark.skipif(
    connections[DEFAULT_DB_ALIAS].vendor != "postgresql", reason="SQLite's connections are not dropped by a server"
)
def test_a_connection_idle_long_enough_is_tried_before_it_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = connections[DEFAULT_DB_ALIAS]
    execution.fresh_connection()
    with _dropped_by_the_server():
        dropped = connection.connection
        monkeypatch.setattr(execution, "IDLE_CHECK_SECONDS", 0.0)
        execution.fresh_connection()
        assert connection.connection is not dropped
    assert StoredMessage.objects.count() == 0  # the next statement runs on a new connection


def test_a_database_failing_before_the_handler_runs_uses_up_no_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a new connection too: the messages are not attempted (the runner tries them again),
    neither failed nor dead-lettered. A handler's own database error is its attempt's failure."""
    runs: list[str] = []
    items = [(message("a"), stored(5, "a")), (message("b"), stored(6, "b"))]

    def claim_all(copies: list[tuple[int, str]]) -> set[int]:
        raise OperationalError("server closed the connection unexpectedly")

    with monkeypatch.context() as patched:
        patched.setattr(execution, "_claim_all", claim_all)
        assert handle_batch(spec(lambda m: runs.append(m.message_id)), items, Watched()) == [Outcome.NOT_ATTEMPTED] * 2
    assert runs == [] and StoredMessage.objects.count() == 2

    def handler(m: Message) -> None:
        raise OperationalError("the handler's own query failed")

    outcomes = handle_batch(spec(handler), items[:1], Watched())
    assert isinstance(outcomes[0], Failed) and isinstance(outcomes[0].error, OperationalError)


def test_a_sync_handler_that_returns_a_coroutine_fails_its_attempt() -> None:
    """An async function behind a sync decorator: `@handler` takes it for a sync one. Its
    coroutine was never awaited, and its message acknowledged and its row deleted all the same."""
    runs: list[str] = []
    made: list[Coroutine[Any, Any, None]] = []

    async def real(m: Message) -> None:
        runs.append(m.message_id)

    @functools.wraps(real)
    def logged(m: Message) -> Coroutine[Any, Any, None]:
        made.append(real(m))
        return made[-1]

    outcomes = handle_batch(spec(logged), [(message("m11"), stored(11, "m11"))], Watched())
    assert isinstance(outcomes[0], Failed) and isinstance(outcomes[0].error, TypeError)
    assert "returned a coroutine of" in str(outcomes[0].error) and "async def" in str(outcomes[0].error)
    assert runs == [] and StoredMessage.objects.filter(id=11).exists()
    assert inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED  # closed: no "never awaited" warning


def test_a_dead_lettered_message_leaves_the_brokers_delivery_count_behind() -> None:
    """`x-delivery-count` is the broker's count of one copy's returns, not a header of the
    message: its dead-lettered copy starts without it (its own headers kept)."""
    store_id = stored(9, "m9")
    Queue.objects.create(name="q.dead")  # declared by runhandlers at start
    given_back = Message(body=1, headers={"x-delivery-count": 2, "x-trace": "t"}, routing_key="q", exchange="",
                         message_id="m9", published_at="", queue="q", redelivered=True, delivery_count=5)
    handler = spec(lambda m: None)
    with capture_published() as published:
        assert settle_failure(handler, given_back, store_id, "RuntimeError: no") == Outcome.DEAD_LETTERED
    (dead,) = published
    assert (dead.exchange, dead.routing_key, dead.headers["x-trace"]) == ("", "q.dead", "t")
    assert "x-delivery-count" not in dead.headers
    (death,) = dead.headers["x-death"]
    assert (death["reason"], death["time"][:2], death["time"][-1]) == ("rejected", "20", "Z")  # when, as published_at


@pytest.mark.parametrize("arguments", [{"x-dead-letter-exchange": "gone"}, {}], ids=["exchange-gone", "no-exchange"])
def test_a_message_with_nowhere_to_be_dead_lettered_is_kept(arguments: dict[str, Any]) -> None:
    """Its `<queue>.dead` deleted (or never declared: runhandlers declared none for a queue
    with a dead-letter exchange), the dead letter went to the default exchange, to no queue,
    in the transaction that removed the message: lost. Now nothing is settled, and the
    runner tries again (as when the database is away) until the queue exists."""
    Queue.objects.create(name="q", arguments=arguments)
    store_id = stored(12, "m12")
    handler = Handler(name="h", function=lambda m: None, queue="q", exchange=None, binding_key="", concurrency=1,
                      prefetch=10, retry=Retry(max_attempts=1), time_limit=None, is_async=False)
    with capture_published() as published, pytest.raises(NowhereToDeadLetter, match="'q.dead' does not exist"):
        settle_failure(handler, message("m12"), store_id, "RuntimeError: no")
    assert published == [] and StoredMessage.objects.filter(id=store_id).exists()

    Queue.objects.create(name="q.dead")
    with capture_published() as published:
        assert settle_failure(handler, message("m12"), store_id, "RuntimeError: no") == Outcome.DEAD_LETTERED
    assert [(dead.exchange, dead.routing_key) for dead in published] == [("", "q.dead")]
    assert not StoredMessage.objects.exists()


def test_a_suspect_s_attempts_are_recorded_before_each_and_spent_ones_are_given_up() -> None:
    handler = Handler(name="h", function=lambda m: None, queue="q", exchange=None, binding_key="", concurrency=1,
                      prefetch=10, retry=Retry(max_attempts=2), time_limit=None, is_async=False)
    suspect = replace(message("m9"), redelivered=True)
    assert begin_attempt(handler, suspect, 9) == (1, None)
    assert begin_attempt(handler, suspect, 9) == (2, None)  # the first did not come back: its process died
    attempts, error = begin_attempt(handler, suspect, 9)
    assert attempts == 2 and error is not None and error.startswith("attempt under way")
    assert begin_attempt(handler, replace(suspect, message_id="another"), 9) == (1, None)  # an id given again


def test_recorded_attempts_are_never_lowered_and_a_success_removes_them() -> None:
    handler = spec(lambda m: None)
    retried = replace(message("m10"), redelivered=True)
    settle_failure(handler, replace(retried, delivery_count=2), None, "no row without a stored copy")
    assert not HandlerAttempt.objects.exists()
    begin_attempt(handler, retried, stored(10, "m10"))
    begin_attempt(handler, retried, 10)
    settle_failure(handler, replace(retried, delivery_count=1), 10, "an older delivery's failure, recorded late")
    row = HandlerAttempt.objects.get(store_id=10)
    assert (row.attempts, row.last_error[:16]) == (2, "attempt under wa")
    assert handle_batch(handler, [(replace(retried, delivery_count=2), 10)], Watched()) == [Outcome.HANDLED]
    assert not HandlerAttempt.objects.exists()
