"""What the fuzz runs (tests/fuzz) found, pinned down: each was a 500 or an answer
outside the OpenAPI schema.

- A URL under /api/ that no endpoint matches got Django's HTML 404 page.
- U+0000 in a stored string (routing key, message id, headers, arguments, binding
  key, a bindings filter) reached PostgreSQL, which refuses it: a 500, and for a
  publish a commit batch retried forever. Refused as `invalid` on every database.
- JSON nested deeper than Python's decoder goes raised RecursionError: a 500.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from broker.engine.jsoncodec import canonical, json_holds_nul, nested_deeper_than
from broker.runtime.runtime import Runtime
from common.json_input import MAX_JSON_DEPTH
from tests.api.conftest import Api, error_code

pytestmark = pytest.mark.django_db(transaction=True)

NUL = "a\x00b"


def test_unmatched_api_url_is_a_json_not_found(api: Api) -> None:
    status, body = api.get("/api/queues/bad%20name/")
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_unmatched_url_outside_the_api_is_still_a_page() -> None:
    response = APIClient().get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"routing_key": NUL}, "routing_key"),
        ({"message_id": NUL}, "message_id"),
        ({"headers": {"h": NUL}}, "headers"),
        ({"headers": {NUL: 1}}, "headers"),
        ({"headers": {"h": [{"deep": NUL}]}}, "headers"),
    ],
)
def test_publish_refuses_nul(api: Api, runtime_thread: Runtime, fields: dict[str, Any], field: str) -> None:
    api.post("/api/queues/", {"name": "q"})
    status, body = api.post("/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": 1, **fields})
    assert (status, body["error"]["code"], list(body["error"]["fields"])) == (400, "invalid", [field])
    assert api.get("/api/queues/q/")[1]["messages"] == 0


def test_a_nul_in_the_body_is_stored_escaped(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q"})
    payload = {"routing_key": "q", "body": {NUL: NUL}, "headers": {"h": "\\u0000"}}
    assert api.post("/api/exchanges/amq.default/publish/", payload)[0] == 200
    [message] = api.post("/api/queues/q/get/", {"count": 1})[1]
    assert (message["body"], message["headers"]) == ({NUL: NUL}, {"h": "\\u0000"})


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/api/exchanges/", {"name": "x", "type": "direct", "arguments": {"a": NUL}}),
        ("/api/queues/", {"name": "q2", "arguments": {"dead_letter_routing_key": NUL}}),
        ("/api/bindings/", {"exchange": "amq.headers", "queue": "q", "arguments": {NUL: 1}}),
    ],
)
def test_declarations_refuse_nul_in_arguments(api: Api, runtime_thread: Runtime, path: str, data: Any) -> None:
    api.post("/api/queues/", {"name": "q"})
    assert error_code(api.post(path, data)) == (400, "invalid")


def test_the_original_bindings_call_refuses_nul(runtime_thread: Runtime) -> None:
    APIClient().post("/queues", {"name": "q", "durable": True}, format="json")
    data = {"exchange_name": "amq.direct", "queue_name": "q", "key": NUL}
    response = APIClient().post("/bindings", json.dumps(data), content_type="application/json")
    assert (response.status_code, list(response.json()["error"]["fields"])) == (400, ["key"])


def test_a_bindings_filter_that_is_no_name_matches_nothing(api: Api) -> None:
    assert api.get("/api/bindings/", queue=NUL) == (200, [])


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 1_010, 5_000, 100_000])
def test_json_nested_too_deeply_is_invalid_and_changes_nothing(api: Api, levels: int) -> None:
    """Where Python's decoder gives up depends on its version, and SQLite refused what
    it took past 1,000 levels: the broker's own limit holds whatever the Python."""
    deep = "[" * (levels - 2) + "]" * (levels - 2)  # inside {"arguments": {"a": ...}}: two levels more
    body = f'{{"name": "x", "type": "direct", "arguments": {{"a": {deep}}}}}'
    response = APIClient().post("/api/exchanges/", body, content_type="application/json")
    if levels <= MAX_JSON_DEPTH:
        assert response.status_code == 201
        return
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid")
    assert APIClient().get("/api/exchanges/x/").status_code == 404
    response = APIClient().post("/publish", f'{{"payload": {deep}}}', content_type="application/json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid")


def test_nesting_depth_counts_arrays_and_objects() -> None:
    assert not nested_deeper_than(1, 0)
    assert nested_deeper_than([], 0)
    assert not nested_deeper_than({"a": [1, {"b": []}]}, 4)
    assert nested_deeper_than({"a": [1, {"b": []}]}, 3)
    assert not nested_deeper_than([[]] * 1000, 2)  # wide is not deep


@pytest.mark.parametrize(
    ("value", "holds"),
    [("\x00", True), ("\\u0000", False), ("\\\x00", True), ({"k\x00": 1}, True), ([["\\\\u0000"]], False)],
)
def test_json_holds_nul(value: Any, holds: bool) -> None:
    assert json_holds_nul(canonical(value)) is holds


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/exchanges/", '{"name": "x", "type": "direct", "arguments": {"a": 1e400}}'),
        ("/api/exchanges/", '{"name": "x", "type": "direct", "arguments": {"a": [-1e400]}}'),
        ("/api/queues/", '{"name": "x", "arguments": {"x-max-length": 18446744073709551616}}'),
        ("/api/queues/", '{"name": "x", "arguments": {"x-message-ttl": 1000000000000000000000000000000}}'),
        ("/api/bindings/", '{"exchange": "e", "queue": "q", "arguments": {"k": -9223372036854775809}}'),
        ("/api/bindings/", '{"exchange": "e", "queue": "q", "arguments": {"k": 18446744073709551616}}'),
        ("/publish", '{"exchange_name": "", "key": "q", "payload": {"n": 1e400}}'),
        ("/publish", '{"exchange_name": "", "key": "q", "payload": 18446744073709551616}'),
        # A lone surrogate: Python's decoder reads it; no UTF-8 text, database or link holds it.
        ("/publish", '{"exchange_name": "", "key": "\\ud800", "payload": 1}'),
        ("/publish", '{"exchange_name": "", "key": "q", "payload": {"\\udfff": 1}}'),
        ("/api/queues/", '{"name": "x\\ud800"}'),
        ("/api/exchanges/e/publish/", '{"routing_key": "\\udc00", "body": 1}'),
        ("/api/bindings/", '{"exchange": "e", "queue": "q", "binding_key": "\\ud83d"}'),
    ],
)
def test_numbers_past_64_bits_or_infinite_are_invalid_and_change_nothing(
    api: Api, runtime_thread: Runtime, path: str, body: str
) -> None:
    """Python reads `1e400` as infinity and keeps integers of any size; stored, such a
    number answered 500 (SQLite's JSON check), became null in a body, or (a queue's
    x-max-length past 64 bits) broke the statistics frame of every watching connection."""
    api.post("/api/exchanges/", {"name": "e", "type": "direct"})
    api.post("/api/queues/", {"name": "q"})
    response = APIClient().post(path, body, content_type="application/json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid")
    assert [e["name"] for e in api.get("/api/exchanges/")[1] if e["name"] == "x"] == []
    assert api.get("/api/queues/x/")[0] == 404 and api.get("/api/bindings/", exchange="e")[1] == []
    assert api.get("/api/queues/q/")[1]["messages"] == 0


def test_the_largest_numbers_json_carries_are_taken(api: Api, runtime_thread: Runtime) -> None:
    body = '{"name": "x", "arguments": {"x-max-length": 18446744073709551615}}'
    assert APIClient().post("/api/queues/", body, content_type="application/json").status_code == 201
    body = '{"exchange_name": "", "key": "x", "payload": {"id": 18446744073709551615}}'
    assert APIClient().post("/publish", body, content_type="application/json").status_code == 200
    body = '{"name": "x", "type": "direct", "arguments": {"low": -9223372036854775808, "f": 1e308}}'
    assert APIClient().post("/api/exchanges/", body, content_type="application/json").status_code == 201
