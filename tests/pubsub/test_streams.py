"""Model change streams (pubsub/streams.py) and the test kit that records them
(pubsub/testing.py): changes publish in their transaction, rollbacks publish nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from exchanges.models import Exchange
from pubsub import publish, publish_changes, stream
from pubsub.models import ChangeStream, OutboxRow
from pubsub.recording import Published
from pubsub.streams import forget_admin_streams
from pubsub.testing import capture_published
from queues.models import Queue

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_admin_streams() -> Iterator[None]:
    """The admin's streams are kept a few seconds per process: not from one test to the next."""
    forget_admin_streams()
    yield
    forget_admin_streams()


@pytest.fixture
def audit() -> Iterator[None]:
    Exchange.objects.create(name="audit", type="topic")
    spec = stream(Queue, exchange="audit", fields=["name", "durable"])
    yield
    spec.close()


def events(published: list[Published]) -> list[tuple[str, str, Any]]:
    return [(m.exchange, m.routing_key, m.body) for m in published]


@pytest.mark.usefixtures("audit")
def test_a_model_s_creates_updates_and_deletes_are_published_with_its_fields(published: list[Published]) -> None:
    with transaction.atomic():
        queue = Queue.objects.create(name="jobs")
        queue.durable = False
        queue.save()
    pk = queue.pk
    queue.delete()

    assert events(published) == [
        ("audit", "queues.queue.created", {"model": "queues.queue", "pk": pk, "event": "created",
                                           "fields": {"name": "jobs", "durable": True}}),
        ("audit", "queues.queue.updated", {"model": "queues.queue", "pk": pk, "event": "updated",
                                           "fields": {"name": "jobs", "durable": False}}),
        ("audit", "queues.queue.deleted", {"model": "queues.queue", "pk": pk, "event": "deleted",
                                           "fields": {"name": "jobs", "durable": False}}),
    ]
    assert OutboxRow.objects.count() == 3  # in the outbox, for the router


@pytest.mark.usefixtures("audit")
def test_a_rolled_back_change_publishes_nothing() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        Queue.objects.create(name="gone")
        raise RuntimeError
    assert OutboxRow.objects.count() == 0


@pytest.mark.usefixtures("audit")
def test_what_signals_do_not_see_is_published_with_publish_changes(published: list[Published]) -> None:
    with transaction.atomic():
        made = Queue.objects.bulk_create([Queue(name="a"), Queue(name="b")])
        assert published == []  # bulk_create sends no signal
        publish_changes(made, "created")
    assert [m.body["fields"]["name"] for m in published] == ["a", "b"]


def test_a_stream_declared_in_the_admin_publishes_too() -> None:
    Exchange.objects.create(name="changes", type="fanout")
    ChangeStream.objects.create(content_type=ContentType.objects.get_for_model(Exchange), exchange="changes", fields="name")
    with capture_published() as published:
        Exchange.objects.create(name="orders", type="topic")
    assert [(m.routing_key, m.body["fields"]) for m in published] == [("exchanges.exchange.created", {"name": "orders"})]


def test_the_test_kit_records_publishes_in_order_without_a_router() -> None:
    with capture_published() as outer:
        publish("", 1, routing_key="a")
        with capture_published() as inner:
            publish("", {"two": 2}, routing_key="b", headers={"h": 1}, persistent=False, message_id="m-2")
    assert [(m.routing_key, m.body) for m in outer] == [("a", 1), ("b", {"two": 2})]
    assert inner == [Published("", "b", {"two": 2}, {"h": 1}, False, "m-2")]
    publish("", 3, routing_key="c")
    assert len(outer) == 2  # recording ends with the block


def test_a_stream_whose_exchange_was_deleted_is_skipped_and_the_save_goes_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    Exchange.objects.create(name="changes", type="fanout")
    ChangeStream.objects.create(content_type=ContentType.objects.get_for_model(Queue), exchange="changes")
    Exchange.objects.filter(name="changes").delete()
    with capture_published() as published:
        Queue.objects.create(name="still-saved")
    assert Queue.objects.filter(name="still-saved").exists() and published == []
    assert "exchange 'changes', which does not exist" in caplog.text
