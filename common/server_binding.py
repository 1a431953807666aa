"""A statement bound on the server, on Django's PostgreSQL connection (psycopg 3).

Django's cursors bind parameters on the client side: for a statement of many
rows, or an array of a thousand values, that meant parsing and quoting it all
in Python on every call. This runs on the same connection, inside its current
transaction, with its errors made Django's; not through Django's cursor (no
query logging), and never as a prepared statement (Django's connections
prepare none, which keeps them usable behind a transaction-pooling pgbouncer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def execute_bound(connection: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run `sql` with `params` bound on the server; its rows, if it returns any."""
    import psycopg

    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=False)
        return cursor.fetchall() if cursor.description is not None else []
