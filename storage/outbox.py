"""The outbox table, router side: reading its rows, and hearing that some were committed.

Rows are read in id order and checked against the table's contract
(docs/outbox.md): a row this project wrote always passes; one that another
program wrote wrongly is reported and removed, never delivered. The signal
that rows may have been committed is PostgreSQL's NOTIFY on `pubsub_outbox`
(sent by the writing transaction, delivered at its commit), or on SQLite a
change of `PRAGMA data_version` seen by polling every few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any, Final

from django.conf import settings
from django.db import connection

from broker.cluster.lease import connection_kwargs
from broker.engine.errors import BrokerError
from broker.engine.jsoncodec import loads
from broker.engine.messages import make_message
from broker.protocol.publish import prepare_publish
from broker.runtime.outbox import OutboxEntry, OutboxSignal
from broker.runtime.stamps import now_iso
from pubsub import selectors
from pubsub.models import OutboxRow

log = logging.getLogger("broker.outbox")

NOTIFY_CHANNEL: Final = "pubsub_outbox"
# SQLite: how often the data version is looked at. A look costs microseconds.
SQLITE_POLL_SECONDS: Final = 0.005
_COLUMNS: Final = "id, message_id, exchange, routing_key, body, headers, persistent, published_at"


def read_outbox(limit: int) -> list[OutboxEntry]:
    table = connection.ops.quote_name(OutboxRow._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_COLUMNS} FROM {table} ORDER BY id LIMIT %s", [limit])
        rows = cursor.fetchall()
    return [_entry(*row) for row in rows]


def _entry(
    row_id: int, message_id: Any, exchange: Any, routing_key: Any, body: Any, headers: Any, persistent: Any,
    published_at: Any,
) -> OutboxEntry:
    """A row as a message, checked by the rules `pubsub.publish` applies at the call
    (prepare_publish): the same rules, whoever wrote the row."""
    try:
        if not isinstance(body, str) or not isinstance(headers, str):
            raise BrokerError("body and headers must be JSON text")
        loads(body)  # JSON, or ValueError: the text itself goes into every delivery's frame
        fields = {
            "routing_key": routing_key,
            "headers": loads(headers),
            "persistent": bool(persistent),
            "message_id": message_id,
        }
        if not isinstance(message_id, str) or not message_id:
            raise BrokerError("message_id: must be a string of 1 to 64 characters")
        request = prepare_publish(fields, max_bytes=settings.MAX_MESSAGE_BYTES, exchange=exchange, body_json=body)
    except BrokerError as error:  # the row's own fault: `problem` names it
        return OutboxEntry(row_id, None, error.message)
    except ValueError as error:  # not JSON
        return OutboxEntry(row_id, None, f"not JSON: {error}")
    message = make_message(
        message_id=message_id,
        exchange=request.exchange,
        routing_key=request.routing_key,
        body_json=request.body_json,
        headers=request.headers,
        persistent=request.persistent,
        published_at=str(published_at) or now_iso(),
    )
    return OutboxEntry(row_id, message)


def outbox_state() -> tuple[int, float | None]:
    """(rows waiting, the oldest's age in seconds or None), for the router's statistics."""
    state = selectors.outbox_state()
    return state.depth, state.oldest_age_seconds


def delete_outbox_sql(count: int) -> str:
    """Delete rows by id."""
    table = connection.ops.quote_name(OutboxRow._meta.db_table)
    return f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * count)})"


def delete_outbox_any_sql() -> str:
    """PostgreSQL: delete the rows whose ids are in an array, and name them."""
    table = connection.ops.quote_name(OutboxRow._meta.db_table)
    return f"DELETE FROM {table} WHERE id = ANY(%b::bigint[]) RETURNING id"


def find_outbox_sql(count: int) -> str:
    """Which of these row ids are there."""
    table = connection.ops.quote_name(OutboxRow._meta.db_table)
    return f"SELECT id FROM {table} WHERE id IN ({', '.join(['%s'] * count)})"


async def outbox_signal() -> OutboxSignal:
    database = settings.DATABASES["default"]
    if database["ENGINE"].startswith("django.db.backends.postgresql"):
        return PostgresSignal(database)
    return SqliteSignal(str(database["NAME"]))


def notified_rows(payloads: list[str]) -> list[OutboxEntry] | None:
    """The rows the notifications carry (pubsub/migrations/0003), or None when one of
    them does not (its rows were too large for a payload): the table is to be read."""
    entries: list[OutboxEntry] = []
    for payload in payloads:
        if not payload:
            return None
        try:
            rows = loads(payload)
            entries.extend(_entry(*row) for row in rows)
        except (ValueError, TypeError) as error:  # not the trigger's payload: read the table
            log.warning("an outbox notification's payload is not its rows (%s): reading the table", error)
            return None
    return entries


class PostgresSignal:
    """LISTEN on a connection of its own; (re)connected when needed, so a database that
    restarts costs the reader its fast wake-ups only until it is back. The table's
    trigger notifies at every commit of rows, with the rows when they fit."""

    hears_every_commit = True

    def __init__(self, database: dict[str, Any]) -> None:
        self._kwargs = {**connection_kwargs(database), "application_name": "broker-outbox"}
        self._conn: Any = None

    async def wait(self, timeout: float) -> list[OutboxEntry] | None:
        try:
            if self._conn is None or self._conn.closed:
                import psycopg

                self._conn = await psycopg.AsyncConnection.connect(autocommit=True, **self._kwargs)
                await self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                return None  # rows may have come while nobody listened: read the table
            # Every notification received is taken (one read may bring several), then any
            # others already there: rows of later commits come after, in commit order.
            payloads = [notify.payload async for notify in self._conn.notifies(timeout=timeout, stop_after=1)]
            if not payloads:
                return None  # no signal for a while: read the table anyway
            payloads += [notify.payload async for notify in self._conn.notifies(timeout=0)]
            return notified_rows(payloads)
        except Exception as error:
            log.warning("listening for outbox notifications failed (%s): polling meanwhile", error)
            await self.close()
            await asyncio.sleep(timeout)
            return None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                log.debug("closing the outbox listener failed", exc_info=True)


class SqliteSignal:
    """`PRAGMA data_version` changes when another connection commits to the database file."""

    hears_every_commit = False  # only every few milliseconds: the router's own process pokes

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._version = -1

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._changed():
                return None  # the table is to be read
            await asyncio.sleep(SQLITE_POLL_SECONDS)
        return None

    def _changed(self) -> bool:
        try:
            if self._conn is None:
                # No busy wait: this runs on the router's loop; a busy database is a reason to look.
                self._conn = sqlite3.connect(self._path, timeout=0, check_same_thread=False)
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return False
            self._version = version
            # Any commit changes the version, the router's own among them: wake the
            # reader only when there are rows to read.
            return self._conn.execute(f"SELECT 1 FROM {OutboxRow._meta.db_table} LIMIT 1").fetchone() is not None
        except sqlite3.Error:
            self._conn = None
            return True  # look: the reader's own query says what there is

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
