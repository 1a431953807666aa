"""The message browser over HTTP (queues/browser.py, broker/runtime/browser.py): pages that
take nothing, filters, delete, move, copy and replay, and the rights each one needs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async

from access import asgi as access_asgi
from broker.engine.queues import AckMode
from broker.runtime.runtime import Runtime
from tests.access.helpers import make_user
from tests.conftest import Sink
from tests.e2e.harness import DEAD_LETTER_TOPOLOGY

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_token_cache() -> Iterator[None]:
    access_asgi.token_cache.clear()
    yield
    access_asgi.token_cache.clear()


async def post(http: httpx.AsyncClient, path: str, data: Any, **headers: str) -> tuple[int, Any]:
    answer = await http.post(path, json=data, headers=headers)
    return answer.status_code, answer.json()


async def dead_letters(http: httpx.AsyncClient, runtime: Runtime, count: int = 4) -> None:
    """`count` orders published to exchange `orders` (key `new`), rejected in `work`, now in
    `dead`: bodies {"n": i, "country": "fr" for even i, else "de"}."""
    for path, data in DEAD_LETTER_TOPOLOGY:
        status, body = await post(http, path, data)
        assert status == 201, body
    for n in range(count):
        body = {"n": n, "country": "fr" if n % 2 == 0 else "de"}
        assert (await post(http, "/api/exchanges/orders/publish/", {"routing_key": "new", "body": body}))[0] == 200
    connection = runtime.connect(Sink())
    runtime.subscribe(connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.CLIENT, prefetch=0,
                      queue="work")
    runtime.nack(connection, count, multiple=True, requeue=False)
    runtime.disconnect(connection)


def bodies(page: dict[str, Any]) -> list[Any]:
    return [message["body"]["n"] for message in page["messages"]]


async def test_a_page_takes_nothing_and_shows_unacknowledged_messages_marked(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    for n in range(5):
        await post(http, "/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": {"n": n}})
    connection = runtime.connect(Sink())
    runtime.subscribe(connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.CLIENT, prefetch=2,
                      queue="q")
    page = (await http.get("/api/queues/q/messages/", params={"limit": 3})).json()
    assert (page["count"], page["complete"], page["offset"]) == (5, True, 0)
    assert [(m["body"]["n"], m["state"], m["redelivered"]) for m in page["messages"]] == [
        (0, "unacked", False), (1, "unacked", False), (2, "ready", False),
    ]
    rest = (await http.get("/api/queues/q/messages/", params={"offset": 3})).json()
    assert bodies(rest) == [3, 4]
    again = (await http.get("/api/queues/q/messages/")).json()
    assert bodies(again) == [0, 1, 2, 3, 4] and not any(m["redelivered"] for m in again["messages"])
    assert runtime.broker.queues["q"].depth == 3


async def test_filters_by_json_path_header_and_routing_key(http: httpx.AsyncClient, runtime: Runtime) -> None:
    await dead_letters(http, runtime)
    french = (await http.get("/api/queues/dead/messages/", params={"path": "country", "value": "fr"})).json()
    assert (french["count"], bodies(french)) == (2, [0, 2])
    quoted = (await http.get("/api/queues/dead/messages/", params={"path": "n", "value": "3"})).json()
    assert bodies(quoted) == [3]
    by_header = (await http.get("/api/queues/dead/messages/",
                                params={"header_name": "x-first-death-reason", "header_value": "rejected"})).json()
    assert by_header["count"] == 4
    assert (await http.get("/api/queues/dead/messages/", params={"routing_key": "old"})).json()["count"] == 0
    bad = await http.get("/api/queues/dead/messages/", params={"limit": "lots"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"


async def test_replay_sends_the_matches_back_to_their_origin_and_leaves_the_others(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    await dead_letters(http, runtime)
    status, done = await post(http, "/api/queues/dead/messages/replay/",
                              {"all": True, "filter": {"path": "country", "value": "fr"}})
    assert (status, done) == (200, {"taken": 2, "skipped": 0, "routed": 2, "complete": True})
    work = (await http.get("/api/queues/work/messages/")).json()
    assert bodies(work) == [0, 2]
    assert bodies((await http.get("/api/queues/dead/messages/")).json()) == [1, 3]


async def test_delete_move_and_copy_selected_messages(http: httpx.AsyncClient, runtime: Runtime) -> None:
    await dead_letters(http, runtime)
    await post(http, "/api/queues/", {"name": "parked"})
    ids = [m["id"] for m in (await http.get("/api/queues/dead/messages/")).json()["messages"]]
    assert (await post(http, "/api/queues/dead/messages/copy/", {"ids": ids[:1], "exchange": "", "routing_key": "parked"}))[1]["taken"] == 1
    assert (await post(http, "/api/queues/dead/messages/move/", {"ids": ids[1:2], "exchange": "", "routing_key": "parked"}))[1]["taken"] == 1
    assert (await post(http, "/api/queues/dead/messages/delete/", {"ids": ids[2:3]}))[1] == {"taken": 1, "skipped": 0, "routed": 0, "complete": True}
    assert bodies((await http.get("/api/queues/dead/messages/")).json()) == [0, 3]
    assert bodies((await http.get("/api/queues/parked/messages/")).json()) == [0, 1]
    again = await post(http, "/api/queues/dead/messages/delete/", {"ids": ids[2:3]})
    assert again[1]["skipped"] == 1  # gone already: nothing happens twice


@pytest.mark.parametrize(("path", "data", "problem"), [
    ("/api/queues/dead/messages/delete/", {}, "ids"),
    ("/api/queues/dead/messages/delete/", {"ids": ["nope"]}, "ids"),
    ("/api/queues/dead/messages/delete/", {"all": True, "filter": {"value": 1}}, "filter"),
    ("/api/queues/dead/messages/move/", {"ids": ["s1"]}, "exchange"),
])
async def test_bad_actions_are_invalid_and_change_nothing(
    http: httpx.AsyncClient, runtime: Runtime, path: str, data: Any, problem: str
) -> None:
    await dead_letters(http, runtime)
    status, body = await post(http, path, data)
    assert (status, body["error"]["code"]) == (400, "invalid") and problem in str(body)
    assert (await http.get("/api/queues/dead/messages/")).json()["count"] == 4


async def test_a_filter_path_with_an_empty_key_is_invalid(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """`country..x` (or `country.`) was a path with an empty key: the page matched nothing,
    and "delete all that match" answered 200, having taken nothing."""
    await dead_letters(http, runtime)
    for path in ("country..x", "country.", ".country"):
        answer = await http.get("/api/queues/dead/messages/", params={"path": path})
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid"), path
        status, body = await post(http, "/api/queues/dead/messages/delete/", {"all": True, "filter": {"path": path}})
        assert (status, body["error"]["code"]) == (400, "invalid") and "filter" in body["error"]["fields"], path
    assert (await http.get("/api/queues/dead/messages/")).json()["count"] == 4


async def test_each_action_needs_its_rights(http: httpx.AsyncClient, runtime: Runtime, settings: Any) -> None:
    await dead_letters(http, runtime)
    settings.BROKER_ALLOW_ANONYMOUS = False
    _, reader = await database_sync_to_async(make_user)("reader", read="dead")
    _, operator = await database_sync_to_async(make_user)("operator", configure="dead", read="dead", write="dlx")
    as_reader, as_operator = {"authorization": f"Bearer {reader}"}, {"authorization": f"Bearer {operator}"}
    assert (await http.get("/api/queues/dead/messages/", headers=as_reader)).json()["count"] == 4
    assert (await http.get("/api/queues/work/messages/", headers=as_reader)).status_code == 403
    status, body = await post(http, "/api/queues/dead/messages/delete/", {"all": True}, **as_reader)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    # The operator may take messages out of `dead`, but not publish to `orders`: a replay is
    # refused whole, naming the exchange, and nothing moves.
    status, body = await post(http, "/api/queues/dead/messages/replay/", {"all": True}, **as_operator)
    assert status == 403 and "orders" in body["error"]["message"]
    status, body = await post(http, "/api/queues/dead/messages/move/",
                              {"all": True, "exchange": "orders", "routing_key": "new"}, **as_operator)
    assert status == 403
    assert (await http.get("/api/queues/dead/messages/", headers=as_operator)).json()["count"] == 4


async def test_a_replay_does_not_follow_an_x_death_its_publisher_wrote(
    http: httpx.AsyncClient, runtime: Runtime, settings: Any
) -> None:
    """Mallory may write to `pub` only. Her `x-death` named `secret`, and an operator's replay
    of `inbox` published her message there: the broker's rights on her behalf. Her header is
    kept, but only an origin the broker recorded when it dead-lettered a message is followed."""
    for path, data in (
        ("/api/exchanges/", {"name": "pub", "type": "fanout"}),
        ("/api/exchanges/", {"name": "secret", "type": "direct"}),
        ("/api/queues/", {"name": "inbox"}),
        ("/api/queues/", {"name": "secretq"}),
        ("/api/bindings/", {"exchange": "pub", "queue": "inbox"}),
        ("/api/bindings/", {"exchange": "secret", "queue": "secretq", "binding_key": "k"}),
    ):
        assert (await post(http, path, data))[0] == 201
    settings.BROKER_ALLOW_ANONYMOUS = False
    _, mallory = await database_sync_to_async(make_user)("mallory", write="^pub$")
    _, operator = await database_sync_to_async(make_user)("operator", configure=".*", write=".*", read=".*")
    as_operator = {"authorization": f"Bearer {operator}"}
    death = {"queue": "secretq", "reason": "rejected", "exchange": "secret", "routing-keys": ["k"], "count": 1}
    status, _ = await post(http, "/api/exchanges/pub/publish/", {"body": "psst", "headers": {"x-death": [death]}},
                           authorization=f"Bearer {mallory}")
    assert status == 200
    status, done = await post(http, "/api/queues/inbox/messages/replay/", {"all": True}, **as_operator)
    assert (status, done) == (200, {"taken": 0, "skipped": 1, "routed": 0, "complete": True})
    assert (await http.get("/api/queues/secretq/messages/", headers=as_operator)).json()["count"] == 0
    (kept,) = (await http.get("/api/queues/inbox/messages/", headers=as_operator)).json()["messages"]
    assert kept["headers"]["x-death"] == [death]


@pytest.mark.parametrize("value", ["²", "１", "-1", "1.5", str(2**31), "1" * 5000, str(10**20)])
async def test_offset_and_limit_must_be_ascii_whole_numbers(http: httpx.AsyncClient, runtime: Runtime, value: str) -> None:
    """"²" passed str.isdigit and then failed int(): a 500; so did 5,000 digits (Python's
    limit); 10**20 could not cross a cluster's link, and wedged the edge that took it."""
    await post(http, "/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": 1})
    for field in ("offset", "limit"):
        response = await http.get("/api/queues/q/messages/", params={field: value})
        assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid")


async def test_a_move_keeps_the_spaces_of_its_routing_key(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """DRF trims a CharField's text by default: the copy went with routing key "x", to
    another queue or none, and the answer gave no sign of it."""
    await post(http, "/api/exchanges/", {"name": "spaced", "type": "direct"})
    await post(http, "/api/queues/", {"name": "to"})
    await post(http, "/api/bindings/", {"exchange": "spaced", "queue": "to", "binding_key": " x"})
    await post(http, "/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": 1})
    _, done = await post(http, "/api/queues/q/messages/move/", {"all": True, "exchange": "spaced", "routing_key": " x"})
    assert done["taken"] == 1
    assert (await http.get("/api/queues/to/")).json()["messages"] == 1


async def test_all_on_a_queue_longer_than_the_scan_says_it_is_not_complete(
    http: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`all: true` takes from the messages looked at; past MAX_SCAN (200,000; 3 here, with the
    queue's window of 1 and the backlog read a row at a time) the answer says so, and acting
    again takes the rest."""
    monkeypatch.setattr("broker.runtime.browser.MAX_SCAN", 3)
    monkeypatch.setattr("broker.runtime.browser.READ_CHUNK", 1)
    runtime.broker.window = 1
    for n in range(5):
        await post(http, "/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": {"n": n}})
    status, done = await post(http, "/api/queues/q/messages/delete/", {"all": True})
    assert (status, done) == (200, {"taken": 3, "skipped": 0, "routed": 0, "complete": False})
    assert (await post(http, "/api/queues/q/messages/delete/", {"all": True}))[1] == {
        "taken": 2, "skipped": 0, "routed": 0, "complete": True
    }
