"""Publishing from another program on the broker's database: the outbox row, written with
the caller's own connection, so the message is part of the caller's transaction.

```python
import psycopg

from pubsub_client import outbox

with psycopg.connect("postgresql://app@db/pubsub") as conn:  # commits at the end of the block
    conn.execute("INSERT INTO orders (id, total) VALUES (%s, %s)", (42, 99))
    outbox.publish(conn, "orders", {"id": 42}, routing_key="orders.eu.created")
```

The row goes to the table `pubsub_outbox`, whose columns are a documented
contract (docs/outbox.md, "The table", version 1); the broker's router routes it
once the transaction commits, and never if it rolls back. Nothing here commits.

The message is checked here, before anything is written, with the rules the
broker's own calls check (names, keys, JSON, sizes, U+0000) and the same error
codes (`InvalidRequest`, `TooLarge`, `NotFound` from `pubsub_client.errors`):
a row the router would refuse is never written. The exchange's existence is
checked by reading the broker's table of exchanges, `exchanges_exchange`
(`check_exchange=False` skips it): a row for an exchange that does not exist
is routed nowhere.

Connections: psycopg 3 and psycopg2 (PostgreSQL), sqlite3, and Django's
connection objects (`django.db.connection`, PostgreSQL or SQLite), told apart
by the module of their class. Nothing is imported for them: this module needs
the standard library only, and no Django.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, Protocol

from .errors import BrokerError, InvalidRequest, NotFound, TooLarge

# docs/outbox.md, "The table": the version of the columns this module writes.
CONTRACT_VERSION: Final = 1
TABLE: Final = "pubsub_outbox"
# The broker's exchanges, one row each by `name`; the built-in `amq.*` ones are rows,
# the default exchange (`""`, `amq.default`) is not.
EXCHANGES_TABLE: Final = "exchanges_exchange"

# The broker's rules (docs/protocol.md, "Names", "Errors"; docs/outbox.md, "The table").
MAX_MESSAGE_BYTES: Final = 1_048_576  # the broker's default MAX_MESSAGE_BYTES
MAX_KEY: Final = 255
MAX_MESSAGE_ID: Final = 64
EXPIRATION: Final = "expiration"  # a message's own TTL, in ms
MAX_EXPIRATION_DIGITS: Final = 15
# Arrays and objects nested at most this deep: the broker's JSON encoder goes no deeper.
MAX_DEPTH: Final = 254
DEFAULT_EXCHANGE_ALIAS: Final = "amq.default"
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,255}")
NAME_PROBLEM: Final = "1 to 255 characters of A-Z a-z 0-9 _ . : -"
NUL_PROBLEM: Final = "must not contain the NUL character (U+0000)"
# The broker's encoder writes integers of 64 bits (signed, or unsigned), no wider.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
# U+0000 in JSON text, `\u0000`, unless that backslash is itself escaped.
_ESCAPED_NUL: Final = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class DBAPIConnection(Protocol):
    """A DB-API 2 connection (or Django's `django.db.connection`): only `cursor()` is used."""

    def cursor(self) -> Any: ...


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
    connection: DBAPIConnection,
    exchange: str,
    body: Any,
    routing_key: str = "",
    headers: Mapping[str, Any] | None = None,
    persistent: bool = True,
    message_id: str | None = None,
    *,
    check_exchange: bool = True,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> str:
    """Write a message for `exchange` (`""` or `"amq.default"`: the default exchange) to the
    outbox with `connection`, in its current transaction; returns its message id.

    Does not commit: the message is published when, and only if, the caller's
    transaction commits (in autocommit, at once). Raises `InvalidRequest`,
    `TooLarge` or `NotFound` (the exchange does not exist) before writing anything,
    and `TypeError` for a connection of a driver it does not know."""
    message = OutboxMessage(exchange, body, routing_key, headers, persistent, message_id)
    dialect = _dialect(connection)
    row = _row(message, max_bytes)
    (sent,) = _write(connection, dialect, [row], check_exchange)
    return sent


def publish_many(
    connection: DBAPIConnection,
    messages: Iterable[OutboxMessage],
    *,
    check_exchange: bool = True,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> list[str]:
    """`publish` for several messages, in order, in one statement; their message ids.
    All or none: one that breaks a rule refuses the lot (its error's message names
    it, `message 3: ...`), before anything is written."""
    dialect = _dialect(connection)
    rows = []
    for index, message in enumerate(messages):
        try:
            rows.append(_row(message, max_bytes))
        except BrokerError as error:
            raise type(error)(error.code, f"message {index}: {error.message}", error.fields) from None
    if not rows:
        return []
    return _write(connection, dialect, rows, check_exchange)


# --- the checks ---------------------------------------------------------------


class _Row(NamedTuple):
    """An outbox row's values, in the order the INSERT statements name the columns."""

    message_id: str
    exchange: str
    routing_key: str
    body: str
    headers: str
    persistent: bool


def _invalid(field: str, problem: str) -> InvalidRequest:
    return InvalidRequest("invalid", f"{field}: {problem}", {field: [problem]})


def _row(message: OutboxMessage, max_bytes: int) -> _Row:
    """The row for a message, or the broker's error for the first rule it breaks."""
    if not isinstance(message, OutboxMessage):
        raise TypeError(f"publish_many takes OutboxMessage objects, not {type(message).__name__}")
    exchange = message.exchange
    if not isinstance(exchange, str):
        raise _invalid("exchange", "must be a string")
    if exchange == DEFAULT_EXCHANGE_ALIAS:
        exchange = ""
    elif exchange and not NAME_PATTERN.fullmatch(exchange):
        raise _invalid("exchange", f"must be {NAME_PROBLEM}")
    routing_key = message.routing_key
    if not isinstance(routing_key, str) or len(routing_key) > MAX_KEY:
        raise _invalid("routing_key", f"must be a string of at most {MAX_KEY} characters")
    if "\x00" in routing_key:
        raise _invalid("routing_key", NUL_PROBLEM)
    headers = {} if message.headers is None else message.headers
    if not isinstance(headers, Mapping) or not all(isinstance(key, str) for key in headers):
        raise _invalid("headers", "must be an object with string keys")
    if "" in headers:  # the router refuses it (a STOMP MESSAGE frame could not carry it): lost
        raise _invalid("headers", 'a header needs a name (not "")')
    if EXPIRATION in headers and not _is_expiration(headers[EXPIRATION]):
        raise _invalid("headers", "expiration: must be a number of milliseconds (a string of digits)")
    if not isinstance(message.persistent, bool):
        raise _invalid("persistent", "must be true or false")
    message_id = message.message_id
    if message_id is not None:
        if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID:
            raise _invalid("message_id", f"must be a string of 1 to {MAX_MESSAGE_ID} characters")
        if "\x00" in message_id:
            raise _invalid("message_id", NUL_PROBLEM)
    body = _json_text("body", message.body)
    headers_text = _json_text("headers", dict(headers)) if headers else "{}"
    # The router keeps the headers where PostgreSQL refuses U+0000; the body stays JSON
    # text, in which U+0000 is escaped.
    if "\\u0000" in headers_text and _ESCAPED_NUL.search(headers_text):
        raise _invalid("headers", NUL_PROBLEM)
    if _utf8_size(body) > max_bytes:
        raise TooLarge("too_large", f"body: the message body is over the limit of {max_bytes} bytes")
    if _utf8_size(headers_text) > max_bytes:
        raise TooLarge("too_large", f"headers: the message headers are over the limit of {max_bytes} bytes")
    return _Row(message_id or str(uuid.uuid4()), exchange, routing_key, body, headers_text, message.persistent)


def _is_expiration(value: Any) -> bool:
    """A message's own TTL as the broker takes it: a string of digits, or an integer >= 0."""
    if isinstance(value, str):
        return value.isascii() and value.isdigit() and len(value) <= MAX_EXPIRATION_DIGITS
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**MAX_EXPIRATION_DIGITS


def _json_text(field: str, value: Any) -> str:
    """Compact JSON text of a value the broker takes; `invalid` naming what is not JSON."""
    problem = _json_problem(value, 1)
    if problem is not None:
        raise _invalid(field, f"must be a JSON value ({problem})")
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise _invalid(field, "must be a JSON value (a string holds a lone surrogate)") from None
    return text


def _json_problem(value: Any, depth: int) -> str | None:
    """What in `value` is not JSON as the broker writes it, or None. Python's `json` would
    write some of it otherwise: dict keys that are not strings as strings, NaN as `NaN`."""
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, int):
        return None if _INT_MIN <= value <= _INT_MAX else "an integer wider than 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r}"
    if isinstance(value, (list, tuple, dict)):
        if depth > MAX_DEPTH:
            return f"arrays and objects nested over {MAX_DEPTH} deep"
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    return f"an object key that is not a string: {key!r}"
            items: Iterable[Any] = value.values()
        else:
            items = value
        for item in items:
            problem = _json_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"a {type(value).__name__}"


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


# --- the database -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Dialect:
    postgresql: bool
    mark: str  # the driver's placeholder: `%s` (psycopg, psycopg2, Django) or `?` (sqlite3)


_POSTGRESQL: Final = _Dialect(postgresql=True, mark="%s")


def _dialect(connection: object) -> _Dialect:
    """The database and placeholder of a connection, from the module of its class (or a base's)."""
    for cls in type(connection).__mro__:
        package = cls.__module__.partition(".")[0]
        if package == "psycopg" and cls.__name__.startswith("Async"):
            break
        if package in ("psycopg", "psycopg2"):
            return _POSTGRESQL
        if package == "sqlite3":
            return _Dialect(postgresql=False, mark="?")
        if package == "django":
            vendor = getattr(connection, "vendor", None)
            if vendor == "postgresql":
                return _POSTGRESQL
            if vendor == "sqlite":  # Django's cursor turns `%s` into SQLite's `?`
                return _Dialect(postgresql=False, mark="%s")
            break
    raise TypeError(
        f"pubsub_client.outbox needs a synchronous connection of psycopg, psycopg2 or sqlite3, or "
        f"Django's (PostgreSQL or SQLite), not {type(connection).__module__}.{type(connection).__qualname__}"
    )


def _write(connection: DBAPIConnection, dialect: _Dialect, rows: list[_Row], check_exchange: bool) -> list[str]:
    cursor = connection.cursor()
    try:
        if check_exchange:
            _require_exchanges(cursor, dialect, sorted({row.exchange for row in rows} - {""}))
        published_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # One statement whatever the number of rows, so that the rows are all written
        # or none even in autocommit; in the given order, which their ids keep.
        if dialect.postgresql:
            columns = [list(column) for column in zip(*rows, strict=True)]  # lists: arrays for the driver
            # The table's trigger sends the NOTIFY that wakes the router at commit.
            cursor.execute(_INSERT_POSTGRESQL, [published_at, *columns])
        else:
            table = json.dumps(rows, ensure_ascii=False)  # an array of arrays
            cursor.execute(_INSERT_SQLITE.replace("?", dialect.mark), [published_at, table])
    finally:
        cursor.close()
    return [row.message_id for row in rows]


def _require_exchanges(cursor: Any, dialect: _Dialect, names: list[str]) -> None:
    if not names:  # the default exchange always exists
        return
    if dialect.postgresql:
        cursor.execute(f"SELECT name FROM {EXCHANGES_TABLE} WHERE name = ANY(%s::text[])", [names])
    else:
        cursor.execute(
            f"SELECT name FROM {EXCHANGES_TABLE} WHERE name IN (SELECT value FROM json_each({dialect.mark}))",
            [json.dumps(names)],
        )
    # Rows as the connection's row factory makes them: tuples, or mappings (psycopg's
    # dict_row, psycopg2's RealDictCursor).
    found = {next(iter(row.values())) if isinstance(row, Mapping) else row[0] for row in cursor.fetchall()}
    missing = [name for name in names if name not in found]
    if missing:
        raise NotFound("not_found", f"exchange {missing[0]!r} does not exist")


_COLUMNS: Final = "message_id, exchange, routing_key, body, headers, persistent, published_at"
_INSERT_POSTGRESQL: Final = (
    f"INSERT INTO {TABLE} ({_COLUMNS}) "
    "SELECT m, e, k, b, h, p, %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::boolean[])"
    " WITH ORDINALITY AS r(m, e, k, b, h, p, n) ORDER BY n"
)
# The rows as one JSON array of arrays, taken apart by SQLite's JSON functions.
_INSERT_SQLITE: Final = (
    f"INSERT INTO {TABLE} ({_COLUMNS}) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),"
    " json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), ?"
    " FROM json_each(?) ORDER BY key"
)
