"""Model change streams (pubsub/streams.py) and what their messages cannot be: a save is
never failed by its stream after it committed, and a change that rolls back with its
refused message is the one not streamed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.utils import timezone

from broker.engine.errors import TooLarge
from exchanges.models import Exchange
from pubsub import databases, stream, streamable
from pubsub.models import ChangeStream, HandlerStatus, OutboxRow
from pubsub.recording import Published
from pubsub.streams import StreamSpec, _body, forget_admin_streams
from queues.models import Queue

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def audit() -> Iterator[None]:
    forget_admin_streams()
    Exchange.objects.create(name="audit", type="topic")
    yield
    forget_admin_streams()


@pytest.fixture
def queues() -> Iterator[None]:
    spec = stream(Queue, exchange="audit", fields=["name", "arguments"])
    yield
    spec.close()


class _Alias:
    def __init__(self, name: str) -> None:
        self.settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": name, "HOST": "", "PORT": ""}


@pytest.fixture
def other_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """An alias `other` of another database, as the publishing module sees the aliases."""
    monkeypatch.setattr(databases, "connections", {"default": _Alias("broker.sqlite3"), "other": _Alias("other.sqlite3")})


@pytest.mark.usefixtures("queues", "other_database")
def test_a_change_saved_to_another_database_is_not_streamed_and_said_once(
    published: list[Published], caplog: pytest.LogCaptureFixture
) -> None:
    """The save went through and its signal raised "'other' is another database than the
    broker's": the outbox cannot join that database's transaction."""
    for name in ("a", "b"):
        post_save.send(Queue, instance=Queue(id=1, name=name), created=True, raw=False, using="other")
    assert published == []
    said = [r for r in caplog.records if r.name == "pubsub.streams" and "'other'" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING]  # once per model and database


@pytest.mark.usefixtures("other_database")
def test_a_stream_of_a_model_the_router_writes_to_another_database_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Router:
        @staticmethod
        def db_for_write(model: type[Any]) -> str:
            return "other" if model is Queue else "default"

    monkeypatch.setattr(streamable, "router", Router)
    with pytest.raises(ValueError, match="queues.Queue is written to database 'other'"):
        stream(Queue, exchange="audit")
    with pytest.raises(Exception, match="another database than the broker's"):
        ChangeStream(content_type_id=_content_type_id(Queue), exchange="audit").clean()
    stream(HandlerStatus, exchange="audit").close()  # written to the broker's


def _content_type_id(model: type[Any]) -> int:
    from django.contrib.contenttypes.models import ContentType

    return ContentType.objects.get_for_model(model).pk


def test_a_number_that_is_not_finite_is_published_as_null(published: list[Published]) -> None:
    """JSON has no infinity nor NaN: the save raised "body: a number is out of range"."""
    spec = stream(HandlerStatus, exchange="audit", fields=["handled_rate"])
    try:
        now = timezone.now()
        HandlerStatus.objects.create(process="p", hostname="h", pid=1, handler="x", queue="q", concurrency=1,
                                     handled_rate=float("inf"), started_at=now, seen_at=now)
    finally:
        spec.close()
    assert [m.body["fields"] for m in published] == [{"handled_rate": None}]
    # In a JSON field too (PostgreSQL's takes them; SQLite's refuses them).
    queue = Queue(id=1, arguments={"x": float("nan"), "y": [float("-inf"), 1.5]})
    body = _body("queues.queue", queue, "created", StreamSpec("audit", ("arguments",)))
    assert body["fields"] == {"arguments": {"x": None, "y": [None, 1.5]}}


def too_large() -> dict[str, str]:
    return {"x": "a" * settings.MAX_MESSAGE_BYTES}


@pytest.mark.usefixtures("queues")
def test_a_change_whose_message_is_refused_inside_a_transaction_rolls_back_with_the_error() -> None:
    """Exactly the committed changes are streamed: the caller's transaction is told."""
    with pytest.raises(TooLarge), transaction.atomic():
        Queue.objects.create(name="big", arguments=too_large())
    assert not Queue.objects.filter(name="big").exists() and not OutboxRow.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("queues")
def test_a_change_committed_in_autocommit_whose_message_is_refused_is_logged_not_raised(
    published: list[Published], caplog: pytest.LogCaptureFixture
) -> None:
    """Django commits a save in autocommit before its signal: raising then said the save failed."""
    queue = Queue.objects.create(name="big", arguments=too_large())
    assert Queue.objects.filter(name="big").exists() and published == []
    (said,) = [r for r in caplog.records if r.name == "pubsub.streams"]
    assert said.levelno == logging.ERROR and f"queues.Queue pk={queue.pk}" in said.getMessage()
    assert said.exc_info is not None and said.exc_info[0] is TooLarge
    # A delete is in a transaction of Django's own: refused, it is undone.
    with pytest.raises(TooLarge):
        queue.delete()
    assert Queue.objects.filter(name="big").exists()
