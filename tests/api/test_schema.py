"""The OpenAPI document, Swagger UI and ReDoc."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

import broker

EXPECTED_PATHS = {
    "/api/exchanges/": {"get", "post"},
    "/api/exchanges/{name}/": {"get", "delete"},
    "/api/exchanges/{name}/publish/": {"post"},
    "/api/queues/": {"get", "post"},
    "/api/queues/{name}/": {"get", "delete"},
    "/api/queues/{name}/purge/": {"post"},
    "/api/queues/{name}/get/": {"post"},
    "/api/bindings/": {"get", "post"},
    "/api/bindings/{id}/": {"get", "delete"},
    "/api/outbox/": {"get"},
    # Served outside DRF (common/openapi_paths.py).
    "/ping": {"get"},
    "/exchanges": {"post"},
    "/queues": {"post"},
    "/bindings": {"post"},
    "/publish": {"post"},
    "/health": {"get"},
}


@pytest.fixture
def schema(db: Any) -> dict[str, Any]:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_schema_is_valid_and_lists_every_path(schema: dict[str, Any]) -> None:
    validate_schema(schema)
    for path, methods in EXPECTED_PATHS.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), path


def test_schema_generates_without_warnings_or_errors(db: Any) -> None:
    # drf-spectacular prints each one to stderr at every load of /api/schema/ and /api/docs/.
    GENERATOR_STATS.reset()
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert not GENERATOR_STATS._warn_cache and not GENERATOR_STATS._error_cache, [
        *GENERATOR_STATS._warn_cache,
        *GENERATOR_STATS._error_cache,
    ]
    # The slash-less aliases are served, but documented once, in their documented form.
    assert not [path for path in response.json()["paths"] if path.startswith("/api/") and not path.endswith("/")]


def test_schema_documents_the_calls_outside_drf_and_points_to_the_websocket_protocol(
    schema: dict[str, Any],
) -> None:
    paths = schema["paths"]
    assert set(paths["/publish"]["post"]["responses"]) == {"200", "400", "401", "403", "404", "409", "413", "503"}
    assert paths["/publish"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/LegacyPublish"
    )
    assert paths["/queues"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/LegacyQueue"
    )
    assert paths["/ping"]["get"]["security"] == paths["/health"]["get"]["security"] == []  # open to all
    assert paths["/exchanges"]["post"]["security"] == [{"bearerAuth": []}]  # never the session cookie
    components = schema["components"]["schemas"]
    assert components["LegacyQueueDeclare"]["properties"]["durable"]["default"] is False
    assert set(components["Health"]["properties"]["role"]["enum"]) == {"router", "standby", "edge", "none"}
    description = schema["info"]["description"]
    assert "/ws" in description and "docs/protocol.md" in description


def test_schema_version_is_the_installed_package_s(schema: dict[str, Any]) -> None:
    installed = metadata.version("django-pubsub-broker")  # pyproject.toml's `version`
    assert broker.__version__ == installed
    assert schema["info"]["version"] == installed


def test_schema_documents_shapes_and_errors(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert set(components["Error"]["properties"]) == {"error"}
    assert set(components["ErrorDetail"]["properties"]) == {"code", "message", "fields"}
    create = schema["paths"]["/api/exchanges/"]["post"]["responses"]
    assert {"200", "201", "400", "403", "409"} <= set(create)
    assert create["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    publish = schema["paths"]["/api/exchanges/{name}/publish/"]["post"]
    assert {"200", "400", "404", "413", "503"} <= set(publish["responses"])
    assert set(components["Queue"]["properties"]) >= {"exclusive", "messages", "consumers"}
    bindings = schema["paths"]["/api/bindings/"]["get"]["parameters"]
    assert {p["name"] for p in bindings} == {"exchange", "queue", "destination_exchange", "page", "page_size"}
    queues = schema["paths"]["/api/queues/"]["get"]
    assert {p["name"] for p in queues["parameters"]} == {"page", "page_size", "name", "use_regex", "exclusive"}
    listed = queues["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["$ref"].endswith("/QueueList")
    whole, page = components["QueueList"]["oneOf"]
    assert whole["type"] == "array" and whole["items"]["$ref"].endswith("/Queue")
    assert page["$ref"].endswith("/QueuePage")
    assert set(components["QueuePage"]["properties"]) == {
        "items", "page", "page_size", "page_count", "item_count", "filtered_count", "total_count"}


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_docs_pages(db: Any, path: str) -> None:
    response = APIClient().get(path)
    assert response.status_code == 200
    assert b"/api/schema/" in response.content
