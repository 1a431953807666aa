"""Exchange services: declare and delete exchanges, publish messages through them.

They do ORM work only for topology: saving or deleting a row reaches the
running router after commit (storage/sync.py), so an answer means the
change is live. Publishing goes to the router directly. Everything is
validated before anything is written (docs/protocol.md, "Errors": nothing is
half-applied). Views and the legacy calls call these; the admin saves rows
itself and reaches the router by the same signals. No HTTP here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from broker.engine.errors import BrokerError, Forbidden, NotFound, PreconditionFailed
from broker.engine.exchanges import alternate_exchange, check_delayed_name, parse_exchange_type, routing_kind_of
from broker.engine.jsoncodec import canonical
from broker.engine.names import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS, RESERVED_PREFIX
from broker.engine.rules import alternate_exchange_field, bool_field, check_name, object_field
from broker.protocol.publish import PublishRequest, prepare_publish
from broker.router.calls import publish
from broker.transport.authorization import Permissions
from common.declare import lock_or_create
from exchanges.models import Exchange


@dataclass(frozen=True, slots=True)
class ExchangeDeclared:
    exchange: Exchange
    created: bool


@dataclass(frozen=True, slots=True)
class MessagePublished:
    message_id: str
    routed: int


def exchange_declare(
    *,
    name: str,
    type: str,
    durable: bool = True,
    auto_delete: bool = False,
    arguments: Mapping[str, Any] | None = None,
    permissions: Permissions | None = None,
) -> ExchangeDeclared:
    """Create an exchange, or find an identical one (docs/protocol.md, POST /api/exchanges/).

    `permissions` (the caller's; None for the project's own code) are checked before anything
    is written: configure on the exchange, and for an alternate exchange what RabbitMQ asks."""
    check_name("exchange", name)
    if permissions is not None:
        permissions.require("configure", "exchange", name)
    kind = parse_exchange_type(type)
    wanted: dict[str, Any] = {
        "type": kind.value,
        "durable": bool_field("durable", durable),
        "auto_delete": bool_field("auto_delete", auto_delete),
        "arguments": object_field("arguments", arguments),
    }
    alternate = _alternate(name, wanted["arguments"])  # `invalid` before anything is stored
    if permissions is not None:
        require_exchange_rights(permissions, name=name, alternate=alternate)
    routing_kind_of(kind, wanted["arguments"])  # a delayed exchange's x-delayed-type
    check_delayed_name(kind, name)
    with transaction.atomic():
        existing, created = lock_or_create(Exchange, name=name, values=wanted)
        if created:
            return ExchangeDeclared(existing, True)
        if not _same_exchange(existing, wanted):
            raise PreconditionFailed(
                f"exchange {name!r} exists with other properties "
                f"(type {existing.type}, durable {existing.durable}, auto_delete {existing.auto_delete})"
            )
        return ExchangeDeclared(existing, False)


def _alternate(name: str, arguments: Mapping[str, Any]) -> str | None:
    """The alternate exchange `arguments` name, which must be an exchange's name. An exchange
    stored by an earlier version with another one is declared again as it is, as its clients
    do at start-up (its alternate, named so, was never reached)."""
    try:
        return alternate_exchange_field(arguments)
    except BrokerError:
        stored = Exchange.objects.filter(name=name).values_list("arguments", flat=True).first()
        if stored is None or canonical(stored) != canonical(arguments):
            raise
        return alternate_exchange(arguments)


def require_exchange_rights(permissions: Permissions, *, name: str, alternate: str | None = None) -> None:
    """Raise `forbidden` unless `permissions` may declare, change or delete exchange `name`
    (with `alternate`, its alternate exchange, if it has one): the API's rule, and the admin's."""
    permissions.require("configure", "exchange", name)
    if alternate is not None:
        # As RabbitMQ: the exchange publishes what it cannot route there.
        permissions.require("read", "exchange", name)
        permissions.require("write", "exchange", alternate)


def _same_exchange(row: Exchange, wanted: Mapping[str, Any]) -> bool:
    return (
        row.type == wanted["type"]
        and row.durable == wanted["durable"]
        and row.auto_delete == wanted["auto_delete"]
        # As JSON text: Python finds 1 == True, JSON does not.
        and canonical(row.arguments or {}) == canonical(wanted["arguments"])
    )


def exchange_delete(*, name: str) -> None:
    """Delete an exchange and its bindings; the broker's own (`amq.*`, default) stay."""
    if name in (DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS):
        raise Forbidden("the default exchange cannot be deleted")
    if name.startswith(RESERVED_PREFIX):
        raise Forbidden(f"exchange {name!r} belongs to the broker and cannot be deleted")
    with transaction.atomic():
        deleted, _ = Exchange.objects.filter(name=name).delete()
    if not deleted:
        raise NotFound(f"exchange {name!r} does not exist")


def message_publish(
    *, data: object, exchange: str | None = None
) -> MessagePublished:
    """Publish `data`'s message fields; answers once every durable copy is committed.

    `exchange` (the URL's name; `amq.default` is the default exchange) overrides
    the `exchange` field. Validated before the router is asked: a refused
    publish reaches no queue.
    """
    request = _publish_request(data, exchange)
    message_id, routed = publish(request)
    return MessagePublished(message_id, routed)


def _publish_request(data: Any, exchange: str | None) -> PublishRequest:
    if not isinstance(data, Mapping):
        raise BrokerError("the request body must be a JSON object")
    return prepare_publish(data, max_bytes=settings.MAX_MESSAGE_BYTES, exchange=exchange)
