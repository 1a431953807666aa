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

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from django.apps import apps as django_apps
from django.core.signals import request_started
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, models, transaction
from django.db.backends.signals import connection_created
from django.db.models.signals import class_prepared, post_delete, post_save

from broker.engine.errors import NotFound
from exchanges.models import Exchange

from .databases import is_the_broker_s_database
from .publishing import OutboxMessage, publish_many
from .streamable import (
    NEVER_STREAMED,
    check_no_secret,
    check_streamable,
    check_written_to_the_broker_s_database,
    secret_fields,
)
from .streamvalues import as_json, as_stored

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
# The streamed models by label, and those whose deletes are listened to (`_listen_to_deletes`),
# with the models heard for each: itself and its proxies.
_models: dict[str, type[models.Model]] = {}
_listened: dict[str, list[type[models.Model]]] = {}
_admin_streams: tuple[float, dict[str, list[StreamSpec]]] = (0.0, {})
# The (model label, database) pairs whose changes were not streamed, said once each.
_warned: set[tuple[str, str]] = set()


def stream(
    model: type[models.Model],
    *,
    exchange: str,
    fields: Sequence[str] | None = None,
    serializer: Any = None,
) -> StreamSpec:
    """Publish `model`'s creates, updates and deletes to `exchange` from now on, until
    the returned stream's `close()`. ValueError for a field the model lacks, for one of its
    secrets (`secret_fields`), for a model that is never streamed or that the database
    router writes to another database than the broker's, and for a second stream of the
    model to the same exchange with other fields or serializer. The same declaration again
    returns the stream already declared: each change is published once."""
    if fields is not None and serializer is not None:
        raise ValueError("give fields or a serializer, not both")
    names = {field.name for field in model._meta.concrete_fields}
    unknown = sorted(set(fields or ()) - names)
    if unknown:
        raise ValueError(f"{model._meta.label} has no field {unknown[0]!r}")
    check_streamable(model)
    check_written_to_the_broker_s_database(model)
    check_no_secret(model, fields or ())
    if serializer is not None:
        check_no_secret(model, _serializer_sources(serializer))
    label = model._meta.label_lower
    chosen = None if fields is None else tuple(fields)
    for declared in _code_streams.get(label, []):
        if declared.exchange != exchange:
            continue
        if declared.serializer is serializer and _same_fields(declared.fields, chosen):
            return declared  # declared twice (an app's ready() run again): published once
        # Two messages of one change, with the same routing key, to one exchange: its
        # consumers could not tell them from two changes.
        raise ValueError(
            f"{model._meta.label} already has a stream to exchange {exchange!r} with other fields"
            " or serializer: close it first"
        )
    spec = StreamSpec(exchange, chosen, serializer, label)
    _code_streams.setdefault(label, []).append(spec)
    _models[label] = model
    _listen_to_deletes()
    return spec


def _same_fields(declared: tuple[str, ...] | None, chosen: tuple[str, ...] | None) -> bool:
    """The same fields, in any order: a message lists them in the model's order."""
    if declared is None or chosen is None:
        return declared is chosen
    return set(declared) == set(chosen)


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
        for label in _labels(model or type(obj)):
            messages.extend(_messages(label, obj, event))
    return _publish(messages, using)


def _labels(model: type[models.Model]) -> list[str]:
    """The models whose streams a change of `model` reaches: itself, and its parents (a
    proxy's model among them) as `_saved` does."""
    return [parent._meta.label_lower for parent in (model, *model._meta.get_parent_list())]


def _proxied(model: type[models.Model]) -> list[type[models.Model]]:
    """`model`, and the models it is a proxy of: those whose streams its delete reaches.
    (Django sends post_delete for a multi-table parent's row itself.)"""
    chain = [model]
    while chain[-1]._meta.proxy and chain[-1]._meta.proxy_for_model is not None:
        chain.append(chain[-1]._meta.proxy_for_model)
    return chain


def _publish_change(messages: list[OutboxMessage], obj: models.Model, using: str) -> None:
    """Publish the messages of a change a signal told, which must not make a save fail
    after it committed. In a transaction (a delete is always in one of Django's) an error
    is raised, and the change rolls back with it: exactly the committed changes are
    streamed. In autocommit the change has committed already: the error is logged."""
    if not messages:
        return
    if not is_the_broker_s_database(using):
        _warn_other_database(type(obj), using)
        return
    if connections[using].in_atomic_block:
        _publish(messages, using)
        return
    try:
        _publish(messages, using)
    except Exception:
        log.exception(
            "a change of %s pk=%r committed and its stream's messages were not published",
            type(obj)._meta.label, obj.pk,
        )


def _warn_other_database(model: type[models.Model], using: str) -> None:
    """Said once per model and database: the outbox is written in the change's own
    transaction, which on another database cannot hold it."""
    key = (model._meta.label_lower, using)
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "%s is streamed, and its changes saved to database %r, another database than the broker's,"
            " are not: the outbox cannot join their transaction", model._meta.label, using,
        )


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
    for label in streamed - set(_listened):
        _listen(label)
    if time.monotonic() - loaded_at <= ADMIN_STREAMS_SECONDS:
        for label in set(_listened) - streamed:
            for sender in _listened.pop(label):
                if not any(sender in heard for heard in _listened.values()):
                    post_delete.disconnect(sender=sender, dispatch_uid=_delete_uid(sender))


def _listen(label: str) -> None:
    """Hear the deletes of the model and of its proxies: Django sends a proxy's with the
    proxy as sender, and deletes fast the rows of a model nobody hears."""
    if label not in _listened:
        model = _models[label]
        _listened[label] = []
        # The registry as it is, ready or not (a stream declared while models load).
        for sender in [m for app_models in django_apps.all_models.values() for m in app_models.values()]:
            if model in _proxied(sender):
                _listen_to(label, sender)
        if model not in _listened[label]:  # not in the registry (yet)
            _listen_to(label, model)


def _listen_to(label: str, sender: type[models.Model]) -> None:
    # One receiver per sender, however many streams hear it (a proxy's and its model's).
    post_delete.connect(_deleted, sender=sender, dispatch_uid=_delete_uid(sender))
    _listened[label].append(sender)


def _class_prepared(sender: type[models.Model], **kwargs: Any) -> None:
    """A proxy defined after its model's stream was declared: its deletes are heard too."""
    if sender._meta.proxy:
        for label, heard in list(_listened.items()):
            if _models[label] in _proxied(sender) and sender not in heard:
                _listen_to(label, sender)


def _delete_uid(sender: type[models.Model]) -> str:
    return f"pubsub.streams.deleted.{sender._meta.label_lower}"


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
        fields = {f.attname: as_stored(f, getattr(obj, f.attname)) for f in chosen}
    encoded = as_json({"pk": as_stored(obj._meta.pk, obj.pk), "fields": fields})
    return {"model": label, "pk": encoded["pk"], "event": event, "fields": encoded["fields"]}


def _saved(sender: type[models.Model], instance: models.Model, created: bool, raw: bool, using: str, **kwargs: Any) -> None:
    if raw:  # loading fixtures
        return
    if not _is_the_model(sender):
        return  # a migration's historical model: not the project's, and its deletes are not heard
    event: Event = "created" if created else "updated"
    # A child's save (multi-table inheritance) is its parents' too, as its delete is:
    # Django sends post_delete for each, and post_save for the child only.
    messages = [message for label in _labels(sender) for message in _messages(label, instance, event)]
    _publish_change(messages, instance, using)


def _is_the_model(sender: type[models.Model]) -> bool:
    try:
        return django_apps.get_model(sender._meta.label_lower) is sender
    except LookupError:
        return False


def _deleted(sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any) -> None:
    messages = [
        message for model in _proxied(sender) for message in _messages(model._meta.label_lower, instance, "deleted")
    ]
    _publish_change(messages, instance, using)


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
    class_prepared.connect(_class_prepared, dispatch_uid="pubsub.streams.class_prepared")
    connection_created.connect(_connected, dispatch_uid="pubsub.streams.connected")
    request_started.connect(_request_started, dispatch_uid="pubsub.streams.request_started")
