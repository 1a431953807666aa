"""MAX_QUEUES and MAX_BINDINGS for the stored topology (README, "Limits").

The services call `ensure_room` inside their transaction, before they create a
row, so a refused declaration writes nothing. The router applies the same
limits to the private queues it makes for exchange subscriptions
(engine/broker.py, `max_queues`). The admin's forms call it too (Queue.clean,
Binding.clean), so a row the API would refuse is not added there either.

Imports settings, the ORM's model type and the engine's errors.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from broker.engine.errors import LimitExceeded


def ensure_room(model: type[models.Model], *, setting: str, kind: str) -> None:
    """Raise LimitExceeded when `model` already holds the number of rows `setting` allows (0: no limit)."""
    limit = int(getattr(settings, setting))
    if not limit:
        return
    held = model._default_manager.count()
    if held >= limit:
        raise LimitExceeded(f"the broker holds {held} {kind}, its limit ({setting}={limit}): delete some first")
