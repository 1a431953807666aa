"""`publish` and friends: a message written to the outbox in the caller's transaction.

Validated at the call, as over HTTP (names, sizes, NUL, an exchange that
exists: the same errors, raised to the caller), so that an accepted message
can always be routed. Inside `transaction.atomic()` the row commits with the
caller's work, or not at all (a rolled-back savepoint takes it back too); in
autocommit it is committed before the call returns. On PostgreSQL the
transaction also sends NOTIFY, which the router hears when it commits; in
the router's own process the committing thread wakes it directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from broker.engine.errors import BrokerError, NotFound
from broker.engine.jsoncodec import dumps
from broker.protocol.publish import PublishRequest, prepare_publish
from broker.router.calls import outbox_written
from broker.runtime.stamps import new_message_id, now_iso
from exchanges.models import Exchange

from .models import OutboxRow
from .recording import record

NOTIFY_CHANNEL = "pubsub_outbox"  # storage/outbox.py listens on it


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
    _require_exchanges({request.exchange for request in requests}, using)
    published_at = now_iso()
    rows = [
        OutboxRow(
            message_id=request.message_id or new_message_id(),
            exchange=request.exchange,
            routing_key=request.routing_key,
            body=request.body_json,
            headers=dumps(request.headers) if request.headers else "{}",
            persistent=request.persistent,
            published_at=published_at,
        )
        for request in requests
    ]
    with transaction.atomic(using=using):  # a savepoint inside the caller's: all rows or none
        OutboxRow.objects.using(using).bulk_create(rows)
        if connections[using].vendor == "postgresql":
            with connections[using].cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
        transaction.on_commit(outbox_written, using=using)  # forgotten if this savepoint rolls back
    ids = [row.message_id for row in rows]
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
    return prepare_publish(fields, max_bytes=settings.MAX_MESSAGE_BYTES, exchange=message.exchange)


def _require_exchanges(names: set[str], using: str) -> None:
    named = names - {""}  # the default exchange always exists
    if not named:
        return
    found = set(Exchange.objects.using(using).filter(name__in=named).values_list("name", flat=True))
    missing = sorted(named - found)
    if missing:
        raise NotFound(f"exchange {missing[0]!r} does not exist")
