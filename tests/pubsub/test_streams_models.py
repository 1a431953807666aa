"""Model change streams (pubsub/streams.py) of proxies and inherited models, declared
twice, and the values their messages carry: as stored, whatever the code assigned."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.db import models
from django.test import override_settings
from django.utils import timezone

from exchanges.models import Exchange
from pubsub import publish_changes, stream
from pubsub.models import HandlerStatus
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


def keys(published: list[Published]) -> list[str]:
    return [m.routing_key for m in published]


class _QueueProxy(Queue):
    class Meta:
        proxy = True
        app_label = "queues"


# -- proxies and inheritance -----------------------------------------------------------------


def test_a_delete_through_a_proxy_reaches_its_model_s_stream(published: list[Published]) -> None:
    """Django sends a proxy's post_delete with the proxy as sender, and deleted its rows
    fast since nobody heard it: its saves were streamed, its deletes never."""
    spec = stream(Queue, exchange="audit", fields=["name"])
    try:
        _QueueProxy.objects.create(name="one").delete()
        Queue.objects.create(name="two")
        _QueueProxy.objects.filter(name="two").delete()

        class _LaterProxy(Queue):  # defined once the stream is declared
            class Meta:
                proxy = True
                app_label = "queues"

        _LaterProxy.objects.create(name="three")
        _LaterProxy.objects.all().delete()
    finally:
        spec.close()
    assert keys(published) == ["queues.queue.created", "queues.queue.deleted"] * 3
    assert [m.body["fields"]["name"] for m in published if m.routing_key.endswith("deleted")] == ["one", "two", "three"]


def test_a_proxy_s_own_stream_and_its_model_s_each_publish_a_delete_once(published: list[Published]) -> None:
    specs = [stream(Queue, exchange="audit", fields=["name"]), stream(_QueueProxy, exchange="audit", fields=["name"])]
    try:
        _QueueProxy.objects.create(name="both").delete()
        Queue.objects.create(name="model-only").delete()
    finally:
        for spec in specs:
            spec.close()
    assert keys(published) == [
        "queues._queueproxy.created", "queues.queue.created", "queues._queueproxy.deleted", "queues.queue.deleted",
        "queues.queue.created", "queues.queue.deleted",
    ]


class _Shop(models.Model):
    """Not tables: `publish_changes` reads only the instances."""

    name = models.CharField(max_length=10)

    class Meta:
        app_label = "pubsub"
        managed = False


class _Bakery(_Shop):
    serves = models.CharField(max_length=10)

    class Meta:
        app_label = "pubsub"
        managed = False


def test_publish_changes_reaches_a_parent_s_stream_and_a_proxy_s_model_s(published: list[Published]) -> None:
    """As a save does: `publish_changes` published to the streams of the objects' class only."""
    specs = [stream(_Shop, exchange="audit", fields=["name"]), stream(Queue, exchange="audit", fields=["name"])]
    try:
        publish_changes([_Bakery(id=3, name="chez", serves="soup")], "created")
        publish_changes([_QueueProxy(id=4, name="q")], "updated")
    finally:
        for spec in specs:
            spec.close()
    assert [(m.routing_key, m.body["fields"]) for m in published] == [
        ("pubsub._shop.created", {"name": "chez"}), ("queues.queue.updated", {"name": "q"}),
    ]


# -- declared twice --------------------------------------------------------------------------


def test_the_same_stream_declared_twice_publishes_each_change_once(published: list[Published]) -> None:
    first = stream(Queue, exchange="audit", fields=["name", "durable"])
    again = stream(Queue, exchange="audit", fields=["durable", "name"])  # an app's ready() run again, say
    try:
        assert again is first
        Queue.objects.create(name="once")
    finally:
        first.close()
    assert keys(published) == ["queues.queue.created"]


def test_another_stream_of_a_model_to_the_same_exchange_is_refused() -> None:
    Exchange.objects.create(name="other", type="topic")
    spec = stream(Queue, exchange="audit", fields=["name"])
    try:
        with pytest.raises(ValueError, match="already has a stream to exchange 'audit'"):
            stream(Queue, exchange="audit")
        stream(Queue, exchange="other").close()  # another exchange: its own stream
    finally:
        spec.close()
    stream(Queue, exchange="audit").close()  # once the first is closed


# -- values as stored ------------------------------------------------------------------------


def test_a_created_message_carries_the_values_as_stored_as_an_updated_one_does(published: list[Published]) -> None:
    """What the code assigned: "42" and "1.5" in "created", 42 and 1.5 in "updated"."""
    spec = stream(HandlerStatus, exchange="audit", fields=["pid", "handled_rate", "started_at"])
    try:
        now = timezone.now()
        status = HandlerStatus.objects.create(process="p", hostname="h", pid="42", handler="x", queue="q",
                                              concurrency=1, handled_rate="1.5", started_at=now, seen_at=now)
        HandlerStatus.objects.get(pk=status.pk).save()
    finally:
        spec.close()
    created, updated = (m.body["fields"] for m in published)
    assert created == updated
    assert (created["pid"], created["handled_rate"]) == (42, 1.5)


class _Priced(models.Model):
    """Not a table: `_body` reads only the instance."""

    price = models.DecimalField(max_digits=6, decimal_places=2)
    at = models.DateTimeField()

    class Meta:
        app_label = "handler_app"
        managed = False


@override_settings(TIME_ZONE="Europe/Paris")
def test_decimals_have_their_field_s_places_and_naive_datetimes_their_offset() -> None:
    """As the database keeps them: "9.9" for 9.90, a naive datetime in the default time zone
    (Django's, when it saves one) written without an offset; every datetime in UTC, as loaded."""
    spec = StreamSpec("audit")
    fields = _body("handler_app._priced", _Priced(id=1, price="9.9", at=datetime.datetime(2024, 1, 1, 12)), "created", spec)
    assert fields["fields"] == {"id": 1, "price": "9.90", "at": "2024-01-01T11:00:00Z"}
    paris = datetime.datetime(2024, 1, 1, 12, tzinfo=timezone.get_default_timezone())
    assert _body("handler_app._priced", _Priced(id=2, price=Decimal(7), at=paris), "created", spec)["fields"] == {
        "id": 2, "price": "7.00", "at": "2024-01-01T11:00:00Z",
    }
