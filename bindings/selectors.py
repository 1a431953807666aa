"""Read-only queries about bindings for the API."""

from __future__ import annotations

from django.db.models import QuerySet

from bindings.models import Binding
from broker_project.engine.errors import NotFound


def binding_list(*, exchange: str | None = None, queue: str | None = None) -> QuerySet[Binding]:
    """Bindings in creation order, optionally those of one exchange and/or one queue (by name)."""
    rows = Binding.objects.select_related("exchange", "queue").order_by("id")
    if exchange is not None:
        rows = rows.filter(exchange__name=exchange)
    if queue is not None:
        rows = rows.filter(queue__name=queue)
    return rows


def binding_detail(*, id: int) -> Binding:
    row = Binding.objects.select_related("exchange", "queue").filter(pk=id).first()
    if row is None:
        raise NotFound(f"binding {id} does not exist")
    return row
