"""Binding services: bind a queue (or an exchange) to an exchange, and unbind.

ORM work only: saved and deleted rows reach the running router after commit
(storage/sync.py). Everything the router would refuse is checked
before the row is written (docs/protocol.md, "Errors"). No HTTP here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from bindings.models import Binding
from broker.engine.errors import BrokerError, NotFound
from broker.engine.exchanges import routing_kind_of
from broker.engine.jsoncodec import canonical
from broker.engine.rules import (
    binding_arguments,
    key_field,
    object_field,
    refuse_default_exchange,
    refuse_holding_queue,
)
from broker.transport.authorization import Permissions
from common.limits import ensure_room
from exchanges.models import Exchange
from queues.models import Queue
from queues.services import refuse_private_queue


@dataclass(frozen=True, slots=True)
class BindingCreated:
    binding: Binding
    created: bool


def binding_create(
    *,
    exchange: str,
    queue: str | None = None,
    destination_exchange: str | None = None,
    binding_key: str = "",
    arguments: Mapping[str, Any] | None = None,
) -> BindingCreated:
    """Bind `queue`, or `destination_exchange`, to `exchange`; an identical binding is
    found, not duplicated.

    Bindings that differ only in `arguments` are distinct (docs/protocol.md, POST /api/bindings/).
    """
    if (queue is None) == (destination_exchange is None):
        message = "give a queue or a destination exchange, not both"
        raise BrokerError(message, fields={"queue": [message], "destination_exchange": [message]})
    named = ("queue", queue) if destination_exchange is None else ("destination_exchange", destination_exchange)
    for field, name in (("exchange", exchange), named):
        if not isinstance(name, str):
            raise BrokerError(f"{field} must be a name", fields={field: ["must be a string"]})
    refuse_default_exchange(exchange)
    if destination_exchange is not None:
        refuse_default_exchange(destination_exchange, field="destination_exchange")
    binding_key = key_field("binding_key", binding_key)
    arguments = object_field("arguments", arguments)
    with transaction.atomic():
        exchange_row = _exchange(exchange)
        destination: dict[str, Any]
        if destination_exchange is not None:
            destination = {"destination_exchange": _exchange(destination_exchange)}
        else:
            assert queue is not None
            queue_row = Queue.objects.filter(name=queue).first()
            if queue_row is None:
                refuse_private_queue(queue)
                raise NotFound(f"queue {queue!r} does not exist")
            refuse_holding_queue(queue)
            destination = {"queue": queue_row}
        binding_arguments(routing_kind_of(exchange_row.type, exchange_row.arguments), arguments)
        identity = {"exchange": exchange_row, **destination, "binding_key": binding_key,
                    "arguments_key": canonical(arguments)}
        existing = Binding.objects.filter(**identity).first()
        if existing is not None:
            return BindingCreated(existing, False)
        ensure_room(Binding, setting="MAX_BINDINGS", kind="bindings")
        try:
            with transaction.atomic():  # a savepoint: a concurrent create loses the race cleanly
                row = Binding.objects.create(
                    exchange=exchange_row, **destination, binding_key=binding_key, arguments=arguments
                )
        except IntegrityError:
            return BindingCreated(Binding.objects.get(**identity), False)
        return BindingCreated(row, True)


def require_binding_rights(
    permissions: Permissions, *, exchange: str, queue: str | None = None, destination_exchange: str | None = None
) -> None:
    """Raise `forbidden` unless `permissions` may make or remove a binding of `exchange` to
    `queue` or `destination_exchange`: write on the destination and read on the exchange, as
    RabbitMQ's queue.bind and exchange.bind (access/rules.py). The API's rule, and the admin's."""
    if queue is not None:
        permissions.require("write", "queue", queue)
    if destination_exchange is not None:
        permissions.require("write", "exchange", destination_exchange)
    permissions.require("read", "exchange", exchange)


def _exchange(name: str) -> Exchange:
    row = Exchange.objects.filter(name=name).first()
    if row is None:
        raise NotFound(f"exchange {name!r} does not exist")
    return row


def binding_delete(*, id: int) -> None:
    with transaction.atomic():
        row = Binding.objects.select_related("exchange", "queue", "destination_exchange").filter(pk=id).first()
        if row is None:
            raise NotFound(f"binding {id} does not exist")
        row.delete()
