"""JSON requests' names and flags are checked for their type, not converted: DRF's CharField
took 123 for "123" and its BooleanField "no" for false, where docs/protocol.md promises
`invalid` naming the field (common/fields.py). The browsable API's forms, all text, still work."""

from __future__ import annotations

from typing import Any

import pytest

from bindings.models import Binding
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
from queues.models import Queue

from .conftest import Api

pytestmark = pytest.mark.django_db(transaction=True)


def refused(answer: tuple[int, Any], field: str) -> None:
    status, body = answer
    assert (status, body["error"]["code"]) == (400, "invalid"), body
    assert field in body["error"]["fields"] and field in body["error"]["message"], body


@pytest.mark.parametrize(("data", "field"), [
    ({"name": 123}, "name"),
    ({"name": "q1", "auto_delete": "no"}, "auto_delete"),
    ({"name": "q1", "durable": "off"}, "durable"),
    ({"name": "q1", "durable": 0}, "durable"),
    ({"name": "q1", "auto_delete": 1}, "auto_delete"),
])
def test_a_queue_declaration_of_the_wrong_type_is_invalid_and_changes_nothing(
    api: Api, runtime_thread: Runtime, data: dict[str, Any], field: str
) -> None:
    refused(api.post("/api/queues/", data), field)
    assert not Queue.objects.exists()


@pytest.mark.parametrize(("data", "field"), [
    ({"name": 5, "type": "fanout"}, "name"),
    ({"name": "e1", "type": "fanout", "auto_delete": 1}, "auto_delete"),
    ({"name": "e1", "type": "fanout", "durable": "false"}, "durable"),
])
def test_an_exchange_declaration_of_the_wrong_type_is_invalid_and_changes_nothing(
    api: Api, runtime_thread: Runtime, data: dict[str, Any], field: str
) -> None:
    before = Exchange.objects.count()
    refused(api.post("/api/exchanges/", data), field)
    assert Exchange.objects.count() == before and not Exchange.objects.filter(name__in=["5", "e1"]).exists()


@pytest.mark.parametrize(("data", "field"), [
    ({"exchange": 7, "queue": "7"}, "exchange"),
    ({"exchange": "7", "queue": 7}, "queue"),
    ({"exchange": "7", "destination_exchange": 8}, "destination_exchange"),
    ({"exchange": "7", "queue": "7", "binding_key": 1}, "binding_key"),
])
def test_a_binding_named_by_numbers_is_invalid_and_changes_nothing(
    api: Api, runtime_thread: Runtime, data: dict[str, Any], field: str
) -> None:
    for name in ("7", "8"):
        assert api.post("/api/exchanges/", {"name": name, "type": "direct"})[0] == 201
    assert api.post("/api/queues/", {"name": "7"})[0] == 201
    refused(api.post("/api/bindings/", data), field)
    assert not Binding.objects.filter(exchange__name="7").exists()


def test_get_and_browser_actions_take_json_flags_and_strings_only(api: Api, runtime_thread: Runtime) -> None:
    assert api.post("/api/queues/", {"name": "q"})[0] == 201
    assert api.post("/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": 1})[0] == 200
    refused(api.post("/api/queues/q/get/", {"ack": "yes"}), "ack")
    refused(api.post("/api/queues/q/messages/delete/", {"all": 1}), "all")
    refused(api.post("/api/queues/q/messages/delete/", {"ids": [1]}), "ids.0")
    refused(api.post("/api/queues/q/messages/move/", {"all": True, "exchange": 0, "routing_key": "q"}), "exchange")
    assert api.get("/api/queues/q/")[1]["messages_ready"] == 1


def test_json_true_and_false_still_go(api: Api, runtime_thread: Runtime) -> None:
    status, body = api.post("/api/queues/", {"name": "q2", "durable": False, "auto_delete": True})
    assert (status, body["durable"], body["auto_delete"]) == (201, False, True)


def test_the_browsable_forms_text_is_still_read(api: Api, runtime_thread: Runtime) -> None:
    """Form data is all text: "true" and "false", and names, as DRF reads them."""
    form = {"csrfmiddlewaretoken": "token"}  # what the browsable API's forms carry
    queue = api.client.post("/api/queues/", {**form, "name": "f", "durable": "true", "auto_delete": "true"},
                            format="multipart")
    assert (queue.status_code, queue.json()["durable"], queue.json()["auto_delete"]) == (201, True, True), queue.json()
    exchange = api.client.post("/api/exchanges/", {**form, "name": "fx", "type": "fanout", "auto_delete": "false"},
                               format="multipart")
    assert (exchange.status_code, exchange.json()["auto_delete"], exchange.json()["durable"]) == (201, False, False)
    binding = api.client.post("/api/bindings/", {**form, "exchange": "fx", "queue": "f", "binding_key": "k"},
                              format="multipart")
    assert binding.status_code == 201, binding.json()
    bad = api.client.post("/api/queues/", {**form, "name": "g", "auto_delete": "maybe"}, format="multipart")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid")


@pytest.mark.parametrize("count", ["5", 5.0, True, "1e2"])
def test_get_takes_a_json_integer_count_only(api: Api, runtime_thread: Runtime, count: Any) -> None:
    """DRF's IntegerField took `"count": "5"` for 5 (and true for 1): 200, messages taken."""
    assert api.post("/api/queues/", {"name": "q"})[0] == 201
    assert api.post("/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": 1})[0] == 200
    refused(api.post("/api/queues/q/get/", {"count": count}), "count")
    assert api.get("/api/queues/q/")[1]["messages_ready"] == 1  # nothing taken
    assert len(api.post("/api/queues/q/get/", {"count": 5})[1]) == 1
