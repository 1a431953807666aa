"""Model change streams (pubsub/streams.py) and the test kit that records them
(pubsub/testing.py): changes publish in their transaction, rollbacks publish nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import OperationalError, connection, models, transaction
from django.db.models.deletion import Collector
from django.db.models.signals import post_save
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from access.models import ApiToken, BrokerPermission
from exchanges.models import Exchange
from pubsub import publish, publish_changes, refresh_streams, stream
from pubsub.models import ChangeStream, OutboxRow, TaskResultRow
from pubsub.recording import Published
from pubsub.streams import StreamSpec, _body, forget_admin_streams
from pubsub.testing import capture_published
from queues.models import Message, Queue

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


def fast_deleted(model: type[Any]) -> bool:
    """Would Django delete `model`'s rows of a cascade in one statement, without loading them?"""
    return Collector(using="default").can_fast_delete(model.objects.all())


def test_a_model_without_a_stream_keeps_django_s_fast_delete() -> None:
    refresh_streams()  # the admin's streams known: none
    assert fast_deleted(Message)
    spec = stream(Message, exchange="audit")
    assert not fast_deleted(Message)  # its deletes are heard: each is published
    spec.close()
    assert fast_deleted(Message)


def test_a_failed_read_of_the_admin_s_streams_keeps_those_known(monkeypatch: pytest.MonkeyPatch) -> None:
    Exchange.objects.create(name="changes", type="fanout")
    ChangeStream.objects.create(content_type=ContentType.objects.get_for_model(Message), exchange="changes")
    refresh_streams()
    assert not fast_deleted(Message)
    forget_admin_streams()

    def away(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("the database is away")

    monkeypatch.setattr(ChangeStream.objects, "filter", away)
    refresh_streams()
    assert not fast_deleted(Message)  # still heard
    Message.objects.create(id=1, queue=Queue.objects.create(name="q"), message_id="m-1", body="1", published_at="")
    monkeypatch.undo()
    with capture_published() as published:
        Message.objects.filter(id=1).delete()
    assert [m.routing_key for m in published] == ["queues.message.deleted"]


def test_deleting_a_queue_deletes_its_stored_messages_without_reading_them() -> None:
    queue = Queue.objects.create(name="deep")
    Message.objects.bulk_create(
        Message(id=n, queue=queue, message_id=f"m-{n}", body="1", published_at="") for n in range(1, 501)
    )
    with CaptureQueriesContext(connection) as queries:
        Queue.objects.filter(name="deep").delete()
    assert not Message.objects.exists()
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and "queues_message" in q["sql"]]
    assert reads == []
    assert sum("queues_message" in q["sql"] for q in queries.captured_queries) == 1  # one DELETE


def test_a_stream_declared_in_the_admin_publishes_deletes_and_ends_with_its_row() -> None:
    Exchange.objects.create(name="changes", type="fanout")
    row = ChangeStream.objects.create(content_type=ContentType.objects.get_for_model(Message), exchange="changes")
    Message.objects.create(id=1, queue=Queue.objects.create(name="q"), message_id="m-1", body="1", published_at="")
    with capture_published() as published:
        Queue.objects.filter(name="q").delete()  # the cascade deletes the message: heard
    assert [m.routing_key for m in published] == ["queues.message.deleted"]

    row.delete()
    Exchange.objects.create(name="unrelated", type="direct")  # a change: the admin's streams are read again
    assert fast_deleted(Message)


@pytest.mark.django_db(transaction=True)
def test_a_process_hears_deletes_of_a_stream_another_process_declared_in_the_admin() -> None:
    """Declared elsewhere (no signal here): a process's next connection reads the admin's
    streams, so a process that only deletes publishes them too."""
    Exchange.objects.create(name="changes", type="fanout")
    Message.objects.create(id=1, queue=Queue.objects.create(name="q"), message_id="m-1", body="1", published_at="")
    ChangeStream.objects.bulk_create(  # as another process's admin writes it: no signal here
        [ChangeStream(content_type=ContentType.objects.get_for_model(Message), exchange="changes")]
    )
    forget_admin_streams()  # ... and this process's copy is older than ADMIN_STREAMS_SECONDS
    assert fast_deleted(Message)
    connection.close()
    with capture_published() as published:
        Queue.objects.filter(name="q").delete()  # its first query connects
    assert [m.routing_key for m in published] == ["queues.message.deleted"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first", ["request", "refresh_streams"])
def test_a_bulk_delete_hears_the_admin_s_streams_after_a_request_or_refresh_streams(first: str) -> None:
    """A bulk delete that is a process's first query is decided before it connects: a
    request, or `refresh_streams()` in a script, reads the admin's streams first."""
    Exchange.objects.create(name="changes", type="fanout")
    Message.objects.create(id=1, queue=Queue.objects.create(name="q"), message_id="m-1", body="1", published_at="")
    ChangeStream.objects.bulk_create(
        [ChangeStream(content_type=ContentType.objects.get_for_model(Message), exchange="changes")]
    )
    forget_admin_streams()
    if first == "request":
        Client().get("/health")
    else:
        refresh_streams()
    with capture_published() as published:
        Message.objects.filter(id=1).delete()
    assert [m.routing_key for m in published] == ["queues.message.deleted"]


class _Document(models.Model):
    """Not a table: `_body` reads only the instance."""

    title = models.CharField(max_length=10)
    attachment = models.FileField()
    data = models.BinaryField()

    class Meta:
        app_label = "handler_app"
        managed = False


def test_files_and_bytes_are_published_by_name_and_in_base64() -> None:
    """Django's JSON encoder takes neither: a stream with no `fields` made every save fail."""
    document = _Document(id=7, title="t", attachment="docs/a.pdf", data=b"\x00\xff")
    body = _body("handler_app._document", document, "created", StreamSpec("audit"))
    assert body["fields"] == {"id": 7, "title": "t", "attachment": "docs/a.pdf", "data": "AP8="}
    assert _body("handler_app._document", _Document(id=8), "created", StreamSpec("audit"))["fields"]["attachment"] is None


def test_a_delete_of_rows_loaded_with_only_some_fields_publishes_those(published: list[Published]) -> None:
    """The deleted row's other fields cannot be read any more: reading them raised DoesNotExist."""
    Exchange.objects.create(name="audit", type="topic")
    spec = stream(TaskResultRow, exchange="audit", fields=["task_path", "queue_name"])
    try:
        TaskResultRow.objects.create(id="r1", task_path="t", backend="b", queue_name="q", enqueued_at=timezone.now())
        published.clear()
        TaskResultRow.objects.only("id", "queue_name").delete()
    finally:
        spec.close()
    assert [(m.routing_key, m.body["fields"]) for m in published] == [("pubsub.taskresultrow.deleted", {"queue_name": "q"})]
    assert not TaskResultRow.objects.exists()


def test_a_recorder_stopped_inside_another_stops_only_itself(published: list[Published]) -> None:
    """Recorders compared by their messages: the inner block's end removed the fixture's
    (both empty then), which then recorded nothing more and failed at its own end."""
    with capture_published() as inner:
        publish("", 1, routing_key="a")
    publish("", 2, routing_key="b")
    assert [m.routing_key for m in inner] == ["a"]
    assert [m.routing_key for m in published] == ["a", "b"]


class _Place(models.Model):
    """Not tables: `_saved` reads only the instances, and publishes through the outbox."""

    name = models.CharField(max_length=10)

    class Meta:
        app_label = "pubsub"
        managed = False


class _Restaurant(_Place):
    serves = models.CharField(max_length=10)

    class Meta:
        app_label = "pubsub"
        managed = False


def test_a_child_s_save_reaches_its_parent_s_stream_as_its_delete_does(published: list[Published]) -> None:
    """Multi-table inheritance: Django sends post_delete for the child and each parent, but
    post_save for the child only; a parent's stream heard a child's deletes only."""
    Exchange.objects.create(name="audit", type="topic")
    spec = stream(_Place, exchange="audit", fields=["name"])
    try:
        restaurant = _Restaurant(id=3, name="chez", serves="soup")
        post_save.send(_Restaurant, instance=restaurant, created=True, raw=False, using="default")
    finally:
        spec.close()
    assert [(m.routing_key, m.body["fields"]) for m in published] == [("pubsub._place.created", {"name": "chez"})]


def test_a_migration_s_historical_model_publishes_nothing(published: list[Published]) -> None:
    """Its saves published and its deletes did not (the receiver is the real class's)."""
    from django.db.migrations.state import ProjectState

    Exchange.objects.create(name="audit", type="topic")
    spec = stream(Queue, exchange="audit", fields=["name"])
    try:
        historical = ProjectState.from_apps(django_apps).apps.get_model("queues", "Queue")
        historical.objects.create(name="from-a-migration")
    finally:
        spec.close()
    assert published == []


# -- secrets ---------------------------------------------------------------------------------


def test_a_stream_of_every_field_leaves_a_user_s_password_and_a_token_s_hash_out(published: list[Published]) -> None:
    """Every save of a user (each login sets `last_login`) published the password's hash, and
    every token its `key_hash`, to whoever reads the exchange."""
    Exchange.objects.create(name="audit", type="topic")
    spec = stream(User, exchange="audit")
    ChangeStream.objects.create(content_type=ContentType.objects.get_for_model(ApiToken), exchange="audit")
    # A row stored before such streams were refused names the secret: still left out.
    ChangeStream.objects.create(content_type=ContentType.objects.get_for_model(User), exchange="audit",
                                fields="username,password")
    try:
        user = User.objects.create_user("victim", password="secret-42")
        ApiToken.issue(user=user, name="laptop")
    finally:
        spec.close()
    bodies = {(m.routing_key, tuple(sorted(m.body["fields"]))) for m in published}
    assert bodies == {
        ("auth.user.created", ("date_joined", "email", "first_name", "id", "is_active", "is_staff", "is_superuser",
                               "last_login", "last_name", "username")),
        ("auth.user.created", ("username",)),
        ("access.apitoken.created", ("created_at", "id", "name", "prefix", "user_id")),
    }
    assert user.password not in str([m.body for m in published])


def test_a_stream_that_names_a_secret_or_bookkeeping_is_refused_in_code_and_in_the_admin_s_row() -> None:
    from django.contrib.sessions.models import Session
    from rest_framework import serializers

    class EveryUserField(serializers.ModelSerializer[User]):
        class Meta:
            model = User
            fields = "__all__"

    Exchange.objects.create(name="audit", type="topic")
    with pytest.raises(ValueError, match="auth.User's field 'password' is a secret"):
        stream(User, exchange="audit", fields=["username", "password"])
    with pytest.raises(ValueError, match="access.ApiToken's field 'key_hash' is a secret"):
        stream(ApiToken, exchange="audit", fields=["key_hash"])
    with pytest.raises(ValueError, match="'password' is a secret"):
        stream(User, exchange="audit", serializer=EveryUserField)
    with pytest.raises(ValueError, match="never streamed"):
        stream(Session, exchange="audit")

    refused = [
        (User, "password", "fields"), (ApiToken, "name, key_hash", "fields"), (Session, "", "content_type"),
    ]
    for model, fields, field in refused:
        row = ChangeStream(content_type=ContentType.objects.get_for_model(model), exchange="audit", fields=fields)
        with pytest.raises(ValidationError) as error:
            row.full_clean()
        assert list(error.value.message_dict) == [field]
    ChangeStream(content_type=ContentType.objects.get_for_model(User), exchange="audit", fields="").full_clean()


def test_the_admin_offers_streams_of_the_models_the_admin_user_may_view_and_no_secret() -> None:
    """A staff user with add_changestream could stream any model (users, tokens, broker
    permissions) and read it from the exchange."""
    Exchange.objects.create(name="audit", type="topic")
    staff = User.objects.create_user("ops", password="pw", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(
        codename__in=["add_changestream", "view_changestream", "view_queue"]
    ))
    BrokerPermission.objects.create(user=staff, configure="", write="audit", read="")  # publishes to `audit`
    client = Client()
    client.force_login(staff)

    def add(model: type[models.Model], fields: str = "") -> str:
        form = {"content_type": ContentType.objects.get_for_model(model).pk, "exchange": "audit", "fields": fields,
                "enabled": "on"}
        answer = client.post("/admin/pubsub/changestream/add/", form)
        return "saved" if answer.status_code == 302 else answer.content.decode()

    for hidden in (User, ApiToken, BrokerPermission):
        assert "Select a valid choice" in add(hidden)
    assert add(Queue) == "saved"
    staff.user_permissions.add(Permission.objects.get(codename="view_user"))
    assert "&#x27;password&#x27; is a secret: it is never streamed" in add(User, "username,password")
    assert add(User, "username") == "saved"
    assert ChangeStream.objects.count() == 2
