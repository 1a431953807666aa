"""`publish` and friends: a message written to the outbox in the caller's transaction.

Validated at the call, as over HTTP (names, sizes, NUL, an exchange that
exists: the same errors, raised to the caller), so that an accepted message
can always be routed. Inside `transaction.atomic()` the row commits with the
caller's work, or not at all (a rolled-back savepoint takes it back too); in
autocommit it is committed before the call returns. On PostgreSQL the
table's trigger sends a NOTIFY, which the router hears when it commits; in
the router's own process the committing thread wakes it directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from broker.engine.errors import BrokerError, NotFound
from broker.engine.jsoncodec import dumps, json_value_problem
from broker.protocol.publish import PublishRequest, prepare_publish
from broker.router.calls import outbox_written
from broker.runtime.stamps import new_message_id, now_iso
from common.server_binding import execute_bound
from exchanges.models import Exchange

from .databases import is_the_broker_s_database
from .models import OutboxRow
from .recording import record

# Rows per INSERT statement: 7 parameters each, under every database's limit.
INSERT_ROWS: Final = 500
_COLUMNS: Final = ("message_id", "exchange", "routing_key", "body", "headers", "persistent", "published_at")


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One message for `publish_many`: the fields of `publish`."""

    exchange: str
    body: Any
    routing_key: str = ""
    headers: Mapping[str, Any] | None = None
    persistent: bool = True
    message_id: str | None = None


def publish(
    exchange: str,
    body: Any,
    routing_key: str = "",
    headers: Mapping[str, Any] | None = None,
    persistent: bool = True,
    message_id: str | None = None,
    *,
    using: str = DEFAULT_DB_ALIAS,
) -> str:
    """Publish a message through `exchange` (`""` or `"amq.default"`: the default exchange);
    returns its message id. Raises the broker's errors (`invalid`, `not_found`, `too_large`)."""
    (sent,) = publish_many([OutboxMessage(exchange, body, routing_key, headers, persistent, message_id)], using=using)
    return sent


def publish_many(messages: Iterable[OutboxMessage], *, using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """Publish messages in order, in one statement; their message ids. All or none: one
    that breaks a rule refuses the lot, before anything is written."""
    requests = [_request(message) for message in messages]
    if not requests:
        return []
    _require_the_broker_s_database(using)
    _require_exchanges({request.exchange for request in requests}, using)
    published_at = now_iso()
    ids = [request.message_id or new_message_id() for request in requests]
    rows = [
        (message_id, r.exchange, r.routing_key, r.body_json, dumps(r.headers) if r.headers else "{}", r.persistent,
         published_at)
        for message_id, r in zip(ids, requests, strict=True)
    ]
    connection = connections[using]
    # Plain SQL, no savepoint: a statement is atomic, and the ORM's bulk_create cost more
    # than the rest of a publish. On PostgreSQL the table's trigger sends the NOTIFY that
    # wakes the router at commit (migration 0002).
    with transaction.atomic(using=using, savepoint=False), connection.cursor() as cursor:
        as_arrays = len(rows) > 1 and connection.vendor == "postgresql" and _is_psycopg3()
        for start in range(0, len(rows), INSERT_ROWS):
            chunk = rows[start : start + INSERT_ROWS]
            if as_arrays:
                _insert_columns(connection, chunk)
            else:
                cursor.execute(_insert_sql(connection, len(chunk)), [value for row in chunk for value in row])
        transaction.on_commit(outbox_written, using=using)  # forgotten if the caller's savepoint rolls back
    record(requests, ids, using=using)
    return ids


async def apublish(
    exchange: str,
    body: Any,
    routing_key: str = "",
    headers: Mapping[str, Any] | None = None,
    persistent: bool = True,
    message_id: str | None = None,
    *,
    using: str = DEFAULT_DB_ALIAS,
) -> str:
    """`publish` for async code: the database work runs in Django's sync thread."""
    sent: str = await sync_to_async(publish)(
        exchange, body, routing_key, headers, persistent, message_id, using=using
    )
    return sent


async def apublish_many(messages: Iterable[OutboxMessage], *, using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """`publish_many` for async code."""
    sent: list[str] = await sync_to_async(publish_many)(list(messages), using=using)
    return sent


def _insert_sql(connection: Any, rows: int) -> str:
    quote = connection.ops.quote_name
    values = ", ".join(["(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"] * rows)
    return f"INSERT INTO {quote(OutboxRow._meta.db_table)} ({', '.join(map(quote, _COLUMNS))}) VALUES {values}"


def _insert_columns(connection: Any, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL with psycopg 3, several rows: one short statement whose parameters are
    the columns, as arrays sent in binary: a fifth of the CPU of Django's client-side
    binding of a statement of many rows."""
    execute_bound(connection, _insert_columns_sql(connection), [list(column) for column in zip(*rows, strict=True)])


def _is_psycopg3() -> bool:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


def _insert_columns_sql(connection: Any) -> str:
    quote = connection.ops.quote_name
    types = ("text", "text", "text", "text", "text", "boolean", "text")
    arrays = ", ".join(f"%b::{type_}[]" for type_ in types)
    names = ", ".join(_COLUMNS)
    # WITH ORDINALITY and ORDER BY: the rows take their ids in the order given.
    return (
        f"INSERT INTO {quote(OutboxRow._meta.db_table)} ({', '.join(map(quote, _COLUMNS))}) "
        f"SELECT {names} FROM unnest({arrays}) WITH ORDINALITY AS given({names}, position) ORDER BY position"
    )


def _request(message: OutboxMessage) -> PublishRequest:
    fields: dict[str, Any] = {
        "body": message.body,
        "routing_key": message.routing_key,
        "headers": None if message.headers is None else dict(message.headers),
        "persistent": message.persistent,
        "message_id": message.message_id,
    }
    if not isinstance(message.exchange, str):
        raise BrokerError("exchange: must be a string", fields={"exchange": ["must be a string"]})
    # A Python value may hold NaN or infinity, which orjson would write as null.
    for field in ("body", "headers"):
        problem = json_value_problem(fields[field])
        if problem is not None:
            raise BrokerError(f"{field}: {problem}", fields={field: [problem]})
    return prepare_publish(fields, max_bytes=settings.MAX_MESSAGE_BYTES, exchange=message.exchange)


def _require_the_broker_s_database(using: str) -> None:
    """The router reads the outbox of the `default` database only: an alias of another
    database would take rows that are never routed."""
    if not is_the_broker_s_database(using):
        problem = f"{using!r} is another database than the broker's ('default'): its outbox is never read"
        raise BrokerError(f"using: {problem}", fields={"using": [problem]})


def _require_exchanges(names: set[str], using: str) -> None:
    named = names - {""}  # the default exchange always exists
    if not named:
        return
    found = set(Exchange.objects.using(using).filter(name__in=named).values_list("name", flat=True))
    missing = sorted(named - found)
    if missing:
        raise NotFound(f"exchange {missing[0]!r} does not exist")
