"""/api/bindings/: create (201/200), list with filters, delete, and every refusal."""

from __future__ import annotations

from typing import Any

import pytest

from bindings.models import Binding
from broker.runtime.runtime import Runtime

from .conftest import Api, error_code

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def topology(api: Api, runtime_thread: Runtime) -> Runtime:
    api.post("/api/exchanges/", {"name": "ex", "type": "direct"})
    api.post("/api/exchanges/", {"name": "hdr", "type": "headers"})
    api.post("/api/queues/", {"name": "q1"})
    api.post("/api/queues/", {"name": "q2"})
    return runtime_thread


def test_create_identical_and_distinct_by_arguments(api: Api, topology: Runtime) -> None:
    status, body = api.post("/api/bindings/", {"exchange": "ex", "queue": "q1", "binding_key": "k"})
    assert status == 201
    assert body == {"id": body["id"], "exchange": "ex", "queue": "q1", "destination_exchange": None,
                    "binding_key": "k", "arguments": {}}
    again = api.post("/api/bindings/", {"exchange": "ex", "queue": "q1", "binding_key": "k", "arguments": {}})
    assert again == (200, body)
    other = api.post("/api/bindings/", {"exchange": "ex", "queue": "q1", "binding_key": "k", "arguments": {"a": 1}})
    assert other[0] == 201 and other[1]["id"] != body["id"]
    assert len(topology.broker.bindings) == 2


def test_list_filters(api: Api, topology: Runtime) -> None:
    api.post("/api/bindings/", {"exchange": "ex", "queue": "q1"})
    api.post("/api/bindings/", {"exchange": "ex", "queue": "q2"})
    api.post("/api/bindings/", {"exchange": "hdr", "queue": "q2", "arguments": {"x-match": "any", "a": 1}})
    status, rows = api.get("/api/bindings/")
    assert status == 200 and len(rows) == 3
    assert [(b["exchange"], b["queue"]) for b in api.get("/api/bindings/", exchange="ex")[1]] == [
        ("ex", "q1"),
        ("ex", "q2"),
    ]
    assert [b["exchange"] for b in api.get("/api/bindings/", queue="q2")[1]] == ["ex", "hdr"]
    assert len(api.get("/api/bindings/", exchange="hdr", queue="q2")[1]) == 1
    assert api.get("/api/bindings/", exchange="nope")[1] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"exchange": "amq.default", "queue": "q1"}, 403, "forbidden"),
        ({"exchange": "", "queue": "q1"}, 403, "forbidden"),
        ({"exchange": "nope", "queue": "q1"}, 404, "not_found"),
        ({"exchange": "ex", "queue": "nope"}, 404, "not_found"),
        ({"exchange": "hdr", "queue": "q1", "arguments": {"x-match": "some"}}, 400, "invalid"),
        ({"exchange": "ex", "queue": "q1", "arguments": []}, 400, "invalid"),
        ({"exchange": "ex", "queue": "q1", "binding_key": "k" * 256}, 400, "invalid"),
        ({"exchange": "ex"}, 400, "invalid"),
        ({"queue": "q1"}, 400, "invalid"),
        ({"exchange": "ex", "queue": "q1", "destination_exchange": "hdr"}, 400, "invalid"),
        ({"exchange": "ex", "destination_exchange": "nope"}, 404, "not_found"),
        ({"exchange": "ex", "destination_exchange": ""}, 403, "forbidden"),
        ({"exchange": "ex", "destination_exchange": "amq.default"}, 403, "forbidden"),
        ({"exchange": "hdr", "destination_exchange": "ex", "arguments": {"x-match": "some"}}, 400, "invalid"),
    ],
)
def test_create_refused_leaves_nothing(
    api: Api, topology: Runtime, body: dict[str, Any], status: int, code: str
) -> None:
    assert error_code(api.post("/api/bindings/", body)) == (status, code)
    assert not Binding.objects.exists()
    assert not topology.broker.bindings


def test_body_must_be_an_object(api: Api, topology: Runtime) -> None:
    assert error_code(api.post("/api/bindings/", ["ex", "q1"])) == (400, "invalid")


def test_detail_and_delete(api: Api, topology: Runtime) -> None:
    _, body = api.post("/api/bindings/", {"exchange": "ex", "queue": "q1", "binding_key": "k"})
    assert api.get(f"/api/bindings/{body['id']}/") == (200, body)
    assert api.delete(f"/api/bindings/{body['id']}/") == (204, None)
    assert not topology.broker.bindings
    assert error_code(api.delete(f"/api/bindings/{body['id']}/")) == (404, "not_found")
    assert error_code(api.get(f"/api/bindings/{body['id']}/")) == (404, "not_found")
    assert api.client.delete("/api/bindings/abc/").status_code == 404


def test_deleting_the_queue_deletes_its_bindings(api: Api, topology: Runtime) -> None:
    api.post("/api/bindings/", {"exchange": "ex", "queue": "q1"})
    api.delete("/api/queues/q1/")
    assert api.get("/api/bindings/")[1] == [] and not topology.broker.bindings


def test_an_exchange_bound_to_an_exchange(api: Api, topology: Runtime) -> None:
    status, body = api.post("/api/bindings/", {"exchange": "ex", "destination_exchange": "hdr", "binding_key": "k"})
    assert status == 201
    assert body == {"id": body["id"], "exchange": "ex", "queue": None, "destination_exchange": "hdr",
                    "binding_key": "k", "arguments": {}}
    assert api.post("/api/bindings/", {"exchange": "ex", "destination_exchange": "hdr", "binding_key": "k"}) == (
        200, body)
    queue_binding = api.post("/api/bindings/", {"exchange": "ex", "queue": "q1", "binding_key": "k"})[1]
    assert api.get("/api/bindings/", destination_exchange="hdr")[1] == [body]
    assert api.get("/api/bindings/", queue="q1")[1] == [queue_binding]
    assert api.get("/api/exchanges/ex/")[1]["bindings"] == [body, queue_binding]
    assert {(b.destination, str(b.destination_type)) for b in topology.broker.bindings.values()} == {
        ("hdr", "exchange"), ("q1", "queue")}
    published = api.post("/api/exchanges/ex/publish/", {"routing_key": "k", "body": 1})[1]
    assert published["routed"] == 1  # q1; hdr has no bindings of its own
    status, refused = api.post("/api/bindings/", {"exchange": "ex", "destination_exchange": "amq.default"})
    assert status == 403 and list(refused["error"]["fields"]) == ["destination_exchange"]


def test_deleting_the_destination_exchange_deletes_the_binding_to_it(api: Api, topology: Runtime) -> None:
    _, body = api.post("/api/bindings/", {"exchange": "ex", "destination_exchange": "hdr"})
    assert api.delete("/api/exchanges/hdr/")[0] == 204
    assert api.get("/api/bindings/")[1] == [] and not topology.broker.bindings
    assert topology.broker.exchanges["ex"].onward is None
    api.post("/api/exchanges/", {"name": "hdr", "type": "headers"})
    _, body = api.post("/api/bindings/", {"exchange": "ex", "destination_exchange": "hdr"})
    assert api.delete(f"/api/bindings/{body['id']}/") == (204, None)
    assert not topology.broker.bindings
