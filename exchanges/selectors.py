"""Read-only queries about exchanges for the API.

The default exchange (`""` on the wire, `amq.default` in URLs and lists) is no
row: every queue is bound to it by its own name, so it is shown as a direct,
durable exchange without bindings (docs/protocol.md, "Names").
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from broker.engine.errors import NotFound
from broker.engine.names import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS
from common.paging import Page, PageRequest, page_of
from exchanges.models import Exchange, ExchangeType


def default_exchange() -> Exchange:
    """An unsaved row standing for the default exchange; never saved."""
    return Exchange(
        name=DEFAULT_EXCHANGE_ALIAS, type=ExchangeType.DIRECT, durable=True, auto_delete=False, arguments={}
    )


def exchange_list() -> list[Exchange]:
    rows = list(Exchange.objects.order_by("name"))
    return sorted([default_exchange(), *rows], key=lambda row: row.name)


def exchange_page(request: PageRequest) -> Page[Exchange]:
    """One page of `exchange_list()`: only its own exchanges are read in full."""
    stored = list(Exchange.objects.values_list("name", flat=True))
    names = page_of(request, sorted([DEFAULT_EXCHANGE_ALIAS, *stored]))
    rows = {row.name: row for row in Exchange.objects.filter(name__in=names.items)}
    rows[DEFAULT_EXCHANGE_ALIAS] = default_exchange()
    # An exchange deleted between the two reads is left out of its page.
    items = [rows[name] for name in names.items if name in rows]
    return Page(request, items, names.filtered_count, names.total_count)


def exchange_detail(*, name: str) -> Exchange:
    if name in (DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS):
        return default_exchange()
    row = Exchange.objects.filter(name=name).first()
    if row is None:
        raise NotFound(f"exchange {name!r} does not exist")
    return row


def exchange_bindings(*, exchange: Exchange) -> QuerySet[Any]:
    """The exchange's bindings (the bindings app's rows, by their relation to it), in creation order."""
    if exchange._state.adding:  # the default exchange, never saved: its bindings are implicit
        return exchange.__class__.objects.none()
    return exchange.bindings.select_related("exchange", "queue", "destination_exchange").order_by("id")
