"""/api/queues/: declare, list with live counts and private queues, detail, delete, purge, get."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from django.db import connection as db_connection

import storage.store as store_module
from bindings.models import Binding
from broker.engine.messages import StoredCopy
from broker.engine.queues import AckMode
from broker.protocol.publish import PublishRequest
from broker.router.calls import on_loop
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
from queues.models import Message, Queue
from queues.services import queue_ensure
from tests.conftest import Sink
from tests.eventually import eventually_sync

from .conftest import Api, error_code, subscribe_private

pytestmark = pytest.mark.django_db(transaction=True)

COUNTS = ("messages", "messages_ready", "messages_unacknowledged", "consumers")


def publish(api: Api, routing_key: str, body: Any, exchange: str = "amq.default", **fields: Any) -> dict[str, Any]:
    message = {"routing_key": routing_key, "body": body, **fields}
    status, answer = api.post(f"/api/exchanges/{exchange}/publish/", message)
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


def test_declare_identical_different(api: Api, runtime_thread: Runtime) -> None:
    status, body = api.post("/api/queues/", {"name": "jobs", "arguments": {"max_length": 10}})
    assert status == 201
    assert body == {
        "name": "jobs",
        "durable": True,
        "auto_delete": False,
        "arguments": {"max_length": 10},
        "exclusive": False,
        "messages": 0,
        "messages_ready": 0,
        "messages_unacknowledged": 0,
        "consumers": 0,
    }
    assert "jobs" in runtime_thread.broker.queues
    assert api.post("/api/queues/", {"name": "jobs", "arguments": {"max_length": 10}})[0] == 200
    assert error_code(api.post("/api/queues/", {"name": "jobs"})) == (409, "precondition_failed")
    different = {"name": "jobs", "arguments": {"max_length": 10}, "durable": False}
    assert error_code(api.post("/api/queues/", different)) == (409, "precondition_failed")
    assert Queue.objects.get(name="jobs").durable is True


def test_empty_name_generates_one(api: Api, runtime_thread: Runtime) -> None:
    status, body = api.post("/api/queues/", {"name": ""})
    assert status == 201 and body["name"].startswith("amq.gen-")
    assert Queue.objects.filter(name=body["name"]).exists()
    status, other = api.post("/api/queues/", {})
    assert status == 201 and other["name"] != body["name"]
    assert api.delete(f"/api/queues/{body['name']}/")[0] == 204  # a stored queue, even with a generated name


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "amq.q"}, 403, "forbidden"),
        ({"name": "no spaces"}, 400, "invalid"),
        ({"name": "q", "arguments": {"max_length": -1}}, 400, "invalid"),
        ({"name": "q", "arguments": {"overflow": "explode"}}, 400, "invalid"),
        ({"name": "q", "arguments": {"unknown": 1}}, 400, "invalid"),
        ({"name": "q", "arguments": "x"}, 400, "invalid"),
        ({"name": "q", "durable": "perhaps"}, 400, "invalid"),
    ],
)
def test_declare_refused_leaves_nothing(api: Api, body: dict[str, Any], status: int, code: str) -> None:
    answer = api.post("/api/queues/", body)
    assert error_code(answer) == (status, code)
    assert not Queue.objects.exists()


def test_argument_error_names_the_field(api: Api) -> None:
    _, body = api.post("/api/queues/", {"name": "q", "arguments": {"message_ttl": "soon"}})
    assert body["error"]["fields"] == {"arguments": ["message_ttl: must be an integer >= 0"]}


def test_list_and_detail_with_live_counts(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "b"})
    api.post("/api/queues/", {"name": "a"})
    publish(api, "a", {"n": 1})
    publish(api, "a", {"n": 2})
    status, body = api.get("/api/queues/")
    assert status == 200
    assert [q["name"] for q in body] == ["a", "b"]
    assert [body[0][k] for k in COUNTS] == [2, 2, 0, 0]
    assert api.get("/api/queues/a/")[1]["messages_ready"] == 2


def test_counts_are_null_without_router(api: Api) -> None:
    Queue.objects.create(name="q")
    status, body = api.get("/api/queues/")
    assert status == 200 and [body[0][k] for k in COUNTS] == [None] * 4
    assert api.get("/api/queues/q/")[1]["messages"] is None


def test_private_queues_are_listed_read_only(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/exchanges/", {"name": "news", "type": "fanout"})
    _, private = subscribe_private(runtime_thread, "news")
    publish(api, "", {"hello": 1}, exchange="news")
    _, body = api.get("/api/queues/")
    listed = {q["name"]: q for q in body}
    assert listed[private]["exclusive"] is True
    assert listed[private]["auto_delete"] is True and listed[private]["durable"] is False
    assert listed[private]["consumers"] == 1 and listed[private]["messages_unacknowledged"] == 1
    assert api.get(f"/api/queues/{private}/")[1]["exclusive"] is True
    assert error_code(api.delete(f"/api/queues/{private}/")) == (403, "forbidden")
    assert error_code(api.post(f"/api/queues/{private}/purge/")) == (403, "forbidden")
    assert error_code(api.post(f"/api/queues/{private}/get/", {})) == (403, "forbidden")
    assert error_code(api.post("/api/bindings/", {"exchange": "news", "queue": private})) == (403, "forbidden")
    # Its messages are its subscriber's: the browser does not show them either.
    assert error_code(api.get(f"/api/queues/{private}/messages/")) == (403, "forbidden")
    replay = {"all": True}
    assert error_code(api.post(f"/api/queues/{private}/messages/replay/", replay)) == (403, "forbidden")
    assert private in runtime_thread.broker.queues


def test_delete(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q"})
    publish(api, "q", 1)
    assert api.delete("/api/queues/q/") == (204, None)
    assert "q" not in runtime_thread.broker.queues and not Queue.objects.exists()
    assert error_code(api.delete("/api/queues/q/")) == (404, "not_found")
    assert error_code(api.get("/api/queues/q/")) == (404, "not_found")


def test_delete_then_declare_again_keeps_the_new_queue(api: Api, runtime_thread: Runtime) -> None:
    for _ in range(3):
        api.post("/api/queues/", {"name": "again"})
        publish(api, "again", "x")
        assert api.delete("/api/queues/again/")[0] == 204
        assert api.post("/api/queues/", {"name": "again"})[0] == 201
    on_loop(runtime_thread.loop, runtime_thread.writer.flush)  # type: ignore[union-attr]
    assert Queue.objects.filter(name="again").exists()
    assert "again" in runtime_thread.broker.queues


@pytest.fixture
def held_queue_deletes(runtime_thread: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The router's writer holds its deletes of queue rows until the event is set: the
    moment, short in production, when the router has deleted a queue and its row is still
    stored."""
    release = threading.Event()
    write = runtime_thread.store.write

    def held(inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        if queues_to_delete:
            release.wait(10)
        write(inserts, deletes, queues_to_delete)

    monkeypatch.setattr(runtime_thread.store, "write", held)
    yield release
    release.set()


def let_the_writer_delete(runtime: Runtime, release: threading.Event) -> None:
    release.set()
    on_loop(runtime.loop, runtime.writer.flush)  # type: ignore[union-attr]


def in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    """`call()` in a thread of its own (with its own database connection); its result lands in the list."""
    answers: list[Any] = []

    def run() -> None:
        try:
            answers.append(call())
        finally:
            db_connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answers


def test_a_queue_the_router_deleted_is_declared_anew_once_its_row_is_deleted(
    api: Api, runtime_thread: Runtime, held_queue_deletes: threading.Event
) -> None:
    """The router deletes an auto-delete queue as its last subscriber leaves, and its writer
    the row later, leaving out the copies on their way to it: a declaration in between waits
    for that commit, then creates the queue (201), without the old one's binding or copies."""
    assert api.post("/api/queues/", {"name": "temp", "auto_delete": True})[0] == 201
    old = Queue.objects.get(name="temp")
    Binding.objects.create(exchange=Exchange.objects.create(name="news", type="fanout"), queue=old)
    connection = on_loop(runtime_thread.loop, runtime_thread.connect, Sink())
    on_loop(
        runtime_thread.loop, runtime_thread.subscribe, connection,
        subscription="s", subscription_json='"s"', ack_mode=AckMode.CLIENT, prefetch=0, queue="temp",
    )

    def publish_then_leave() -> None:  # the copy's insert goes with the queue's deletion
        runtime_thread.publish_nowait(PublishRequest("", "temp", '"on its way"', {}, True, None))
        runtime_thread.unsubscribe(connection, "s")  # the last subscriber

    on_loop(runtime_thread.loop, publish_then_leave)
    assert "temp" not in runtime_thread.broker.queues
    assert Queue.objects.filter(pk=old.pk).exists()  # the writer's delete waits

    declaring, answers = in_thread(lambda: Api().post("/api/queues/", {"name": "temp", "auto_delete": True}))
    declaring.join(0.3)
    assert answers == []  # it waits for the writer's commit
    let_the_writer_delete(runtime_thread, held_queue_deletes)
    declaring.join(10)
    assert [(status, body["name"]) for status, body in answers] == [(201, "temp")]
    on_loop(runtime_thread.loop, runtime_thread.writer.flush)  # type: ignore[union-attr]
    new = Queue.objects.get(name="temp")
    assert new.pk != old.pk
    assert not Binding.objects.filter(queue__name="temp").exists()
    assert not Message.objects.exists()  # the old queue's copy was left out, not put in the new one
    assert runtime_thread.broker.queues["temp"].spec.row_id == new.pk
    assert api.post("/api/queues/", {"name": "temp", "auto_delete": True})[0] == 200


def test_a_declaration_waits_for_the_writer_s_commit_deleting_the_same_rows(
    api: Api, runtime_thread: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's commit that deletes a queue the router deleted (and the queue's copies,
    by id) holds the rows, or on SQLite the write lock, when a declaration of its name
    comes: the declaration waits, then creates the queue; neither fails."""
    inside, release = threading.Event(), threading.Event()
    delete_rows = store_module.delete_queue_rows

    def holding(cursor: Any, ids: Sequence[int]) -> None:
        delete_rows(cursor, ids)
        inside.set()
        assert release.wait(10)

    monkeypatch.setattr(store_module, "delete_queue_rows", holding)
    assert api.post("/api/queues/", {"name": "temp", "auto_delete": True})[0] == 201
    Binding.objects.create(exchange=Exchange.objects.create(name="news", type="fanout"), queue=Queue.objects.get())
    publish(api, "temp", "stored")
    connection = on_loop(runtime_thread.loop, runtime_thread.connect, Sink())
    on_loop(
        runtime_thread.loop, runtime_thread.subscribe, connection,
        subscription="s", subscription_json='"s"', ack_mode=AckMode.CLIENT, prefetch=0, queue="temp",
    )
    on_loop(runtime_thread.loop, runtime_thread.unsubscribe, connection, "s")  # its message unacknowledged
    assert inside.wait(5)

    answers: list[tuple[int, Any]] = []

    def declare() -> None:
        try:
            answers.append(Api().post("/api/queues/", {"name": "temp", "auto_delete": True}))
        finally:
            db_connection.close()

    declaring = threading.Thread(target=declare)
    declaring.start()
    declaring.join(0.3)
    release.set()
    declaring.join(10)
    assert [status for status, _ in answers] == [201]
    on_loop(runtime_thread.loop, runtime_thread.writer.flush)  # type: ignore[union-attr]
    row = Queue.objects.get(name="temp")
    assert runtime_thread.broker.queues["temp"].spec.row_id == row.pk
    assert not Binding.objects.exists() and not Message.objects.exists()


def test_a_stomp_destination_s_queue_that_expired_is_declared_anew(
    api: Api, runtime_thread: Runtime, held_queue_deletes: threading.Event
) -> None:
    """A `/queue/NAME` destination (queue_ensure) naming a queue the router deleted as
    unused past its `expires`, its row still stored, declares it anew with the frame's
    properties once the row is deleted: the old queue's are no precondition, it is gone."""
    assert api.post("/api/queues/", {"name": "brief", "arguments": {"expires": 1}})[0] == 201
    eventually_sync(lambda: "brief" not in runtime_thread.broker.queues, what="the queue expired")
    assert Queue.objects.filter(name="brief").exists()  # the writer's delete waits

    ensuring, answers = in_thread(lambda: queue_ensure(name="brief"))
    ensuring.join(0.3)
    let_the_writer_delete(runtime_thread, held_queue_deletes)
    ensuring.join(10)
    assert answers == [None]

    on_loop(runtime_thread.loop, runtime_thread.writer.flush)  # type: ignore[union-attr]
    row = Queue.objects.get(name="brief")
    assert row.arguments == {}
    assert runtime_thread.broker.queues["brief"].spec.row_id == row.pk


def test_purge(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q"})
    for n in range(3):
        publish(api, "q", n)
    assert api.post("/api/queues/q/purge/") == (200, {"purged": 3})
    assert api.get("/api/queues/q/")[1]["messages"] == 0
    assert api.post("/api/queues/q/purge/") == (200, {"purged": 0})
    assert error_code(api.post("/api/queues/nope/purge/")) == (404, "not_found")


def test_get_with_ack(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q"})
    sent = [publish(api, "q", {"n": n}, headers={"h": n})["message_id"] for n in range(3)]
    status, messages = api.post("/api/queues/q/get/", {"count": 2})
    assert status == 200
    assert [m["message_id"] for m in messages] == sent[:2]
    first = messages[0]
    assert set(first) == {
        "message_id", "exchange", "routing_key", "body", "headers", "persistent", "published_at", "redelivered",
    }
    assert (first["exchange"], first["routing_key"], first["body"], first["headers"]) == ("", "q", {"n": 0}, {"h": 0})
    assert first["redelivered"] is False and first["persistent"] is True
    assert [m["message_id"] for m in api.post("/api/queues/q/get/", {})[1]] == sent[2:]  # count defaults to 1
    assert api.post("/api/queues/q/get/", {"count": 5}) == (200, [])


def test_get_without_ack_redelivers(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q"})
    sent = [publish(api, "q", n)["message_id"] for n in range(2)]
    _, first = api.post("/api/queues/q/get/", {"count": 10, "ack": False})
    assert [(m["message_id"], m["redelivered"]) for m in first] == [(sent[0], False), (sent[1], False)]
    assert api.get("/api/queues/q/")[1]["messages_ready"] == 2
    _, second = api.post("/api/queues/q/get/", {"count": 10, "ack": True})
    assert [(m["message_id"], m["redelivered"]) for m in second] == [(sent[0], True), (sent[1], True)]
    assert api.get("/api/queues/q/")[1]["messages"] == 0


@pytest.mark.parametrize(
    # A count past 32 bits (10**20 as a form field's text) could not cross a cluster's link.
    "body", [{"count": 0}, {"count": "many"}, {"ack": "sometimes"}, [1], {"count": 2**31}, {"count": str(10**20)}]
)
def test_get_refuses_bad_input(api: Api, runtime_thread: Runtime, body: Any) -> None:
    api.post("/api/queues/", {"name": "q"})
    publish(api, "q", 1)
    assert error_code(api.post("/api/queues/q/get/", body)) == (400, "invalid")
    assert api.get("/api/queues/q/")[1]["messages_ready"] == 1


def test_get_missing_queue(api: Api, runtime_thread: Runtime) -> None:
    assert error_code(api.post("/api/queues/nope/get/", {})) == (404, "not_found")


def test_without_router_get_and_purge_are_unavailable(api: Api) -> None:
    Queue.objects.create(name="q")
    assert error_code(api.post("/api/queues/q/get/", {})) == (503, "unavailable")
    assert error_code(api.post("/api/queues/q/purge/")) == (503, "unavailable")
    assert error_code(api.post("/api/queues/nope/get/", {})) == (404, "not_found")


def test_get_requests_on_actions_change_nothing(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q"})
    publish(api, "q", 1)
    for path in ("/api/queues/q/get/", "/api/queues/q/purge/"):
        assert error_code(api.get(path)) == (405, "invalid")
        assert api.client.get(path, HTTP_ACCEPT="text/html").status_code == 405  # the browsable form
    assert api.get("/api/queues/q/")[1]["messages_ready"] == 1


def test_the_browsable_form_can_leave_durable_and_ack_unticked(api: Api, runtime_thread: Runtime) -> None:
    # An HTML form leaves an unticked checkbox out of its data: false, not the JSON default.
    page = api.client.get("/api/queues/", HTTP_ACCEPT="text/html").content.decode()
    assert re.search(r'<input type="checkbox" name="durable" value="true"\s+checked>', page)  # ticked at first
    assert 'name="csrfmiddlewaretoken"' in page  # how the field tells the browsable form from others
    form = {"csrfmiddlewaretoken": "token"}  # what the browsable API's forms carry
    unticked = api.client.post("/api/queues/", {**form, "name": "form-off"}, format="multipart")
    assert (unticked.status_code, unticked.json()["durable"]) == (201, False)
    ticked = api.client.post("/api/queues/", {**form, "name": "form-on", "durable": "true"}, format="multipart")
    assert (ticked.status_code, ticked.json()["durable"]) == (201, True)
    assert api.post("/api/queues/", {"name": "json"})[1]["durable"] is True  # JSON: the documented default
    # Form data of a client's own (curl -d name=...) gets the documented default too.
    own = api.client.post("/api/queues/", {"name": "curl"}, format="multipart")
    assert (own.status_code, own.json()["durable"]) == (201, True)

    publish(api, "json", 1)
    peeked = api.client.post("/api/queues/json/get/", {**form, "count": "1"}, format="multipart")
    assert [m["body"] for m in peeked.json()] == [1]
    assert api.get("/api/queues/json/")[1]["messages_ready"] == 1  # not acknowledged: still there
    assert [m["redelivered"] for m in api.post("/api/queues/json/get/", {})[1]] == [True]  # JSON: ack true
    assert api.get("/api/queues/json/")[1]["messages_ready"] == 0
