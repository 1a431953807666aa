"""One message through one handler, on a worker thread: the database side.

A sync handler runs inside `transaction.atomic()`; when its message is a stored
copy (a persistent message in a durable queue: the broker names its row), the
first statement of that transaction deletes the row. The deletion commits with
the handler's writes, or rolls back with them. A copy whose row is already
gone was handled (or purged) before: it is acknowledged without running. On
PostgreSQL a second process given the same copy waits on the row's lock until
the first commits, then finds it gone; on SQLite the database's write lock
orders them the same way. The broker sends such deliveries only once their
row is committed (AckMode.TRANSACTION), so a missing row never means "not yet".

A database error before any handler of the batch ran (a connection the server dropped
looks usable until its first statement) is no attempt: the batch runs once more on a new
connection, and if that fails too its messages are NOT_ATTEMPTED, none of their attempts
used up.

Failures are settled in a transaction of their own: the attempt is counted, or
the message is dead-lettered (published through the outbox, so exactly once)
and its row deleted. Imports no asyncio.
"""

from __future__ import annotations

import functools
import inspect
import logging
import operator
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.db import Error as DbError  # DatabaseError and InterfaceError (a closed connection's)
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.db.models import Q

from broker.engine.deadletter import dead_letter_copy
from broker.engine.errors import BrokerError
from broker.engine.jsoncodec import dumps
from broker.engine.messages import DELIVERY_COUNT, make_message
from broker.engine.queues import parse_queue_arguments
from common.server_binding import execute_bound
from exchanges.models import Exchange
from pubsub.handling import Handler, Message
from pubsub.models import HandlerAttempt
from pubsub.publishing import publish
from queues.models import Message as StoredMessage
from queues.models import Queue

from .time_limit import TimeLimitExceeded, Watched

log = logging.getLogger("pubsub.handlers")

# Dead letters carry the error's text up to this length in `x-handler-error`.
MAX_ERROR_CHARS: Final = 1000
# libpq's PQTRANS_INERROR: a transaction that a failed statement aborted.
TRANSACTION_INERROR: Final = 3
DEAD_SUFFIX: Final = ".dead"
# A connection not used for this long is tried (PostgreSQL: a `SELECT 1`) before it is used
# again: the server, a proxy or a firewall may have dropped it meanwhile, and it looks fine
# until its next statement fails.
IDLE_CHECK_SECONDS: Final = 5.0


class Outcome(StrEnum):
    HANDLED = "handled"
    ALREADY_HANDLED = "already handled"  # its row was gone: acknowledged without running
    RETRY = "retry"
    DEAD_LETTERED = "dead-lettered"
    NOT_STARTED = "not started"  # the process stopped first: the broker gives it back
    # The database failed before its handler ran (its batch's claim): no attempt was made,
    # none is counted; the runner tries it again once the database answers.
    NOT_ATTEMPTED = "not attempted"


class Unavailable(Exception):
    """The database failed before any handler of a batch ran: the batch was not attempted."""


class NowhereToDeadLetter(Exception):
    """A message given up on has no dead-letter exchange that exists, and its `<queue>.dead`
    does not exist either (deleted since `runhandlers` declared it): publishing it would
    route it nowhere. It is kept, not settled: the runner tries again until one exists."""


def fresh_connection() -> None:
    """Keep the worker thread's connection from message to message (the project's
    CONN_MAX_AGE of 0 is for request threads: a connection per message would cost more
    than the message); replace it when it broke, when it was left idle long enough to
    have been dropped and no longer answers, or when an interrupted call (a time limit)
    left it inside a transaction."""
    connection = connections[DEFAULT_DB_ALIAS]
    now = time.monotonic()
    idle = now - getattr(connection, "_pubsub_used_at", now)
    connection._pubsub_used_at = now  # type: ignore[attr-defined]
    if connection.in_atomic_block or connection.savepoint_ids or connection.needs_rollback:
        discard_connection()
    elif connection.connection is not None and (connection.errors_occurred or idle >= IDLE_CHECK_SECONDS):
        if not connection.is_usable():
            connection.close()
        connection.errors_occurred = False


def discard_connection() -> None:
    """Drop the thread's connection whatever state Django thinks it is in: the database
    rolls back what it held open."""
    connection = connections[DEFAULT_DB_ALIAS]
    connection.in_atomic_block = False
    connection.savepoint_ids = []
    connection.atomic_blocks = []
    connection.needs_rollback = False
    connection.closed_in_transaction = False
    try:
        connection.close()
    except Exception:
        connection.connection = None


def dead_queue(queue: str) -> str:
    """Where a queue's failed messages are kept when it has no dead-letter exchange."""
    return f"{queue}{DEAD_SUFFIX}"


def _claim(store_id: int, message_id: str) -> bool:
    """Delete the stored copy's row in the current transaction; False when it was gone."""
    table = connections[DEFAULT_DB_ALIAS].ops.quote_name(StoredMessage._meta.db_table)
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s AND message_id = %s", [store_id, message_id])
        return bool(cursor.rowcount)


def _limit_statements(seconds: float | None) -> None:
    """PostgreSQL: no statement of the worker thread's connection outlives the handler's
    time limit. Set once per connection (a session setting), not per transaction."""
    connection = connections[DEFAULT_DB_ALIAS]
    if seconds is None or connection.vendor != "postgresql":
        return
    connection.ensure_connection()
    done = getattr(connection, "_pubsub_statement_timeout", None)
    if done is not None and done[0] is connection.connection and done[1] == seconds:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, false)", [f"{int(seconds * 1000)}ms"])
    connection._pubsub_statement_timeout = (connection.connection, seconds)  # type: ignore[attr-defined]


def earlier_attempts(store_id: int | None, message_id: str) -> tuple[int, str]:
    """Failed attempts recorded for a redelivered stored copy, and the last one's error."""
    if store_id is None:
        return 0, ""
    fresh_connection()
    found = HandlerAttempt.objects.filter(store_id=store_id, message_id=message_id).values_list("attempts", "last_error")
    return next(iter(found), (0, ""))


# What a suspect's attempt row says while it runs: if its process dies, it stays said.
UNDER_WAY: Final = "attempt under way, or the process died during it (killed, or it crashed)"


@dataclass(frozen=True, slots=True)
class GaveUp:
    """A suspect whose attempts are all spent, the last ending in `error`: not run again."""

    error: str


def begin_attempt(handler: Handler, message: Message, store_id: int) -> tuple[int, str | None]:
    """Just before a suspect's attempt (runner.py: a copy given back again and again):
    its number, recorded first, so that an attempt its process does not live through
    counts as failed. (n, None): run attempt n. (n, error): n attempts were made, the
    last ending in `error`, and none more is allowed."""
    fresh_connection()
    with transaction.atomic():
        row = HandlerAttempt.objects.select_for_update().filter(store_id=store_id, message_id=message.message_id).first()
        made = 0 if row is None else row.attempts  # written before each of its attempts: never behind
        if row is not None and made >= handler.retry.max_attempts:
            return made, row.last_error
        _record_attempts(handler, message, store_id, made + 1, UNDER_WAY)
    return made + 1, None


def run_suspect(
    handler: Handler, message: Message, store_id: int, watched: Watched
) -> tuple[int, Outcome | Failed | GaveUp]:
    """A sync handler's suspect, alone in its transaction, its attempt recorded first: the
    attempt's number and its outcome. NOT_ATTEMPTED (the database failed between the record
    and the claim) still counts, as an attempt its process did not live through does: the
    record is what makes a suspect's attempts count."""
    attempt, given_up = begin_attempt(handler, message, store_id)
    if given_up is not None:
        return attempt, GaveUp(given_up)
    return attempt, handle_batch(handler, [(replace(message, delivery_count=attempt), store_id)], watched)[0]


def _record_attempts(handler: Handler, message: Message, store_id: int, attempts: int, error: str) -> None:
    """The copy's attempts so far, and the last one's error; never fewer than recorded (two
    deliveries of one copy, an old connection's and a new one's, may record out of order).
    A row of the same store id for another message (ids are given again after a router's
    restart) is that copy's no more."""
    fields = {"message_id": message.message_id, "handler": handler.name, "queue": message.queue,
              "attempts": attempts, "last_error": error[:MAX_ERROR_CHARS]}
    with transaction.atomic():
        row = HandlerAttempt.objects.select_for_update().filter(store_id=store_id).first()
        if row is None:
            try:
                with transaction.atomic():
                    HandlerAttempt.objects.create(store_id=store_id, **fields)
                return
            except IntegrityError:  # written meanwhile by the copy's other delivery
                row = HandlerAttempt.objects.select_for_update().get(store_id=store_id)
        if row.message_id == message.message_id and row.attempts > attempts:
            return  # a later attempt is recorded already
        HandlerAttempt.objects.filter(store_id=store_id).update(**fields)


@dataclass(frozen=True, slots=True)
class Failed:
    """A message whose handler raised (or ran out of time); everything it did is rolled back."""

    error: BaseException
    seconds: float | None = None  # how long the attempt ran, when known


# What a handler's run may raise, its message's failure: anything, its time limit too. It
# runs in a worker thread, which no signal interrupts, so a `sys.exit()`, KeyboardInterrupt,
# an async handler's CancelledError (a task of its own cancelled) or another BaseException
# is its own; let through, it failed every message of its batch, or (a CancelledError)
# ended the lane that ran it as if the lane itself were cancelled, its batch never settled.
HANDLER_FAILURES: Final = (BaseException,)


def handle_batch(
    handler: Handler, items: Sequence[tuple[Message, int | None]], watched: Watched
) -> list[Outcome | Failed]:
    """Run the handler on each message, all in one transaction that also removes their
    stored copies: one commit for many messages. When one fails, the whole transaction is
    rolled back and each message is run again in a transaction of its own, so only the
    failing one fails. Each message's effects still commit with its removal, or not at all.
    When the database fails before any handler ran, on a new connection too, the messages
    were not attempted (NOT_ATTEMPTED): no attempt of theirs is used up."""
    started = time.monotonic()
    try:
        return _handle_reconnecting(handler, items, watched)
    except Unavailable as error:
        log.warning("handler %s: the database failed before the handler ran (%s): %d message(s) not attempted",
                    handler.name, error.__cause__, len(items))
        return [Outcome.NOT_ATTEMPTED] * len(items)
    except HANDLER_FAILURES as error:
        if isinstance(error, TimeLimitExceeded):
            discard_connection()  # it may have landed inside Django's own transaction bookkeeping
        if len(items) == 1:
            return [Failed(error, time.monotonic() - started)]
    outcomes: list[Outcome | Failed] = []
    for item in items:
        started = time.monotonic()
        try:
            outcomes.append(_handle_reconnecting(handler, [item], watched)[0])
        except Unavailable as error:
            log.warning("handler %s: message %s: the database failed before the handler ran (%s): not attempted",
                        handler.name, item[0].message_id, error.__cause__)
            outcomes.append(Outcome.NOT_ATTEMPTED)
        except HANDLER_FAILURES as error:
            if isinstance(error, TimeLimitExceeded):
                discard_connection()
            outcomes.append(Failed(error, time.monotonic() - started))
    return outcomes


def _handle_reconnecting(
    handler: Handler, items: Sequence[tuple[Message, int | None]], watched: Watched
) -> list[Outcome | Failed]:
    """`_handle_together`, once more on a new connection when the database failed before
    any handler ran: a connection the server dropped (while idle, or at a failover) looks
    usable until its first statement fails, and that is no attempt of the handler's."""
    try:
        return _handle_together(handler, items, watched)
    except Unavailable:
        discard_connection()
    return _handle_together(handler, items, watched)


def _handle_together(
    handler: Handler, items: Sequence[tuple[Message, int | None]], watched: Watched
) -> list[Outcome | Failed]:
    ran = False  # a handler was called: a database error from here on is the attempt's
    try:
        fresh_connection()
        _limit_statements(handler.time_limit)
        outcomes: list[Outcome | Failed] = []
        with transaction.atomic(durable=True):
            stored = [(store_id, message.message_id) for message, store_id in items if store_id is not None]
            claimed = _claim_all(stored) if stored else set()
            done: list[tuple[Message, Any]] = []
            retried: list[tuple[int, str]] = []
            for message, store_id in items:
                if store_id is not None:
                    if message.delivery_count > 1 or message.redelivered:
                        retried.append((store_id, message.message_id))  # its attempts may be recorded: done with them
                    if store_id not in claimed:  # gone before, or a second copy in this batch
                        outcomes.append(Outcome.ALREADY_HANDLED)
                        continue
                    claimed.discard(store_id)
                ran = True
                result = watched.run(handler.function, message, limit=handler.time_limit)
                done.append((message, _not_awaitable(handler, result)))
                outcomes.append(Outcome.HANDLED)
            if retried:  # by id and message id: a store id may be given again after a router's restart
                HandlerAttempt.objects.filter(
                    functools.reduce(operator.or_, (Q(store_id=store_id, message_id=mid) for store_id, mid in retried))
                ).delete()
            if handler.flush is not None and done:
                handler.flush(done)
            if transaction.get_rollback():
                # A handler caught a database error (or asked for a rollback): nothing commits,
                # so nothing may be acknowledged.
                raise RuntimeError("the transaction was marked for rollback (a database error caught in a handler?)")
            if _aborted():
                # The same, where Django marked nothing (a raw cursor's or a query's error caught
                # with no atomic block of its own): PostgreSQL's COMMIT would roll back in silence.
                raise RuntimeError("a statement failed in the transaction (a database error caught in a handler?)")
    except DbError as error:
        if ran:
            raise
        raise Unavailable from error
    return outcomes


def _not_awaitable(handler: Handler, result: Any) -> Any:
    """A sync handler's result; a coroutine (an async function behind a sync decorator, which
    `@handler` cannot tell from a sync one) fails the attempt: it never ran, and acknowledging
    its message would lose it."""
    if not inspect.isawaitable(result):
        return result
    if inspect.iscoroutine(result):
        result.close()  # not run: no "never awaited" warning
    made_by = getattr(result, "__qualname__", None)
    raise TypeError(f"handler {handler.name} returned a {type(result).__name__}{f' of {made_by}' if made_by else ''} "
                    "without awaiting it: declare it with `async def` (a sync decorator around an async "
                    "function hides it)")


def _aborted() -> bool:
    """PostgreSQL: is the current transaction aborted by a failed statement? (psycopg's and
    psycopg2's transaction status 3, INERROR; Django marks it only when the error went
    through an atomic block.)"""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "postgresql" or connection.connection is None:
        return False
    return int(connection.connection.info.transaction_status) == TRANSACTION_INERROR


def _claim_all(copies: list[tuple[int, str]]) -> set[int]:
    """Delete the stored copies' rows in the current transaction; the ids that were there.
    A row is named by its id and its message id: ids may be given again after a restart
    of the router, to another message. PostgreSQL locks the rows in id order, so two
    processes given overlapping batches (after a lost connection) wait for each other
    rather than deadlock."""
    connection = connections[DEFAULT_DB_ALIAS]
    table = connection.ops.quote_name(StoredMessage._meta.db_table)
    if connection.vendor == "postgresql" and is_psycopg3:
        # One statement text whatever the batch's size, its columns as arrays bound in
        # binary: neither psycopg nor PostgreSQL parses 128 parameters per batch.
        ordered = sorted(copies)
        found = execute_bound(connection, _claim_sql(table), [[copy[0] for copy in ordered], [copy[1] for copy in ordered]])
        return {row[0] for row in found}
    pairs = ", ".join(["(%s, %s)"] * len(copies))
    params = [field for copy in sorted(copies) for field in copy]
    if connection.vendor == "postgresql":
        sql = (f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE (id, message_id) IN ({pairs})"
               " ORDER BY id FOR UPDATE) RETURNING id")
    elif connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):
        sql = f"DELETE FROM {table} WHERE (id, message_id) IN (VALUES {pairs}) RETURNING id"
    else:
        return {store_id for store_id, message_id in copies if _claim(store_id, message_id)}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def _claim_sql(table: str) -> str:
    return (f"DELETE FROM {table} WHERE id IN (SELECT m.id FROM {table} AS m"
            " JOIN unnest(%b::bigint[], %b::text[]) AS c(id, message_id) ON m.id = c.id AND m.message_id = c.message_id"
            " ORDER BY m.id FOR UPDATE OF m) RETURNING id")


def claim_after(store_id: int | None, message_id: str) -> Outcome:
    """An async handler's success: remove the stored copy afterwards (at-least-once)."""
    if store_id is None:
        return Outcome.HANDLED
    fresh_connection()
    with transaction.atomic():
        claimed = _claim(store_id, message_id)
        HandlerAttempt.objects.filter(store_id=store_id, message_id=message_id).delete()
    return Outcome.HANDLED if claimed else Outcome.ALREADY_HANDLED


def settle_failure(
    handler: Handler, message: Message, store_id: int | None, error: str, exception: BaseException | None = None
) -> Outcome:
    """After a failed attempt: count it (RETRY), or give up on the message for good: dead-letter
    it, or hand it to the handler's own `give_up` (a task is recorded as failed)."""
    fresh_connection()
    attempt = message.delivery_count
    if attempt < handler.retry.max_attempts:
        if store_id is not None:
            _record_attempts(handler, message, store_id, attempt, error)
        return Outcome.RETRY
    with transaction.atomic():
        if store_id is not None:
            if not _claim(store_id, message.message_id):
                HandlerAttempt.objects.filter(store_id=store_id, message_id=message.message_id).delete()
                return Outcome.ALREADY_HANDLED
            HandlerAttempt.objects.filter(store_id=store_id, message_id=message.message_id).delete()
        if handler.give_up is not None:
            handler.give_up(message, exception if exception is not None else RuntimeError(error))
        else:
            _dead_letter(handler, message, error)
    return Outcome.DEAD_LETTERED


def _dead_letter(handler: Handler, message: Message, error: str) -> None:
    """Publish the message to its queue's dead-letter exchange, or to `<queue>.dead`,
    with RabbitMQ's `x-death` headers (reason `rejected`) and the handler's own. Raises
    NowhereToDeadLetter, in the transaction that would have removed the message, rather
    than publish it to a `<queue>.dead` that no longer exists."""
    arguments = Queue.objects.filter(name=message.queue).values_list("arguments", flat=True).first()
    try:
        parsed = parse_queue_arguments(arguments or {})
    except BrokerError:
        parsed = parse_queue_arguments({})
    exchange, routing_key = parsed.dead_letter_exchange, parsed.dead_letter_routing_key
    if exchange is not None and exchange != "" and not Exchange.objects.filter(name=exchange).exists():
        log.error("handler %s: dead-letter exchange %r of queue %r does not exist: using %r",
                  handler.name, exchange, message.queue, dead_queue(message.queue))
        exchange = None
    if exchange is None:
        exchange, routing_key = "", dead_queue(message.queue)
        if not Queue.objects.filter(name=routing_key).exists():
            raise NowhereToDeadLetter(
                f"queue {routing_key!r} does not exist (deleted since runhandlers declared it?): the message is "
                "kept until it does (declare it, or restart runhandlers, which does)"
            )
    original = make_message(
        message_id=message.message_id,
        exchange=message.exchange,
        routing_key=message.routing_key,
        body_json=dumps(message.body),
        # The broker's count of this delivery's returns is not the message's own header.
        headers={key: value for key, value in message.headers.items() if key != DELIVERY_COUNT},
        persistent=True,
        published_at=message.published_at,
    )
    copy = dead_letter_copy(
        original, queue=message.queue, reason="rejected", exchange=exchange, routing_key=routing_key,
        died_at=time.time(),
    )
    headers = dict(original.headers if copy is None else copy.headers)
    headers.update({
        "x-handler": handler.name,
        "x-handler-attempts": message.delivery_count,
        "x-handler-error": error[:MAX_ERROR_CHARS],
    })
    publish(
        exchange,
        message.body,
        routing_key=message.routing_key if routing_key is None else routing_key,
        headers=headers,
        message_id=message.message_id,
    )
