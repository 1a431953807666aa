"""What a model change stream (pubsub/streams.py) may publish: no model of the broker's or
Django's bookkeeping, and no secret field. Apart from streams.py so that the admin's rows
(ChangeStream.clean) are checked by the same rules without importing the streams."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models, router

from access.models import ApiToken

from .databases import is_the_broker_s_database

# The broker's own bookkeeping, and Django's, whose saves are no one's events.
NEVER_STREAMED: Final = frozenset(
    {"pubsub.outboxrow", "pubsub.changestream", "sessions.session", "admin.logentry", "contenttypes.contenttype"}
)
# Fields no stream publishes, whatever it names: a stream's messages reach whoever may read
# its exchange, and whoever may add a stream in the admin. A user's password hash can be
# cracked offline; an API token's hash is what the database keeps in the token's place.
_SECRET_FIELDS: Final[tuple[tuple[type[models.Model], frozenset[str]], ...]] = (
    (AbstractBaseUser, frozenset({"password"})),
    (ApiToken, frozenset({"key_hash"})),
)


def secret_fields(model: type[models.Model]) -> frozenset[str]:
    """The names of `model`'s fields that no stream publishes (its subclasses' too)."""
    found: frozenset[str] = frozenset()
    for owner, names in _SECRET_FIELDS:
        if issubclass(model, owner):
            found |= names
    return found


def check_streamable(model: type[models.Model]) -> None:
    """Raise ValueError for a model that is never streamed (NEVER_STREAMED): said when its
    stream is declared, rather than a stream that publishes nothing."""
    if model._meta.label_lower in NEVER_STREAMED:
        raise ValueError(f"{model._meta.label} is the broker's or Django's bookkeeping: it is never streamed")


def check_no_secret(model: type[models.Model], fields: Iterable[str]) -> None:
    """Raise ValueError when `fields` names one of `model`'s secrets: said when the stream is
    declared, rather than a stream that leaves out what it was asked for. A stream of every
    field leaves them out of each message."""
    named = sorted(set(fields) & secret_fields(model))
    if named:
        raise ValueError(f"{model._meta.label}'s field {named[0]!r} is a secret: it is never streamed")


def check_written_to_the_broker_s_database(model: type[models.Model]) -> None:
    """Raise ValueError for a model the database router writes to another database than the
    broker's: its changes could not be published in their transaction, and would not be."""
    using = router.db_for_write(model)
    if not is_the_broker_s_database(using):
        raise ValueError(
            f"{model._meta.label} is written to database {using!r}, another database than the broker's:"
            " its changes cannot be streamed in their transaction"
        )
