"""Read-only queries about bindings for the API."""

from __future__ import annotations

from django.db.models import QuerySet

from bindings.models import Binding
from broker.engine.errors import NotFound
from broker.engine.rules import is_name
from common.paging import Page, PageRequest


def binding_list(
    *, exchange: str | None = None, queue: str | None = None, destination_exchange: str | None = None
) -> QuerySet[Binding]:
    """Bindings in creation order, optionally those from one exchange, to one queue and/or
    to one exchange (by name)."""
    rows = Binding.objects.select_related("exchange", "queue", "destination_exchange").order_by("id")
    filters = (("exchange__name", exchange), ("queue__name", queue), ("destination_exchange__name", destination_exchange))
    for field, name in filters:
        if name is None:
            continue
        # What is no name has no bindings; nor is it sent to the database, which may
        # refuse it (PostgreSQL: a NUL character).
        rows = rows.filter(**{field: name}) if is_name(name) else rows.none()
    return rows


def binding_page(request: PageRequest, rows: QuerySet[Binding]) -> Page[Binding]:
    """One page of `binding_list()`'s rows, filtered by exchange or destination as asked
    (bindings have no name to filter by): `total_count` counts every binding."""
    return Page(
        request, list(rows[request.offset:request.offset + request.page_size]), rows.count(), Binding.objects.count()
    )


def binding_detail(*, id: int) -> Binding:
    row = Binding.objects.select_related("exchange", "queue", "destination_exchange").filter(pk=id).first()
    if row is None:
        raise NotFound(f"binding {id} does not exist")
    return row
