"""POST /api/exchanges/{name}/publish/: routing for every exchange type, the default
exchange, and the refusals (400, 404, 413, 503)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from broker.runtime.runtime import Runtime
from queues.models import Message

from .conftest import Api, error_code

pytestmark = pytest.mark.django_db(transaction=True)


def declare(api: Api, exchange: str, kind: str, bindings: list[tuple[str, str, dict[str, Any]]]) -> None:
    assert api.post("/api/exchanges/", {"name": exchange, "type": kind})[0] == 201
    for queue, key, arguments in bindings:
        api.post("/api/queues/", {"name": queue})
        status, _ = api.post(
            "/api/bindings/", {"exchange": exchange, "queue": queue, "binding_key": key, "arguments": arguments}
        )
        assert status == 201


def routed(api: Api, exchange: str, routing_key: str = "", **fields: Any) -> int:
    fields.setdefault("body", {"x": 1})
    status, body = api.post(f"/api/exchanges/{exchange}/publish/", {"routing_key": routing_key, **fields})
    assert status == 200, body
    assert set(body) == {"message_id", "routed"}
    return body["routed"]  # type: ignore[no-any-return]


def test_direct(api: Api, runtime_thread: Runtime) -> None:
    declare(api, "d", "direct", [("q1", "a", {}), ("q2", "a", {}), ("q3", "b", {})])
    assert routed(api, "d", "a") == 2
    assert routed(api, "d", "b") == 1
    assert routed(api, "d", "c") == 0


def test_fanout(api: Api, runtime_thread: Runtime) -> None:
    declare(api, "f", "fanout", [("q1", "", {}), ("q2", "ignored", {})])
    assert routed(api, "f", "anything") == 2


def test_topic(api: Api, runtime_thread: Runtime) -> None:
    declare(api, "t", "topic", [("eu", "orders.eu.*", {}), ("all", "orders.#", {}), ("created", "*.*.created", {})])
    assert routed(api, "t", "orders.eu.created") == 3
    assert routed(api, "t", "orders.us.created") == 2
    assert routed(api, "t", "orders") == 1
    assert routed(api, "t", "users.eu.deleted") == 0


def test_headers(api: Api, runtime_thread: Runtime) -> None:
    declare(
        api,
        "h",
        "headers",
        [("all", "", {"a": 1, "b": "x"}), ("any", "", {"x-match": "any", "a": 1, "b": "x"})],
    )
    assert routed(api, "h", headers={"a": 1, "b": "x"}) == 2
    assert routed(api, "h", headers={"a": 1}) == 1
    assert routed(api, "h", headers={"a": "1"}) == 0  # JSON values: 1 is not "1"


def test_default_exchange(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q"})
    assert routed(api, "amq.default", "q") == 1
    assert routed(api, "amq.default", "missing") == 0
    _, messages = api.post("/api/queues/q/get/", {})
    assert messages[0]["exchange"] == ""


def test_persistent_copy_is_committed_before_the_answer(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q"})
    message = {"routing_key": "q", "body": [1, 2], "message_id": "m-1"}
    status, body = api.post("/api/exchanges/amq.default/publish/", message)
    assert (status, body) == (200, {"message_id": "m-1", "routed": 1})
    assert list(Message.objects.values_list("message_id", "body")) == [("m-1", "[1,2]")]
    routed(api, "amq.default", "q", persistent=False)
    assert Message.objects.count() == 1  # non-persistent: memory only


@pytest.mark.parametrize(
    "body",
    [
        {"routing_key": "q"},  # no body
        {"body": 1, "headers": [1]},
        {"body": 1, "persistent": "yes"},
        {"body": 1, "routing_key": 5},
        {"body": 1, "message_id": ""},
        [1],
        "text",
    ],
)
def test_publish_refused(api: Api, runtime_thread: Runtime, body: Any) -> None:
    api.post("/api/queues/", {"name": "q"})
    assert error_code(api.post("/api/exchanges/amq.default/publish/", body)) == (400, "invalid")
    assert api.get("/api/queues/q/")[1]["messages"] == 0


def test_publish_to_missing_exchange(api: Api, runtime_thread: Runtime) -> None:
    assert error_code(api.post("/api/exchanges/nope/publish/", {"body": 1})) == (404, "not_found")


def test_body_over_the_limit_is_too_large(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q"})
    with override_settings(MAX_MESSAGE_BYTES=100):
        answer = api.post("/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": "x" * 200})
        assert error_code(answer) == (413, "too_large")
        assert routed(api, "amq.default", "q", body="x" * 50) == 1
    assert api.get("/api/queues/q/")[1]["messages"] == 1


def test_request_over_the_upload_limit_is_too_large(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q"})
    huge = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)
    answer = api.post("/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": huge})
    assert error_code(answer) == (413, "too_large")
    assert error_code(api.post("/api/queues/", {"name": huge})) == (413, "too_large")
    assert api.get("/api/queues/q/")[1]["messages"] == 0


def test_without_router_publish_is_unavailable(api: Api) -> None:
    assert error_code(api.post("/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": 1})) == (
        503,
        "unavailable",
    )
    # Validation comes first: a bad request is a 400 even then.
    assert error_code(api.post("/api/exchanges/amq.default/publish/", {"routing_key": "q"})) == (400, "invalid")
