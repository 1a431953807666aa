"""The message store, ORM side: what the router loads at start and the rows
the group-commit writer inserts and deletes.

Every method runs on the writer's single database thread (see
broker/runtime/writer.py), so its connection is kept between commits.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from django.db import DatabaseError, DataError, IntegrityError, OperationalError, connection, transaction
from django.db.models import CASCADE, Max

from bindings.models import Binding
from broker.cluster.lease import connection_kwargs
from broker.engine.exchanges import ExchangeSpec, ExchangeType
from broker.engine.jsoncodec import dumps, loads
from broker.engine.messages import BacklogRows, Message, StoredCopy
from broker.engine.queues import QueueSpec
from broker.engine.routing import BindingSpec
from broker.protocol.server_frames import StatsHandler
from broker.protocol.topology import Topology
from broker.runtime.outbox import OutboxDrain, OutboxEntry, OutboxSignal
from common.server_binding import execute_bound
from exchanges.models import Exchange
from pubsub.selectors import running_handlers
from queues.models import Message as MessageRow
from queues.models import Queue
from storage.outbox import (
    delete_outbox_any_sql,
    delete_outbox_sql,
    find_outbox_sql,
    outbox_signal,
    outbox_state,
    read_outbox,
)

# Rows per statement: under SQLite's and PostgreSQL's parameter limits.
BATCH_ROWS: Final = 500
# Ids per PostgreSQL DELETE: a checkpoint after a drain may hold a million.
DELETE_ARRAY_ROWS: Final = 50_000
# PostgreSQL: fewer stored copies than this in a commit go by one INSERT, more by COPY.
COPY_ROWS: Final = 32
# PostgreSQL: an outbox drain of at most this many rows and copies goes as VALUES, more as arrays.
FEW_ROWS: Final = 16
# PostgreSQL: a drain whose copies' bodies add up to more goes by COPY in a transaction, not in one
# statement (whose values are held whole, and may not pass 1 GB).
ONE_STATEMENT_BYTES: Final = 16 * 1024 * 1024
# PostgreSQL: what ends the writer's lookups of queues by name (the table aliased q). The rows
# found stay locked until the transaction ends (a foreign key's check locks them so, but only at
# COMMIT), and are locked in id order, as Django's deletions lock them: the two cannot deadlock.
LOCK_QUEUES: Final = "ORDER BY q.id FOR KEY SHARE OF q"
# SQLite: how often the writer tries for the write lock, and for how long at most (the
# connection's own timeout, settings.py).
LOCK_RETRY_SECONDS: Final = 0.0002
LOCK_WAIT_SECONDS: Final = 20.0


def exchange_spec(row: Exchange) -> ExchangeSpec:
    return ExchangeSpec(
        name=row.name,
        type=ExchangeType(row.type),
        durable=row.durable,
        auto_delete=row.auto_delete,
        arguments=row.arguments or {},
    )


def queue_spec(row: Queue) -> QueueSpec:
    return QueueSpec(
        name=row.name, durable=row.durable, auto_delete=row.auto_delete, arguments=row.arguments or {}, row_id=row.pk
    )


def binding_spec(row: Binding) -> BindingSpec:
    """The binding's definition, for the router; its related rows are read (select them)."""
    return BindingSpec(
        exchange=row.exchange.name,
        destination=row.destination_name,
        binding_key=row.binding_key,
        arguments=row.arguments or {},
        destination_type=row.destination_type,
    )


class _RollBack(Exception):
    """Ends `find_refused`'s transaction without committing it."""


class OrmMessageStore:
    def __init__(self, *, fence: Callable[[Any], None] | None = None) -> None:
        # In a cluster, the router's check that it still holds the lease, run inside
        # each commit before it writes (broker/cluster/lease.py, WriteFence).
        self._fence = fence
        self._busy_off: object = None  # the SQLite connection whose busy handler is off
        self._drainer: Any = None  # PostgreSQL: the outbox drain's own connection (psycopg)

    def drop_transient_queues(self) -> list[str]:
        """Delete the non-durable queues (with their bindings): a router starting up
        does not keep them, as RabbitMQ does not (docs/protocol.md, "Durability").
        Plain SQL, as the writer's deletes: no signal sends each row back to the router."""
        found = list(Queue.objects.filter(durable=False).values_list("pk", "name"))
        for start in range(0, len(found), BATCH_ROWS):
            self.write([], [], [pk for pk, _ in found[start : start + BATCH_ROWS]])
        return [name for _, name in found]

    def load_topology(self) -> Topology:
        bindings = [
            binding_spec(row) for row in Binding.objects.select_related("exchange", "queue", "destination_exchange")
        ]
        queues = list(Queue.objects.all())
        return Topology(
            exchanges=[exchange_spec(row) for row in Exchange.objects.all()],
            queues=[queue_spec(row) for row in queues],
            bindings=bindings,
        )

    def max_store_id(self) -> int:
        """The largest id ever stored: new ids start above it, even above rows not loaded."""
        return MessageRow.objects.aggregate(top=Max("id"))["top"] or 0

    def message_counts(self) -> dict[str, int]:
        """Stored messages by queue name (the queue-and-id index answers it)."""
        table = connection.ops.quote_name(MessageRow._meta.db_table)
        names = dict(Queue.objects.values_list("pk", "name"))
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT queue_id, COUNT(*) FROM {table} GROUP BY queue_id")
            return {names[queue_id]: count for queue_id, count in cursor.fetchall() if queue_id in names}

    def read_backlog(self, queue: str, after: int, below: int, limit: int) -> list[tuple[int, Message]]:
        """Up to `limit` stored copies of `queue` with a store id above `after` and below
        `below`, in id order.

        Plain SQL (the ORM's per-row work doubled a read), and the strings many
        messages share (exchange, routing key, no headers) are kept once."""
        try:
            return self._read_backlog(queue, after, below, limit)
        except Exception:
            connection.close()  # as `write`: the next try reconnects
            raise

    @staticmethod
    def _read_backlog(queue: str, after: int, below: int, limit: int) -> list[tuple[int, Message]]:
        shared: dict[str, str] = {}
        no_headers: dict[str, Any] = {}
        found: list[tuple[int, Message]] = []
        postgres = connection.vendor == "postgresql"
        # PostgreSQL: a transaction for SET LOCAL. Not on SQLite, where the project's
        # transactions begin IMMEDIATE and would take the write lock for a read.
        with transaction.atomic() if postgres else contextlib.nullcontext(), connection.cursor() as cursor:
            if postgres:
                # The one good plan is the (queue, id) index read in order, stopped at the
                # limit. Right after a million rows came in, before ANALYZE has seen them,
                # PostgreSQL took a bitmap scan of every later row and a sort: 300 ms a read.
                cursor.execute("SET LOCAL enable_bitmapscan = off")
            cursor.execute(_backlog_sql(), [queue, after, below, limit])
            rows = cursor.fetchall()
        # Per row the cheapest work there is: a consumer draining a deep queue waits on it.
        append = found.append
        for store_id, message_id, exchange, routing_key, body, headers, published_at, origin_exchange, origin_key in rows:
            if headers == "{}" or not headers:
                headers = no_headers
            elif isinstance(headers, str):  # SQLite gives the JSON text, PostgreSQL the object
                headers = loads(headers)
            append((store_id, Message(
                message_id, shared.setdefault(exchange, exchange), shared.setdefault(routing_key, routing_key),
                body, headers, True, published_at, None if origin_exchange is None else (origin_exchange, origin_key),
            )))
        return found

    def delete_backlogs(self, backlogs: Sequence[BacklogRows]) -> None:
        table = connection.ops.quote_name(MessageRow._meta.db_table)
        queues = connection.ops.quote_name(Queue._meta.db_table)
        sql = (
            f"DELETE FROM {table} WHERE queue_id IN (SELECT id FROM {queues} WHERE name = %s) AND id > %s AND id < %s"
        )

        def delete() -> None:
            with transaction.atomic(), connection.cursor() as cursor:
                if self._fence is not None:
                    self._fence(cursor)
                for rows in backlogs:
                    cursor.execute(sql, [rows.queue, rows.after, rows.below])

        try:
            # As `write`: on SQLite the writer's connection has no busy handler, so another
            # process's lock (Django code publishing, handlers) failed it at once.
            self._taking_the_lock(delete)
        except Exception:
            connection.close()  # as `write`: the next try reconnects
            raise

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        try:
            self._taking_the_lock(lambda: self._write(inserts, deletes, queues_to_delete))
        except Exception:
            # A broken connection stays broken in this thread until closed; closing it
            # lets the next commit reconnect once the database is back.
            connection.close()
            raise

    def ping(self) -> None:
        """Ask the database something trivial (is it there?)."""
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:
            connection.close()  # as `write`: the next try reconnects
            raise

    def refused(self, error: BaseException) -> bool:
        # A value the column cannot hold, or a row that breaks a constraint: the same
        # row is refused again however often it is retried. Anything else may pass.
        return isinstance(error, (DataError, IntegrityError))

    def find_refused(self, inserts: Sequence[StoredCopy]) -> list[int]:
        """Each insert in a savepoint of one transaction that is rolled back: writes nothing."""
        refused: list[int] = []
        try:
            with transaction.atomic():
                if connection.vendor == "postgresql":
                    # Django's foreign keys are checked at COMMIT, which this transaction never
                    # reaches: checked at each INSERT instead, a copy they refuse is found too
                    # (else its batch failed at every commit, and was retried as it was).
                    with connection.cursor() as cursor:
                        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                for copy in inserts:
                    try:
                        with transaction.atomic():
                            self._write([copy], [], [])
                    except (DataError, IntegrityError):
                        refused.append(copy.store_id)
                raise _RollBack
        except _RollBack:
            pass
        except DatabaseError:
            connection.close()
            raise
        return refused

    def drain_outbox(self, rows: Sequence[OutboxDrain]) -> list[int]:
        """Remove the outbox rows that are still there and store their messages' durable
        copies, in one transaction; returns the ids removed. Only the router removes rows,
        and only here: a row is routed once, however often it was read or notified
        (storage/outbox.py reads them), and the copies of a row not removed are not stored.

        This commit does not wait for the disk (synchronous_commit off, SQLite's NORMAL):
        the rows it removes were durable before it began. If the machine loses it, it is
        lost whole: the rows are back, and are routed again (nothing is lost; it is then
        at-least-once). A router that dies loses nothing of it: the database has it."""
        try:
            if connection.vendor == "postgresql" and self._fence is None and _drain_bytes(rows) <= ONE_STATEMENT_BYTES:
                return self._drain_in_one_round_trip(rows)
            if connection.vendor == "sqlite":
                self._sqlite_synchronous("NORMAL")
            removed: list[int] = []
            try:
                self._taking_the_lock(lambda: self._drain(rows, removed))
            finally:
                if connection.vendor == "sqlite":
                    self._sqlite_synchronous("FULL")
            return removed
        except Exception:
            connection.close()  # as `write`: the next try reconnects
            raise

    def stored_copies(self, store_ids: Sequence[int]) -> list[int]:
        """Those of these store ids that are stored."""
        try:
            return self._select_ids(store_ids)
        except Exception:
            connection.close()  # as `write`: the next try reconnects
            raise

    def rows_in_doubt(self, store_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Of these copies' rows (a transaction-ack consumer held them when it went away):
        those stored and free, and those a transaction under way holds, a handler's that may
        yet delete them. PostgreSQL: rows it locks are skipped by a second look, not waited
        for. SQLite: a handler's transaction holds the write lock, which this takes (waiting
        as a commit does), so none is under way."""
        try:
            if connection.vendor == "postgresql":
                there = self._select_ids(store_ids)
                free = set(self._select_ids(store_ids, lock=" FOR KEY SHARE SKIP LOCKED"))
                return [store_id for store_id in there if store_id in free], [i for i in there if i not in free]
            found: list[int] = []

            def look() -> None:
                found.clear()
                with transaction.atomic():  # BEGIN IMMEDIATE: after any handler's transaction
                    found.extend(self._select_ids(store_ids))

            self._taking_the_lock(look)
            return found, []
        except Exception:
            connection.close()  # as `write`: the next try reconnects
            raise

    @staticmethod
    def _select_ids(store_ids: Sequence[int], lock: str = "") -> list[int]:
        table = connection.ops.quote_name(MessageRow._meta.db_table)
        found: list[int] = []
        with connection.cursor() as cursor:
            for start in range(0, len(store_ids), BATCH_ROWS):
                batch = list(store_ids[start : start + BATCH_ROWS])
                cursor.execute(f"SELECT id FROM {table} WHERE id IN ({', '.join(['%s'] * len(batch))}){lock}", batch)
                found.extend(row_id for (row_id,) in cursor.fetchall())
        return found

    def _drain(self, rows: Sequence[OutboxDrain], removed: list[int]) -> None:
        removed.clear()  # SQLite's lock may have this transaction tried again
        with transaction.atomic(), connection.cursor() as cursor:
            if self._fence is not None:
                self._fence(cursor)
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL synchronous_commit = off")
                ids = [row_id for row_id, _ in rows]
                removed.extend(row_id for (row_id,) in execute_bound(connection, delete_outbox_any_sql(), [ids]))
            else:
                for start in range(0, len(rows), BATCH_ROWS):
                    ids = [row_id for row_id, _ in rows[start : start + BATCH_ROWS]]
                    # Looked for, then deleted: RETURNING is newer than some SQLite builds Django takes.
                    cursor.execute(find_outbox_sql(len(ids)), ids)
                    found = [row_id for (row_id,) in cursor.fetchall()]
                    if found:
                        cursor.execute(delete_outbox_sql(len(found)), found)
                    removed.extend(found)
            there = set(removed)
            self._write_rows(cursor, [copy for row_id, copies in rows if row_id in there for copy in copies], [])

    def _drain_in_one_round_trip(self, rows: Sequence[OutboxDrain]) -> list[int]:
        """PostgreSQL, no cluster fence: one statement, one round trip, on a connection of
        the drain's own, in autocommit (the statement is its transaction: the rows' DELETE
        and their copies' INSERT commit together, without waiting for the disk: the rows
        were durable before), so that neither BEGIN, COMMIT nor a SET takes a trip; on this
        path round trips are the latency. Bound on the server and prepared once: a few rows
        go as VALUES, more as arrays sent in binary, so that a thousand rows cost neither a
        thousand parameters quoted in Python nor a statement planned anew."""
        ids = [row_id for row_id, _ in rows]
        copies = [(row_id, *_row(copy, copy.queue)) for row_id, copies in rows for copy in copies]
        params: list[Any]
        if len(ids) <= FEW_ROWS and len(copies) <= FEW_ROWS:
            sql, params = _drain_values_sql(len(ids), len(copies)), [*ids, *(value for row in copies for value in row)]
        else:
            columns = [list(column) for column in zip(*copies, strict=True)]
            names = sorted(set(columns[2])) if columns else []  # the queues', locked in the statement
            sql, params = _drain_arrays_sql(copies=bool(copies)), [ids, *([names] if copies else []), *columns]
        try:
            with connection.wrap_database_errors:
                return [row_id for (row_id,) in self._drain_connection().execute(sql, params).fetchall()]
        except Exception:
            self._close_drain_connection()
            raise

    def _drain_connection(self) -> Any:
        if self._drainer is None or self._drainer.closed:
            import psycopg

            kwargs = {**connection_kwargs(connection.settings_dict), "application_name": "broker-drain"}
            drainer = psycopg.connect(autocommit=True, **kwargs)
            self._drainer = drainer
        return self._drainer

    def _close_drain_connection(self) -> None:
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.close()

    @staticmethod
    def _sqlite_synchronous(level: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA synchronous = {level}")

    def _taking_the_lock(self, transaction_: Callable[[], None]) -> None:
        """Run a transaction of the writer's. On SQLite, take the write lock by trying its
        BEGIN IMMEDIATE again every LOCK_RETRY_SECONDS rather than through SQLite's busy
        handler, whose waits grow (1, 2, 5 ... 100 ms): against processes that publish from
        Django code, each holding the lock a millisecond at a time, it kept losing, and the
        outbox and every confirm waited."""
        if connection.vendor != "sqlite":
            transaction_()
            return
        connection.ensure_connection()
        if self._busy_off is not connection.connection:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA busy_timeout = 0")
            self._busy_off = connection.connection
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                transaction_()
                return
            except OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
            time.sleep(LOCK_RETRY_SECONDS)

    def read_outbox(self, limit: int) -> list[OutboxEntry]:
        return read_outbox(limit)

    async def outbox_signal(self) -> OutboxSignal:
        return await outbox_signal()

    def outbox_state(self) -> tuple[int, float | None]:
        return outbox_state()

    def handler_state(self) -> list[StatsHandler]:
        return cast(list[StatsHandler], running_handlers())

    def _write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            if self._fence is not None:
                self._fence(cursor)
            if queues_to_delete:
                # Queues the router deleted (auto-delete, expires), with their messages and
                # bindings, before the inserts, in the same transaction: a copy for such a
                # queue finds no row and is left out, and no queue declared anew under its
                # name can take it before this commit. On PostgreSQL every queue row this
                # commit touches is locked first, in id order, as deletions through Django
                # lock theirs: deleting some and then locking others, it could wait for a
                # deletion of several queues that waits for it.
                if connection.vendor == "postgresql":
                    names = sorted({copy.queue for copy in inserts})
                    table = connection.ops.quote_name(Queue._meta.db_table)
                    cursor.execute(
                        f"SELECT q.id FROM {table} AS q WHERE q.id = ANY(%s) OR q.name = ANY(%s) {LOCK_QUEUES}",
                        [list(queues_to_delete), names],
                    )
                delete_queue_rows(cursor, queues_to_delete)
            self._write_rows(cursor, inserts, deletes)

    @staticmethod
    def _write_rows(cursor: Any, inserts: Sequence[StoredCopy], deletes: Sequence[int]) -> None:
        """Inside a transaction of the writer's."""
        postgres = connection.vendor == "postgresql"
        # A few rows on PostgreSQL: one INSERT that finds the queues by name itself (the
        # join). More, or on SQLite: the queues' ids looked up first, then COPY or INSERT.
        # Looked up per commit, not cached: a queue deleted and declared again gets a new id;
        # a copy whose queue was deleted meanwhile is left out, as its queue's messages are.
        joined = postgres and 0 < len(inserts) < COPY_ROWS
        names = [] if joined else list({copy.queue for copy in inserts})
        queue_ids = _queue_ids(names) if names else {}
        rows = []
        for copy in inserts:
            queue_id = copy.queue if joined else queue_ids.get(copy.queue)
            if queue_id is None:
                continue
            rows.append(_row(copy, queue_id))
        # Plain SQL, not bulk_create: the ORM's per-row work was a tenth of a busy
        # publisher's profile; the values are already encoded.
        if rows and joined:
            # A quiet stream's commit: one round trip, where the lookup and COPY took three
            # or four, and on this path round trips are the latency.
            cursor.execute(_insert_joined_sql(len(rows)), [value for row in rows for value in row])
        elif rows and postgres:
            # COPY: PostgreSQL spends a fraction of the CPU per row that it spends
            # on one INSERT each (on this machine kind 84-124k rows/s against 28-46k),
            # and its CPU is the publish benchmark's bound on PostgreSQL.
            # psycopg's own cursor: wrapped, so its errors are Django's (`refused`).
            with connection.wrap_database_errors, cursor.copy(_copy_sql()) as copy:
                for row in rows:
                    copy.write_row(row)
        elif rows:
            cursor.executemany(_insert_sql(), rows)
        if postgres:
            for start in range(0, len(deletes), DELETE_ARRAY_ROWS):  # an array each, one plan
                cursor.execute(_delete_any_sql(), [list(deletes[start : start + DELETE_ARRAY_ROWS])])
        else:
            for start in range(0, len(deletes), BATCH_ROWS):
                batch = deletes[start : start + BATCH_ROWS]
                cursor.execute(_delete_sql(len(batch)), list(batch))

    def close(self) -> None:
        self._close_drain_connection()
        connection.close()


_COLUMNS: Final = (
    "id", "queue_id", "message_id", "exchange", "routing_key", "body", "headers", "published_at",
    "origin_exchange", "origin_routing_key",
)


def _row(copy: StoredCopy, queue: int | str) -> tuple[Any, ...]:
    """A copy's values in `_COLUMNS` order, its queue given by id (or, for
    `_insert_joined_sql`, by name)."""
    m = copy.message
    headers = dumps(dict(m.headers)) if m.headers else "{}"
    origin_exchange, origin_key = (None, None) if m.origin is None else m.origin
    return (copy.store_id, queue, m.message_id, m.exchange, m.routing_key, m.body_json, headers, m.published_at,
            origin_exchange, origin_key)


def _insert_sql() -> str:
    """Everywhere but PostgreSQL, which takes its rows by COPY."""
    quote = connection.ops.quote_name
    values = ", ".join(["%s"] * len(_COLUMNS))
    return f"INSERT INTO {quote(MessageRow._meta.db_table)} ({', '.join(map(quote, _COLUMNS))}) VALUES ({values})"


def _insert_joined_sql(count: int) -> str:
    """PostgreSQL: insert rows given with their queue's name, found by a join (a row whose
    queue is gone is left out) that locks the queues' rows as `_queue_ids` does."""
    quote = connection.ops.quote_name
    row = "(%s::bigint, %s, %s, %s, %s, %s, %s::jsonb, %s, %s::text, %s::text)"
    given = "store_id, queue_name, message_id, exchange, routing_key, body, headers, published_at, origin_exchange, origin_key"
    return (
        f"INSERT INTO {quote(MessageRow._meta.db_table)} ({', '.join(map(quote, _COLUMNS))}) "
        f"SELECT v.store_id, q.id, v.message_id, v.exchange, v.routing_key, v.body, v.headers, v.published_at, "
        f"v.origin_exchange, v.origin_key FROM (VALUES {', '.join([row] * count)}) AS v({given}) "
        f"JOIN {quote(Queue._meta.db_table)} AS q ON q.name = v.queue_name {LOCK_QUEUES}"
    )


def _drain_cte(delete: str, copies: str | None, names: str | None = None) -> str:
    """PostgreSQL: remove outbox rows (`delete`, returning their ids) and store the copies of
    those removed (`copies`, a relation of: outbox row id, then `_COLUMNS` with the queue by
    name; a copy whose queue is gone is left out, and the queues found are locked as
    `_queue_ids` locks them: those named by the array `names` when given, else those the
    copies join, whose rows, bodies and all, the lock's ORDER BY then sorts); the ids
    removed. In autocommit the statement is its transaction, and `sync` sets
    synchronous_commit off for it alone (a session's SET would outlive it behind a pooler)."""
    quote = connection.ops.quote_name
    table = quote(Queue._meta.db_table)
    queues = (
        f", q AS (SELECT q.id, q.name FROM {table} AS q WHERE q.name = ANY({names}) {LOCK_QUEUES})"
        if copies is not None and names is not None
        else ""
    )
    joined = "q ON q.name = v.queue_name" if names is not None else f"{table} AS q ON q.name = v.queue_name {LOCK_QUEUES}"
    stored = (
        f", stored AS ("
        f"INSERT INTO {quote(MessageRow._meta.db_table)} ({', '.join(map(quote, _COLUMNS))}) "
        f"SELECT v.store_id, q.id, v.message_id, v.exchange, v.routing_key, v.body, v.headers::jsonb, v.published_at, "
        f"v.origin_exchange, v.origin_key FROM {copies} AS v(outbox_id, store_id, queue_name, message_id, exchange, "
        f"routing_key, body, headers, published_at, origin_exchange, origin_key) "
        f"JOIN gone ON gone.id = v.outbox_id JOIN {joined})"
        if copies is not None
        else ""
    )
    return (
        f"WITH sync AS (SELECT set_config('synchronous_commit', 'off', true)), gone AS ({delete}){queues}{stored} "
        f"SELECT gone.id FROM gone, sync"
    )


def _drain_values_sql(rows: int, copies: int) -> str:
    row = "(%s::bigint, %s::bigint, %s, %s, %s, %s, %s, %s, %s, %s::text, %s::text)"
    return _drain_cte(f"{delete_outbox_sql(rows)} RETURNING id", f"(VALUES {', '.join([row] * copies)})" if copies else None)


def _drain_arrays_sql(*, copies: bool) -> str:
    """Arrays sent in binary: for text, a fifth of the client's CPU of text arrays."""
    types = ("bigint", "bigint", "text", "text", "text", "text", "text", "text", "text", "text", "text")
    arrays = f"unnest({', '.join(f'%b::{type_}[]' for type_ in types)})"
    return _drain_cte(delete_outbox_any_sql(), arrays if copies else None, "%b::text[]" if copies else None)


def _drain_bytes(rows: Sequence[OutboxDrain]) -> int:
    return sum(len(copy.message.body_json) for _, copies in rows for copy in copies)


def _copy_sql() -> str:
    quote = connection.ops.quote_name
    # Text format: the headers' JSON text is read as jsonb like any other literal.
    return f"COPY {quote(MessageRow._meta.db_table)} ({', '.join(map(quote, _COLUMNS))}) FROM STDIN"


def _delete_any_sql() -> str:
    return f"DELETE FROM {connection.ops.quote_name(MessageRow._meta.db_table)} WHERE id = ANY(%s)"


def delete_queue_rows(cursor: Any, ids: Sequence[int]) -> None:
    """Delete these queue rows and the rows that go with them (stored messages, bindings),
    in plain SQL: no signal sends each deletion to the router, which deleted these queues
    itself (the writer's `write`). Run in the writer's transaction, on `cursor`.

    The queue's row first (the foreign keys are checked at COMMIT, so it may go before the
    rows that name it), as a deletion through Django takes it first (storage/signals.py):
    one waits for the other, where in two orders each could hold rows the other waits for,
    a deadlock on PostgreSQL.
    """
    marks = ", ".join(["%s"] * len(ids))
    table = connection.ops.quote_name(Queue._meta.db_table)
    cursor.execute(f"DELETE FROM {table} WHERE id IN ({marks})", list(ids))
    for relation in Queue._meta.related_objects:
        # Bindings and stored messages: foreign keys that cascade (a reverse many-to-many, or
        # a key that protects or sets null, would need more than a DELETE here).
        assert relation.one_to_many and relation.on_delete is CASCADE, relation
        table = connection.ops.quote_name(relation.related_model._meta.db_table)
        cursor.execute(f"DELETE FROM {table} WHERE {relation.field.column} IN ({marks})", list(ids))


def _queue_ids(names: list[str]) -> dict[str, int]:
    """Stored queues' row ids by name. Plain SQL: building the ORM query took a tenth
    of the writer thread under a busy publisher, on the thread that holds the GIL.

    PostgreSQL: one statement, which locks the rows found until the writer's transaction
    ends. Django's foreign keys are checked at COMMIT, so without the lock a queue deleted
    meanwhile (its row, and the messages it had, gone) failed one side there: the deletion,
    or every publish of the commit, again at each retry. Its deletion locks the row first
    (storage/signals.py): a queue being deleted is waited for, then not found, and its copies
    are left out; one found is deleted after this commit, with the copies it stored."""
    table = connection.ops.quote_name(Queue._meta.db_table)
    found: dict[str, int] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SELECT q.name, q.id FROM {table} AS q WHERE q.name = ANY(%s) {LOCK_QUEUES}", [names])
            return dict(cursor.fetchall())
        for start in range(0, len(names), BATCH_ROWS):
            batch = names[start : start + BATCH_ROWS]
            cursor.execute(f"SELECT name, id FROM {table} WHERE name IN ({', '.join(['%s'] * len(batch))})", batch)
            found.update(cursor.fetchall())
    return found


def _backlog_sql() -> str:
    table = connection.ops.quote_name(MessageRow._meta.db_table)
    queues = connection.ops.quote_name(Queue._meta.db_table)
    columns = (
        "m.id, m.message_id, m.exchange, m.routing_key, m.body, m.headers, m.published_at, "
        "m.origin_exchange, m.origin_routing_key"
    )
    # Ordered as the (queue, id) index is, with the queue's id a constant: read in order.
    return (
        f"SELECT {columns} FROM {table} AS m WHERE m.queue_id = (SELECT id FROM {queues} WHERE name = %s) "
        f"AND m.id > %s AND m.id < %s ORDER BY m.queue_id, m.id LIMIT %s"
    )


def _delete_sql(count: int) -> str:
    table = connection.ops.quote_name(MessageRow._meta.db_table)
    return f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * count)})"
