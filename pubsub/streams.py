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

import base64
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from django.apps import apps as django_apps
from django.core.serializers.json import DjangoJSONEncoder
from django.core.signals import request_started
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, models, transaction
from django.db.backends.signals import connection_created
from django.db.models.fields.files import FieldFile
from django.db.models.signals import post_delete, post_save

from broker.engine.errors import NotFound
from exchanges.models import Exchange

from .publishing import OutboxMessage, publish_many
from .streamable import NEVER_STREAMED, check_no_secret, check_streamable, secret_fields

log = logging.getLogger("pubsub.streams")

Event = Literal["created", "updated", "deleted"]
# How long a process keeps the admin's streams before it reads them again, and how soon
# it tries again when reading them failed (keeping those it knew meanwhile).
ADMIN_STREAMS_SECONDS: Final = 5.0
ADMIN_STREAMS_RETRY_SECONDS: Final = 1.0


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
        _listen_to_deletes()  # no query: once the admin's are known, unheard if none is left


_code_streams: dict[str, list[StreamSpec]] = {}
# The streamed models by label, and those whose deletes are listened to (`_listen_to_deletes`).
_models: dict[str, type[models.Model]] = {}
_listened: set[str] = set()
_admin_streams: tuple[float, dict[str, list[StreamSpec]]] = (0.0, {})


def stream(
    model: type[models.Model],
    *,
    exchange: str,
    fields: Sequence[str] | None = None,
    serializer: Any = None,
) -> StreamSpec:
    """Publish `model`'s creates, updates and deletes to `exchange` from now on, until
    the returned stream's `close()`. ValueError for a field the model lacks, for one of its
    secrets (`secret_fields`) and for a model that is never streamed."""
    if fields is not None and serializer is not None:
        raise ValueError("give fields or a serializer, not both")
    names = {field.name for field in model._meta.concrete_fields}
    unknown = sorted(set(fields or ()) - names)
    if unknown:
        raise ValueError(f"{model._meta.label} has no field {unknown[0]!r}")
    check_streamable(model)
    check_no_secret(model, fields or ())
    if serializer is not None:
        check_no_secret(model, _serializer_sources(serializer))
    label = model._meta.label_lower
    spec = StreamSpec(exchange, None if fields is None else tuple(fields), serializer, label)
    _code_streams.setdefault(label, []).append(spec)
    _models[label] = model
    _listen_to_deletes()
    return spec


def _serializer_sources(serializer: Any) -> list[str]:
    """The model fields a DRF serializer's own fields read (`source`, else their name)."""
    return [(field.source or name).split(".")[0] for name, field in serializer().fields.items()]


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


def forget_admin_streams(model: type[models.Model] | None = None) -> None:
    """The admin's streams changed (a stream of `model`'s among them): read them again at
    the next change, and hear `model`'s deletes from now on."""
    global _admin_streams
    _admin_streams = (0.0, _admin_streams[1])
    if model is not None and model._meta.label_lower not in NEVER_STREAMED:
        _models[model._meta.label_lower] = model
        _listen(model._meta.label_lower)


def _streams_for(label: str) -> list[StreamSpec]:
    if label in NEVER_STREAMED:
        return []
    return _code_streams.get(label, []) + _current_admin_streams().get(label, [])


def refresh_streams() -> None:
    """Read the admin's streams if this process's copy is older than ADMIN_STREAMS_SECONDS.
    Done by itself at each save, request, new database connection and tick of
    `runhandlers`; a script that only deletes calls it first (docs/outbox.md)."""
    _current_admin_streams()


def _current_admin_streams() -> dict[str, list[StreamSpec]]:
    global _admin_streams
    loaded_at, admin = _admin_streams
    if time.monotonic() - loaded_at > ADMIN_STREAMS_SECONDS:
        read = _load_admin_streams()
        if read is None:  # the database did not answer: those known stay, read again soon
            _admin_streams = (time.monotonic() - ADMIN_STREAMS_SECONDS + ADMIN_STREAMS_RETRY_SECONDS, admin)
            return admin
        admin = read
        _admin_streams = (time.monotonic(), admin)
        _listen_to_deletes()
    return admin


def _listen_to_deletes() -> None:
    """Hear the deletes of the models with a stream, and of no other. Django deletes the
    rows a delete cascades to in one statement, without loading them, only for models
    whose deletes nobody hears (its "fast delete"): a receiver for every model would have
    every cascade in the project load each row it deletes (a queue's millions of stored
    messages among them). While the admin's streams are to be read again, none is dropped."""
    loaded_at, admin = _admin_streams
    streamed = ({label for label, specs in _code_streams.items() if specs} | set(admin)) - NEVER_STREAMED
    for label in streamed - _listened:
        _listen(label)
    if time.monotonic() - loaded_at <= ADMIN_STREAMS_SECONDS:
        for label in _listened - streamed:
            post_delete.disconnect(sender=_models[label], dispatch_uid=_delete_uid(label))
            _listened.discard(label)


def _listen(label: str) -> None:
    if label not in _listened:
        post_delete.connect(_deleted, sender=_models[label], dispatch_uid=_delete_uid(label))
        _listened.add(label)


def _delete_uid(label: str) -> str:
    return f"pubsub.streams.deleted.{label}"


def _load_admin_streams() -> dict[str, list[StreamSpec]] | None:
    """The admin's streams by model label; None when they could not be read."""
    from .models import ChangeStream

    found: dict[str, list[StreamSpec]] = {}
    try:
        streams = ChangeStream.objects.filter(enabled=True).select_related("content_type")
        if connection.in_atomic_block:
            # In a savepoint: while migrations run the table may not exist yet, and on
            # PostgreSQL a failed query would spoil the caller's transaction.
            with transaction.atomic():
                rows = list(streams)
        else:
            # A read alone (a new connection's): no transaction, which on SQLite would
            # begin IMMEDIATE and take the write lock.
            rows = list(streams)
    except (DatabaseError, RuntimeError) as error:
        # The database is away, or no query may run here (a test without database access
        # whose request starts a read: pytest-django's RuntimeError): those known stay.
        log.debug("the admin's change streams were not read: %r", error)
        return None
    except Exception:
        # A request or a save must not fail for this read; a mistake (a model that no
        # longer matches its table, say) is said, at each retry.
        log.warning("the admin's change streams could not be read; those known stay in use", exc_info=True)
        return None
    for row in rows:
        model = row.content_type.model_class()
        if model is None:  # its app is gone
            continue
        label = model._meta.label_lower
        _models[label] = model
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
        deferred = obj.get_deferred_fields()  # not loaded: a deleted row's cannot be read any more
        # Also left out of a stream that names them: one stored before they were refused.
        secret = secret_fields(type(obj))
        chosen = [
            f for f in concrete
            if (spec.fields is None or f.name in spec.fields) and f.attname not in deferred and f.name not in secret
        ]
        fields = {f.attname: getattr(obj, f.attname) for f in chosen}
    # Dates, decimals and UUIDs as Django's JSON encoder writes them; files by their name,
    # bytes in base64.
    encoded = json.loads(json.dumps({"pk": obj.pk, "fields": fields}, cls=_StreamEncoder))
    return {"model": label, "pk": encoded["pk"], "event": event, "fields": encoded["fields"]}


class _StreamEncoder(DjangoJSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, FieldFile):
            return o.name or None
        if isinstance(o, (bytes, memoryview)):
            return base64.b64encode(bytes(o)).decode()
        return super().default(o)


def _saved(sender: type[models.Model], instance: models.Model, created: bool, raw: bool, using: str, **kwargs: Any) -> None:
    if raw:  # loading fixtures
        return
    if not _is_the_model(sender):
        return  # a migration's historical model: not the project's, and its deletes are not heard
    event: Event = "created" if created else "updated"
    # A child's save (multi-table inheritance) is its parents' too, as its delete is:
    # Django sends post_delete for each, and post_save for the child only.
    messages = [
        message for model in (sender, *sender._meta.get_parent_list())
        for message in _messages(model._meta.label_lower, instance, event)
    ]
    _publish(messages, using)


def _is_the_model(sender: type[models.Model]) -> bool:
    try:
        return django_apps.get_model(sender._meta.label_lower) is sender
    except LookupError:
        return False


def _deleted(sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any) -> None:
    _publish(_messages(sender._meta.label_lower, instance, "deleted"), using)


def _connected(connection: Any, **kwargs: Any) -> None:
    """A process's first connection (and any after the admin's streams were last read)
    reads them: a process that only deletes hears the deletes of their models too."""
    if connection.alias == DEFAULT_DB_ALIAS:
        _current_admin_streams()


def _request_started(**kwargs: Any) -> None:
    _current_admin_streams()


def connect() -> None:
    """Listen to every model's saves (AppConfig.ready; a save of a model without a stream
    costs a dictionary lookup), and to the deletes of the models with a stream."""
    post_save.connect(_saved, dispatch_uid="pubsub.streams.saved")
    connection_created.connect(_connected, dispatch_uid="pubsub.streams.connected")
    request_started.connect(_request_started, dispatch_uid="pubsub.streams.request_started")
