"""Pages of /api/queues/, /api/exchanges/ and /api/bindings/ (common/paging.py)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.runtime.runtime import Runtime
from queues.models import Queue

from .conftest import Api, error_code, subscribe_private

pytestmark = pytest.mark.django_db(transaction=True)

ENVELOPE = {"items", "page", "page_size", "page_count", "item_count", "filtered_count", "total_count"}


def names(body: dict[str, Any]) -> list[str]:
    return [item["name"] for item in body["items"]]


def test_a_page_of_queues_merges_stored_and_private_ones_by_name_with_their_counts(
    api: Api, runtime_thread: Runtime
) -> None:
    for name in ("e", "d", "c", "b", "a"):
        assert api.post("/api/queues/", {"name": name})[0] == 201
    api.post("/api/exchanges/", {"name": "news", "type": "fanout"})
    private = sorted(subscribe_private(runtime_thread, "news")[1] for _ in range(2))
    api.post("/api/exchanges/amq.default/publish/", {"routing_key": "c", "body": 1})
    whole = [queue["name"] for queue in api.get("/api/queues/")[1]]
    assert whole == sorted(["a", "b", "c", "d", "e", *private])  # "a", the two "amq.gen-", "b", ...

    pages = [api.get("/api/queues/", page=n, page_size=3) for n in (1, 2, 3, 4)]
    assert all(status == 200 and set(body) == ENVELOPE for status, body in pages)
    assert [names(body) for _, body in pages] == [whole[0:3], whole[3:6], whole[6:7], []]
    first = pages[0][1]
    assert (first["page"], first["page_size"], first["page_count"], first["item_count"]) == (1, 3, 3, 3)
    assert first["filtered_count"] == first["total_count"] == 7
    on_page = {item["name"]: item for _, body in pages for item in body["items"]}
    assert on_page["c"]["messages_ready"] == 1 and on_page["d"]["messages_ready"] == 0  # the router's counts
    assert on_page[private[0]]["exclusive"] is True and on_page[private[0]]["consumers"] == 1
    assert on_page["a"]["exclusive"] is False


def test_the_name_filter_keeps_the_names_that_contain_it_in_any_case(
    api: Api, runtime_thread: Runtime
) -> None:
    for name in ("orders.eu", "orders.us", "Audit", "billing"):
        api.post("/api/queues/", {"name": name})
    api.post("/api/exchanges/", {"name": "news", "type": "fanout"})
    private = subscribe_private(runtime_thread, "news")[1]

    _, body = api.get("/api/queues/", name="ORDERS")
    assert names(body) == ["orders.eu", "orders.us"]
    assert (body["filtered_count"], body["total_count"], body["page"], body["page_size"]) == (2, 5, 1, 100)
    assert names(api.get("/api/queues/", name="amq.GEN")[1]) == [private]
    assert names(api.get("/api/queues/", name="s.E", use_regex="false")[1]) == ["orders.eu"]  # as RabbitMQ's clients send it
    _, nothing = api.get("/api/queues/", name="zzz")
    assert (nothing["items"], nothing["page_count"], nothing["filtered_count"]) == ([], 0, 0)


def test_a_page_of_queues_may_be_of_declared_or_of_private_ones_only(api: Api, runtime_thread: Runtime) -> None:
    for name in ("e-target", "other"):
        api.post("/api/queues/", {"name": name})
    api.post("/api/exchanges/", {"name": "news", "type": "fanout"})
    private = sorted(subscribe_private(runtime_thread, "news")[1] for _ in range(3))
    _, declared = api.get("/api/queues/", name="e", exclusive="false")
    assert names(declared) == ["e-target", "other"]  # "amq.gen-" names hold an "e" too
    assert (declared["filtered_count"], declared["total_count"]) == (2, 5)
    _, only_private = api.get("/api/queues/", exclusive="true", page_size=2)
    assert names(only_private) == private[:2] and only_private["filtered_count"] == 3
    assert error_code(api.get("/api/queues/", exclusive="maybe")) == (400, "invalid")


def test_the_detail_of_a_private_queue_is_that_queue_s(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/exchanges/", {"name": "news", "type": "fanout"})
    private = [subscribe_private(runtime_thread, "news")[1] for _ in range(3)]
    for name in private:
        status, body = api.get(f"/api/queues/{name}/")
        assert status == 200 and body["name"] == name and body["exclusive"] is True
    assert error_code(api.get("/api/queues/amq.gen-none/")) == (404, "not_found")


def test_a_page_without_a_router_has_stored_queues_with_unknown_counts(api: Api) -> None:
    Queue.objects.create(name="q")
    status, body = api.get("/api/queues/", page=1)
    assert status == 200 and names(body) == ["q"] and body["items"][0]["messages"] is None


def test_a_page_of_exchanges_has_the_default_one_among_them(api: Api, runtime_thread: Runtime) -> None:
    for name in ("b.x", "a.x", "c.y"):
        api.post("/api/exchanges/", {"name": name, "type": "topic"})
    _, body = api.get("/api/exchanges/", page_size=2, page=1)
    assert names(body) == ["a.x", "amq.default"] and body["page_count"] == 2 and body["total_count"] == 4
    assert names(api.get("/api/exchanges/", page_size=2, page=2)[1]) == ["b.x", "c.y"]
    assert body["items"][1]["type"] == "direct"
    _, filtered = api.get("/api/exchanges/", name=".X")
    assert names(filtered) == ["a.x", "b.x"] and filtered["filtered_count"] == 2
    assert [row["name"] for row in api.get("/api/exchanges/")[1]] == ["a.x", "amq.default", "b.x", "c.y"]


def test_a_page_of_bindings_keeps_their_order_and_filters(api: Api, runtime_thread: Runtime) -> None:
    api.post("/api/exchanges/", {"name": "x", "type": "direct"})
    api.post("/api/exchanges/", {"name": "y", "type": "direct"})
    for n in range(5):
        api.post("/api/queues/", {"name": f"q{n}"})
        api.post("/api/bindings/", {"exchange": "x" if n < 4 else "y", "queue": f"q{n}", "binding_key": f"k{n}"})
    _, body = api.get("/api/bindings/", exchange="x", page=2, page_size=3)
    assert [binding["binding_key"] for binding in body["items"]] == ["k3"]
    # `total_count` is every binding, before the filter, as for the other lists (it said 4).
    assert (body["page_count"], body["filtered_count"], body["total_count"], body["item_count"]) == (2, 4, 5, 1)
    assert len(api.get("/api/bindings/", page="0001")[1]["items"]) == 5
    assert error_code(api.get("/api/bindings/", name="q")) == (400, "invalid")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": "0"}, "page"),
        ({"page": "two"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "1" * 40}, "page"),
        ({"page_size": "501"}, "page_size"),
        ({"page_size": "0"}, "page_size"),
        ({"page": "1000000000"}, "page"),
        ({"use_regex": "yes"}, "use_regex"),
        ({"name": "^(.|.)*!", "use_regex": "true"}, "use_regex"),  # no regular expression runs on the names
    ],
)
@pytest.mark.parametrize("path", ["/api/queues/", "/api/exchanges/", "/api/bindings/"])
def test_bad_paging_parameters_are_refused_naming_the_field(
    api: Api, runtime_thread: Runtime, path: str, params: dict[str, str], field: str
) -> None:
    status, body = api.get(path, **params)
    assert status == 400 and body["error"]["code"] == "invalid"
    first = "name" if path == "/api/bindings/" and "name" in params else field  # bindings have no name
    assert first in body["error"]["fields"], body
