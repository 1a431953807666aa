"""Declaring a named row once, whoever else declares it at the same moment.

Exchanges and queues are declared the same way (docs/protocol.md: 201 created,
200 identical, 409 different): lock the existing row, or create it in a
savepoint so that a concurrent creator's win reads as "it exists".
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.db import IntegrityError, models, transaction

Row = TypeVar("Row", bound=models.Model)


def lock_or_create(model: type[Row], *, name: str, values: dict[str, Any]) -> tuple[Row, bool]:
    """(the row, created?); call inside the caller's transaction.atomic() block."""
    existing = model._default_manager.select_for_update().filter(name=name).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():  # a savepoint: a concurrent create loses the race cleanly
            return model._default_manager.create(name=name, **values), True
    except IntegrityError:
        return model._default_manager.select_for_update().get(name=name), False
