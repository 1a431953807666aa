"""Publish from Django code, inside the caller's transaction.

    from pubsub import publish

    with transaction.atomic():
        order = Order.objects.create(...)
        publish("orders", {"id": order.pk}, routing_key="orders.eu.created")

A message published inside `transaction.atomic()` is part of that transaction:
it is written to the outbox table with the caller's own connection and is
delivered if, and only if, the outermost transaction commits; once committed it
is never lost, and the router routes it exactly once (docs/outbox.md). It works
in every process of the project: `runbroker`'s, a `manage.py` command or shell,
a WSGI or ASGI server, a test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .handling import Message, Retry, handler
    from .publishing import OutboxMessage, apublish, apublish_many, publish, publish_many
    from .streams import publish_changes, refresh_streams, stream

__all__ = [
    "Message", "OutboxMessage", "Retry", "apublish", "apublish_many", "handler", "publish", "publish_changes",
    "publish_many", "refresh_streams", "stream",
]


def __getattr__(name: str) -> Any:
    # Imported when first used: this package is a Django app, imported before its models may be.
    if name in ("handler", "Message", "Retry"):
        from . import handling

        return getattr(handling, name)
    if name in ("stream", "publish_changes", "refresh_streams"):
        from . import streams

        return getattr(streams, name)
    if name in __all__:
        from . import publishing

        return getattr(publishing, name)
    raise AttributeError(f"module 'pubsub' has no attribute {name!r}")
