"""The original Go service's calls (docs/protocol.md): same paths, bodies and answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from bindings.models import Binding
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
from queues.models import Queue

from .conftest import Api, error_code

pytestmark = pytest.mark.django_db(transaction=True)


def call(path: str, data: Any, *, content_type: str = "application/json") -> tuple[int, Any]:
    # A plain Django client with CSRF checks on: these calls must be exempt.
    client = Client(enforce_csrf_checks=True)
    raw = data if isinstance(data, (str, bytes)) else json.dumps(data)
    response = client.post(path, raw, content_type=content_type)
    return response.status_code, response.json()


def test_ping() -> None:
    response = Client().get("/ping")
    assert (response.status_code, response.json()) == (200, {"message": "PONG"})
    assert Client().post("/ping").status_code == 405


def test_end_to_end_flow(api: Api, runtime_thread: Runtime) -> None:
    assert call("/exchanges", {"name": "logs", "type": "fanout"})[0] == 200
    assert call("/queues", {"name": "q", "durable": True})[0] == 200
    assert call("/bindings", {"key": "", "exchange_name": "logs", "queue_name": "q"})[0] == 200
    status, published = call("/publish", {"exchange_name": "logs", "key": "any", "payload": {"text": "hello"}})
    assert status == 200 and published["routed"] == 1 and published["message_id"]
    _, messages = api.post("/api/queues/q/get/", {})
    assert [(m["message_id"], m["body"], m["exchange"], m["routing_key"]) for m in messages] == [
        (published["message_id"], {"text": "hello"}, "logs", "any")
    ]


def test_redeclare(runtime_thread: Runtime) -> None:
    assert call("/exchanges", {"name": "d", "type": "direct"})[0] == 200
    assert call("/exchanges", {"name": "d", "type": "direct"})[0] == 200
    assert error_code(call("/exchanges", {"name": "d", "type": "fanout"})) == (409, "precondition_failed")
    assert call("/queues", {"name": "q", "durable": True})[0] == 200
    assert call("/queues", {"name": "q", "durable": True})[0] == 200
    assert error_code(call("/queues", {"name": "q", "durable": False})) == (409, "precondition_failed")
    call("/bindings", {"key": "k", "exchange_name": "d", "queue_name": "q"})
    assert call("/bindings", {"key": "k", "exchange_name": "d", "queue_name": "q"})[0] == 200
    assert Binding.objects.count() == 1


def test_queue_durable_defaults_to_false_as_in_go(runtime_thread: Runtime) -> None:
    assert call("/queues", {"name": "q"})[1]["durable"] is False


def test_direct_publish_by_key(runtime_thread: Runtime) -> None:
    call("/exchanges", {"name": "d", "type": "direct"})
    for queue in ("a", "b"):
        call("/queues", {"name": queue, "durable": True})
        call("/bindings", {"key": queue, "exchange_name": "d", "queue_name": queue})
    assert call("/publish", {"exchange_name": "d", "key": "a", "payload": "x"})[1]["routed"] == 1
    assert call("/publish", {"exchange_name": "d", "key": "c", "payload": "x"})[1]["routed"] == 0


def test_works_without_json_content_type(runtime_thread: Runtime) -> None:
    assert call("/exchanges", {"name": "p", "type": "fanout"}, content_type="text/plain")[0] == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/exchanges", {"name": "x", "type": "topic"}, 400, "invalid"),
        ("/exchanges", {"name": "x"}, 400, "invalid"),
        ("/exchanges", {"name": "bad name", "type": "direct"}, 400, "invalid"),
        ("/exchanges", {"name": "amq.x", "type": "direct"}, 403, "forbidden"),
        ("/exchanges", "not json", 400, "invalid"),
        ("/exchanges", [1], 400, "invalid"),
        ("/queues", {"durable": True}, 400, "invalid"),
        ("/queues", {"name": "q", "durable": "yes"}, 400, "invalid"),
        ("/queues", {"name": 7}, 400, "invalid"),
        ("/bindings", {"key": "k", "exchange_name": "ex"}, 400, "invalid"),
        ("/bindings", {"key": "k", "exchange_name": "nope", "queue_name": "q0"}, 404, "not_found"),
        ("/bindings", {"key": 5, "exchange_name": "ex", "queue_name": "q0"}, 400, "invalid"),
        ("/publish", {"exchange_name": "ex", "key": "k"}, 400, "invalid"),
        ("/publish", {"key": "k", "payload": 1}, 400, "invalid"),
        ("/publish", {"exchange_name": "nope", "key": "k", "payload": 1}, 404, "not_found"),
        ("/publish", {"exchange_name": None, "key": "q0", "payload": 1}, 400, "invalid"),
        ("/publish", {"exchange_name": 5, "key": "q0", "payload": 1}, 400, "invalid"),
    ],
)
def test_bad_input(runtime_thread: Runtime, path: str, body: Any, status: int, code: str) -> None:
    Exchange.objects.create(name="ex", type="direct")
    Queue.objects.create(name="q0")
    assert error_code(call(path, body)) == (status, code)
    assert list(Exchange.objects.values_list("name", flat=True)) == ["ex"]
    assert list(Queue.objects.values_list("name", flat=True)) == ["q0"]
    assert not Binding.objects.exists()


def test_publish_errors_name_the_legacy_fields(runtime_thread: Runtime) -> None:
    _, body = call("/publish", {"exchange_name": "", "key": "k"})
    assert body["error"]["fields"] == {"payload": ["this field is required"]}
    assert body["error"]["message"].startswith("payload:")


def test_publish_without_exchange_name_is_invalid(runtime_thread: Runtime) -> None:
    Queue.objects.create(name="q")
    status, body = call("/publish", {"key": "q", "payload": 1})
    assert (status, body["error"]["code"]) == (400, "invalid")
    assert body["error"]["fields"] == {"exchange_name": ["this field is required"]}
    assert body["error"]["message"] == "exchange_name: this field is required"
    # The same shape as the other calls' missing fields.
    assert call("/bindings", {"queue_name": "q"})[1] == body
    assert runtime_thread.broker.queue_counts("q").messages_ready == 0  # type: ignore[union-attr]


def test_publish_to_an_explicit_empty_exchange_name_is_the_default_exchange(runtime_thread: Runtime) -> None:
    Queue.objects.create(name="q")
    status, published = call("/publish", {"exchange_name": "", "key": "q", "payload": 1})
    assert (status, published["routed"]) == (200, 1)


def test_binding_errors_name_the_legacy_fields(runtime_thread: Runtime) -> None:
    Exchange.objects.create(name="ex", type="direct")
    Queue.objects.create(name="q")
    _, body = call("/bindings", {"key": 5, "exchange_name": "ex", "queue_name": "q"})
    assert set(body["error"]["fields"]) == {"key"}


def test_publish_without_router_is_unavailable() -> None:
    assert error_code(call("/publish", {"exchange_name": "", "key": "q", "payload": 1})) == (503, "unavailable")
