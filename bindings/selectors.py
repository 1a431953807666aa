"""Read-only queries about bindings for the API."""

from __future__ import annotations

from django.db.models import QuerySet

from bindings.models import Binding
from broker.engine.errors import NotFound
from broker.engine.rules import is_name


def binding_list(*, exchange: str | None = None, queue: str | None = None) -> QuerySet[Binding]:
    """Bindings in creation order, optionally those of one exchange and/or one queue (by name)."""
    rows = Binding.objects.select_related("exchange", "queue").order_by("id")
    for field, name in (("exchange__name", exchange), ("queue__name", queue)):
        if name is None:
            continue
        # What is no name has no bindings; nor is it sent to the database, which may
        # refuse it (PostgreSQL: a NUL character).
        rows = rows.filter(**{field: name}) if is_name(name) else rows.none()
    return rows


def binding_detail(*, id: int) -> Binding:
    row = Binding.objects.select_related("exchange", "queue").filter(pk=id).first()
    if row is None:
        raise NotFound(f"binding {id} does not exist")
    return row
