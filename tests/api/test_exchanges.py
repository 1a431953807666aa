"""/api/exchanges/: declare (201/200/409), list, detail with bindings, delete, and their errors."""

from __future__ import annotations

import pytest

from broker.runtime.runtime import Runtime
from exchanges.models import Exchange

from .conftest import Api, error_code

pytestmark = pytest.mark.django_db(transaction=True)


def test_declare_then_identical_then_different(api: Api, runtime_thread: Runtime) -> None:
    status, body = api.post("/api/exchanges/", {"name": "orders", "type": "topic"})
    assert status == 201
    assert body == {"name": "orders", "type": "topic", "durable": True, "auto_delete": False, "arguments": {}}
    assert "orders" in runtime_thread.broker.exchanges  # live once answered
    assert api.post("/api/exchanges/", {"name": "orders", "type": "topic", "durable": True})[0] == 200
    assert error_code(api.post("/api/exchanges/", {"name": "orders", "type": "fanout"})) == (409, "precondition_failed")
    assert error_code(api.post("/api/exchanges/", {"name": "orders", "type": "topic", "durable": False})) == (
        409,
        "precondition_failed",
    )
    row = Exchange.objects.get(name="orders")
    assert (row.type, row.durable) == ("topic", True)  # the refused redeclarations changed nothing


def test_arguments_take_part_in_identity(api: Api, runtime_thread: Runtime) -> None:
    assert api.post("/api/exchanges/", {"name": "x", "type": "direct", "arguments": {"a": 1}})[0] == 201
    assert api.post("/api/exchanges/", {"name": "x", "type": "direct", "arguments": {"a": 1}})[0] == 200
    assert error_code(api.post("/api/exchanges/", {"name": "x", "type": "direct", "arguments": {"a": True}}))[0] == 409


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "amq.mine", "type": "direct"}, 403, "forbidden"),
        ({"name": "bad name", "type": "direct"}, 400, "invalid"),
        ({"name": "x" * 256, "type": "direct"}, 400, "invalid"),
        ({"name": "", "type": "direct"}, 400, "invalid"),
        ({"name": "ok", "type": "nope"}, 400, "invalid"),
        ({"name": "ok"}, 400, "invalid"),
        ({"type": "direct"}, 400, "invalid"),
        ({"name": "ok", "type": "direct", "durable": "maybe"}, 400, "invalid"),
        ({"name": "ok", "type": "direct", "arguments": [1]}, 400, "invalid"),
    ],
)
def test_declare_refused(api: Api, body: dict[str, object], status: int, code: str) -> None:
    assert error_code(api.post("/api/exchanges/", body)) == (status, code)
    assert not Exchange.objects.filter(name__in=["ok", "amq.mine"]).exists()


@pytest.mark.parametrize("body", [[1, 2], "text", 3, None])
def test_body_must_be_an_object(api: Api, body: object) -> None:
    response = api.client.post("/api/exchanges/", body, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid")


def test_malformed_json_is_invalid(api: Api) -> None:
    response = api.client.post("/api/exchanges/", "{nope", content_type="application/json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid")


def test_list_includes_the_default_exchange(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/exchanges/", {"name": "zeta", "type": "fanout"})
    status, body = api.get("/api/exchanges/")
    assert status == 200
    names = [exchange["name"] for exchange in body]
    assert names == sorted(names) and {"amq.default", "zeta"} <= set(names)
    default = next(exchange for exchange in body if exchange["name"] == "amq.default")
    assert default == {"name": "amq.default", "type": "direct", "durable": True, "auto_delete": False, "arguments": {}}


def test_detail_lists_bindings(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/exchanges/", {"name": "ex.1", "type": "direct"})
    api.post("/api/queues/", {"name": "q1"})
    _, binding = api.post("/api/bindings/", {"exchange": "ex.1", "queue": "q1", "binding_key": "k"})
    status, body = api.get("/api/exchanges/ex.1/")
    assert status == 200
    assert body["bindings"] == [
        {"id": binding["id"], "exchange": "ex.1", "queue": "q1", "destination_exchange": None, "binding_key": "k",
         "arguments": {}}
    ]
    assert body["type"] == "direct"


def test_default_exchange_detail_has_no_bindings(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/queues/", {"name": "q1"})
    status, body = api.get("/api/exchanges/amq.default/")
    assert (status, body["name"], body["type"], body["bindings"]) == (200, "amq.default", "direct", [])


def test_names_with_dots_colons_and_dashes(api: Api, runtime_thread: Runtime) -> None:
    name = "a.b:c-d_e"
    assert api.post("/api/exchanges/", {"name": name, "type": "headers"})[0] == 201
    assert api.get(f"/api/exchanges/{name}/")[1]["name"] == name
    assert api.delete(f"/api/exchanges/{name}/")[0] == 204


def test_detail_missing_is_not_found(api: Api) -> None:
    assert error_code(api.get("/api/exchanges/nope/")) == (404, "not_found")


def test_delete_removes_exchange_and_its_bindings(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/exchanges/", {"name": "gone", "type": "fanout"})
    api.post("/api/queues/", {"name": "q1"})
    api.post("/api/bindings/", {"exchange": "gone", "queue": "q1"})
    assert api.delete("/api/exchanges/gone/") == (204, None)
    assert "gone" not in runtime_thread.broker.exchanges
    assert not runtime_thread.broker.bindings
    assert api.get("/api/bindings/")[1] == []
    assert error_code(api.delete("/api/exchanges/gone/")) == (404, "not_found")


@pytest.mark.parametrize("name", ["amq.default", "amq.direct", "amq.topic"])
def test_delete_broker_exchanges_is_forbidden(api: Api, name: str) -> None:
    Exchange.objects.get_or_create(name="amq.direct", defaults={"type": "direct"})
    assert error_code(api.delete(f"/api/exchanges/{name}/")) == (403, "forbidden")
    assert Exchange.objects.filter(name="amq.direct").exists()


def test_without_trailing_slash_post_is_served_not_redirected(api: Api, runtime_thread: Runtime) -> None:
    response = api.client.post("/api/exchanges", {"name": "noslash", "type": "direct"}, format="json")
    assert response.status_code == 201
    assert api.client.get("/api/exchanges/noslash").status_code == 200
    assert api.client.post("/api/exchanges/noslash/publish", {"body": 1}, format="json").status_code == 200


def test_browsable_api(api: Api) -> None:
    for path in ("/api/", "/api/exchanges/", "/api/queues/", "/api/bindings/", "/api/exchanges/amq.default/"):
        response = api.client.get(path, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, path
        assert b"<html" in response.content


def test_the_browsable_form_can_leave_durable_unticked(api: Api, runtime_thread: Runtime) -> None:
    form = {"csrfmiddlewaretoken": "token"}  # what the browsable API's forms carry
    unticked = api.client.post("/api/exchanges/", {**form, "name": "form-off", "type": "direct"}, format="multipart")
    assert (unticked.status_code, unticked.json()["durable"]) == (201, False)
    ticked = api.client.post(
        "/api/exchanges/", {"name": "form-on", "type": "direct", "durable": "true"}, format="multipart"
    )
    assert (ticked.status_code, ticked.json()["durable"]) == (201, True)
    assert api.post("/api/exchanges/", {"name": "json", "type": "direct"})[1]["durable"] is True  # the default


def test_api_root_has_a_title_and_points_to_the_docs(api: Api) -> None:
    page = api.client.get("/api/", HTTP_ACCEPT="text/html").content.decode()
    assert "<h1>Pub/Sub broker API</h1>" in page and "Api Root" not in page
    assert '<a href="/api/docs/">/api/docs/</a>' in page and "docs/protocol.md" in page
    assert api.client.options("/api/").json()["name"] == "Pub/Sub broker API"


def test_api_root_links_to_the_documented_urls(api: Api) -> None:
    status, body = api.get("/api/")
    assert status == 200
    assert body == {
        "exchanges": "http://testserver/api/exchanges/",
        "queues": "http://testserver/api/queues/",
        "bindings": "http://testserver/api/bindings/",
    }


def test_an_alternate_exchange_is_named_as_exchanges_are(api: Api, runtime_thread: Runtime) -> None:
    """`"alternate-exchange": "bad name!"` was stored (201): an alternate no exchange can
    ever be, so the unroutable messages were dropped without a word."""
    from django.core.exceptions import ValidationError

    for bad in ("bad name!", "x" * 256, "a/b"):
        status, body = api.post("/api/exchanges/", {"name": "e3", "type": "direct", "arguments": {"alternate-exchange": bad}})
        assert (status, body["error"]["code"]) == (400, "invalid"), bad
        assert body["error"]["fields"]["arguments"][0].startswith("alternate-exchange: must be 1 to 255 characters")
        with pytest.raises(ValidationError) as refused:
            Exchange(name="e3", type="direct", arguments={"alternate-exchange": bad}).full_clean()  # the admin's form
        assert set(refused.value.message_dict) == {"arguments"}
    assert not Exchange.objects.filter(name="e3").exists()
    for number, good in enumerate(("", "amq.direct", "elsewhere")):  # "": the default exchange
        declared = {"name": f"e{number}", "type": "direct", "arguments": {"alternate-exchange": good}}
        assert api.post("/api/exchanges/", declared)[0] == 201, good

    # Stored so by an earlier version: declared again as it is, as its clients do at start-up.
    Exchange.objects.create(name="old", type="direct", arguments={"alternate-exchange": "bad name!"})
    assert api.post("/api/exchanges/", {"name": "old", "type": "direct", "arguments": {"alternate-exchange": "bad name!"}})[0] == 200
