"""Model change streams: a model's creates, updates and deletes, published through the
outbox in the same transaction as the change (docs/outbox.md, "Model change streams").

Declared in code, usually in an app's `ready()`:

    stream(Order, exchange="orders", fields=["status", "total"])

or in the admin (`ChangeStream` rows). Each change publishes to the exchange with
routing key `<app_label>.<model>.<created|updated|deleted>` and the body
`{"model": "shop.order", "pk": ..., "event": "created", "fields": {...}}` (or what a
DRF serializer makes of the object). Django's signals carry them, so what the signals
do not see (`bulk_create`, `QuerySet.update`, raw SQL) is published with
`publish_changes` by the code that made the change.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, models, transaction
from django.db.models.signals import post_delete, post_save

from broker.engine.errors import NotFound
from exchanges.models import Exchange

from .publishing import OutboxMessage, publish_many

log = logging.getLogger("pubsub.streams")

Event = Literal["created", "updated", "deleted"]
# How long a process keeps the admin's streams before it reads them again.
ADMIN_STREAMS_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True, eq=False)
class StreamSpec:
    exchange: str
    fields: tuple[str, ...] | None = None  # None: every concrete field
    serializer: Any = None  # a DRF serializer class, instead of `fields`
    label: str = ""  # the model's, as `app_label.model`

    def close(self) -> None:
        """Stop this stream (a code-declared one)."""
        specs = _code_streams.get(self.label, [])
        if self in specs:
            specs.remove(self)


_code_streams: dict[str, list[StreamSpec]] = {}
# The broker's own bookkeeping, and Django's, whose saves are no one's events.
_NEVER_STREAMED: Final = frozenset(
    {"pubsub.outboxrow", "pubsub.changestream", "sessions.session", "admin.logentry", "contenttypes.contenttype"}
)
_admin_streams: tuple[float, dict[str, list[StreamSpec]]] = (0.0, {})


def stream(
    model: type[models.Model],
    *,
    exchange: str,
    fields: Sequence[str] | None = None,
    serializer: Any = None,
) -> StreamSpec:
    """Publish `model`'s creates, updates and deletes to `exchange` from now on, until
    the returned stream's `close()`."""
    if fields is not None and serializer is not None:
        raise ValueError("give fields or a serializer, not both")
    names = {field.name for field in model._meta.concrete_fields}
    unknown = sorted(set(fields or ()) - names)
    if unknown:
        raise ValueError(f"{model._meta.label} has no field {unknown[0]!r}")
    label = model._meta.label_lower
    spec = StreamSpec(exchange, None if fields is None else tuple(fields), serializer, label)
    _code_streams.setdefault(label, []).append(spec)
    return spec


def publish_changes(
    objects: Iterable[models.Model], event: Event, *, model: type[models.Model] | None = None, using: str = "default"
) -> list[str]:
    """Publish the change events of objects changed where signals do not see it
    (`bulk_create`, `QuerySet.update`: pass the updated objects); their message ids."""
    messages: list[OutboxMessage] = []
    for obj in objects:
        label = (model or type(obj))._meta.label_lower
        messages.extend(_messages(label, obj, event))
    return _publish(messages, using)


def _publish(messages: list[OutboxMessage], using: str) -> list[str]:
    """Publish a change's messages. A stream whose exchange was deleted is skipped, and
    logged: a deleted exchange must not make every save of its model fail."""
    if not messages:
        return []
    try:
        return publish_many(messages, using=using)
    except NotFound:
        existing = set(Exchange.objects.using(using).filter(name__in={m.exchange for m in messages})
                       .values_list("name", flat=True))
        for gone in sorted({m.exchange for m in messages} - existing):
            log.error("a model change stream publishes to exchange %r, which does not exist: skipped", gone)
        kept = [m for m in messages if m.exchange in existing]
        return publish_many(kept, using=using) if kept else []


def forget_admin_streams() -> None:
    """The admin's streams changed: read them again at the next change."""
    global _admin_streams
    _admin_streams = (0.0, {})


def _streams_for(label: str) -> list[StreamSpec]:
    global _admin_streams
    if label in _NEVER_STREAMED:
        return []
    loaded_at, admin = _admin_streams
    if time.monotonic() - loaded_at > ADMIN_STREAMS_SECONDS:
        admin = _load_admin_streams()
        _admin_streams = (time.monotonic(), admin)
    return _code_streams.get(label, []) + admin.get(label, [])


def _load_admin_streams() -> dict[str, list[StreamSpec]]:
    from .models import ChangeStream

    found: dict[str, list[StreamSpec]] = {}
    try:
        # In a savepoint: while migrations run the table may not exist yet, and on
        # PostgreSQL a failed query would spoil the caller's transaction.
        with transaction.atomic():
            rows = list(ChangeStream.objects.filter(enabled=True).select_related("content_type"))
    except DatabaseError:
        return found
    for row in rows:
        label = f"{row.content_type.app_label}.{row.content_type.model}"
        fields = tuple(name.strip() for name in row.fields.split(",") if name.strip()) or None
        found.setdefault(label, []).append(StreamSpec(row.exchange, fields, label=label))
    return found


def _messages(label: str, obj: models.Model, event: Event) -> list[OutboxMessage]:
    specs = _streams_for(label)
    if not specs:
        return []
    routing_key = f"{label}.{event}"
    return [OutboxMessage(spec.exchange, _body(label, obj, event, spec), routing_key) for spec in specs]


def _body(label: str, obj: models.Model, event: Event, spec: StreamSpec) -> dict[str, Any]:
    if spec.serializer is not None:
        fields = spec.serializer(obj).data
    else:
        concrete = obj._meta.concrete_fields
        chosen = [f for f in concrete if spec.fields is None or f.name in spec.fields]
        fields = {f.attname: getattr(obj, f.attname) for f in chosen}
    # Dates, decimals and UUIDs as Django's JSON encoder writes them.
    encoded = json.loads(json.dumps({"pk": obj.pk, "fields": fields}, cls=DjangoJSONEncoder))
    return {"model": label, "pk": encoded["pk"], "event": event, "fields": encoded["fields"]}


def _saved(sender: type[models.Model], instance: models.Model, created: bool, raw: bool, using: str, **kwargs: Any) -> None:
    if raw:  # loading fixtures
        return
    _publish(_messages(sender._meta.label_lower, instance, "created" if created else "updated"), using)


def _deleted(sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any) -> None:
    _publish(_messages(sender._meta.label_lower, instance, "deleted"), using)


def connect() -> None:
    """Listen to every model's saves and deletes (AppConfig.ready); a change of a model
    without a stream costs a dictionary lookup."""
    post_save.connect(_saved, dispatch_uid="pubsub.streams.saved")
    post_delete.connect(_deleted, dispatch_uid="pubsub.streams.deleted")
