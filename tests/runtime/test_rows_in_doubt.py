"""The look for the rows of copies a transaction-ack consumer held when it went away: a
row its handler's transaction is deleting is neither stored nor gone until that
transaction ends."""

from __future__ import annotations

import threading
import time

from django.db import DEFAULT_DB_ALIAS, connections

from broker.engine.messages import StoredCopy, make_message
from queues.models import Message, Queue
from storage.store import OrmMessageStore


def _copies(*store_ids: int) -> list[StoredCopy]:
    return [
        StoredCopy(store_id, "q", make_message(
            message_id=f"m{store_id}", exchange="", routing_key="q", body_json="1", headers={}, persistent=True,
            published_at="2026-12-07T12:00:00.000000Z",
        ))
        for store_id in store_ids
    ]


def test_a_row_a_handler_is_deleting_is_looked_at_again_once_its_transaction_ends(transactional_db: object) -> None:
    Queue.objects.create(name="q")
    store = OrmMessageStore()
    store.write(_copies(1, 2), [], [])
    handler = connections.create_connection(DEFAULT_DB_ALIAS)  # a handler process's connection
    handler.ensure_connection()
    raw = handler.connection
    table = handler.ops.quote_name(Message._meta.db_table)
    sqlite = handler.vendor == "sqlite"
    if sqlite:
        raw.isolation_level = None
        raw.execute("BEGIN IMMEDIATE")
    else:
        raw.autocommit = False
    raw.cursor().execute(f"DELETE FROM {table} WHERE id = 1")  # handling message 1, not committed yet
    try:
        if sqlite:
            # The handler's transaction holds the write lock: the look waits for it to end.
            committing = threading.Timer(0.3, lambda: raw.execute("COMMIT"))
            committing.start()
            started = time.monotonic()
            assert store.rows_in_doubt([1, 2, 3]) == ([2], [])
            assert time.monotonic() - started >= 0.25
            committing.join()
        else:
            started = time.monotonic()
            assert store.rows_in_doubt([1, 2, 3]) == ([2], [1])  # 1: busy, looked at again later
            assert time.monotonic() - started < 1.0  # without waiting for the handler
            raw.commit()
            assert store.rows_in_doubt([1]) == ([], [])  # handled: gone
    finally:
        handler.close()
        store.close()
