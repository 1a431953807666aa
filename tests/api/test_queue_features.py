"""RabbitMQ's queue and exchange arguments through the HTTP API and the JSON WebSocket:
declared, refused with `invalid` when malformed, and a full `reject-publish` queue answers
its publisher `queue_full` (409), not silence."""

from __future__ import annotations

import httpx
import pytest
from channels.testing import WebsocketCommunicator

from broker.runtime.runtime import Runtime
from broker_project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PUBLISH = "/api/exchanges/amq.default/publish/"


async def test_a_full_reject_publish_queue_answers_409_queue_full(http: httpx.AsyncClient, runtime: Runtime) -> None:
    answer = await http.post("/api/queues/", json={"name": "capped", "arguments": {"x-max-length": 1, "x-overflow": "reject-publish"}})
    assert answer.status_code == 201, answer.text
    assert (await http.post(PUBLISH, json={"routing_key": "capped", "body": 1})).status_code == 200
    refused = await http.post(PUBLISH, json={"routing_key": "capped", "body": 2})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "queue_full" and "capped" in refused.json()["error"]["message"]
    assert runtime.broker.queues["capped"].depth == 1


async def test_over_the_websocket_the_publish_gets_an_error_frame(http: httpx.AsyncClient, runtime: Runtime) -> None:
    await http.post("/api/queues/", json={"name": "capped", "arguments": {"x-max-length": 0, "x-overflow": "reject-publish"}})
    client = WebsocketCommunicator(application, "/ws")
    assert (await client.connect())[0]
    await client.send_json_to({"type": "publish", "id": "p1", "exchange": "", "routing_key": "capped", "body": 1})
    answer = await client.receive_json_from()
    assert (answer["type"], answer["id"], answer["code"]) == ("error", "p1", "queue_full")
    await client.disconnect()


async def test_malformed_arguments_are_invalid_and_nothing_is_declared(http: httpx.AsyncClient, runtime: Runtime) -> None:
    bad_exchange = await http.post("/api/exchanges/", json={"name": "x", "type": "direct", "arguments": {"alternate-exchange": 1}})
    assert bad_exchange.status_code == 400 and bad_exchange.json()["error"]["code"] == "invalid"
    assert (await http.get("/api/exchanges/x/")).status_code == 404
    bad_queue = await http.post("/api/queues/", json={"name": "w", "arguments": {"x-delivery-limit": "3"}})
    assert bad_queue.status_code == 400 and "x-delivery-limit" in bad_queue.text
    assert (await http.get("/api/queues/w/")).status_code == 404


async def test_an_alternate_exchange_declared_through_the_api_takes_unroutable_messages(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert (await http.post("/api/exchanges/", json={"name": "spare", "type": "fanout"})).status_code == 201
    answer = await http.post("/api/exchanges/", json={"name": "main", "type": "direct", "arguments": {"alternate-exchange": "spare"}})
    assert answer.status_code == 201
    assert (await http.post("/api/bindings/", json={"exchange": "spare", "queue": "q"})).status_code == 201
    published = await http.post("/api/exchanges/main/publish/", json={"routing_key": "nobody", "body": 1})
    assert published.json()["routed"] == 1 and runtime.broker.queues["q"].depth == 1


async def test_a_delayed_headers_exchange_s_bindings_need_x_match(http: httpx.AsyncClient, runtime: Runtime) -> None:
    answer = await http.post("/api/exchanges/", json={"name": "later", "type": "x-delayed-message",
                                                      "arguments": {"x-delayed-type": "headers"}})
    assert answer.status_code == 201
    refused = await http.post("/api/bindings/", json={"exchange": "later", "queue": "q", "arguments": {"x-match": "most"}})
    assert refused.status_code == 400 and "x-match" in refused.text
    assert (await http.post("/api/bindings/", json={"exchange": "later", "queue": "q",
                                                     "arguments": {"x-match": "any", "k": 1}})).status_code == 201
    no_type = await http.post("/api/exchanges/", json={"name": "later2", "type": "x-delayed-message"})
    assert no_type.status_code == 400 and "x-delayed-type" in no_type.text
    assert (await http.get("/api/queues/amq.delayed.later2/")).status_code == 404


async def test_a_delayed_exchange_s_holding_queue_takes_no_binding(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """Answered 201 and kept in the database while the router refused it: listed, routing nothing."""
    assert (await http.post("/api/exchanges/", json={"name": "later", "type": "x-delayed-message",
                                                     "arguments": {"x-delayed-type": "direct"}})).status_code == 201
    assert (await http.post("/api/exchanges/", json={"name": "fx", "type": "fanout"})).status_code == 201
    refused = await http.post("/api/bindings/", json={"exchange": "fx", "queue": "amq.delayed.later"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert (await http.get("/api/bindings/", params={"exchange": "fx"})).json() == []


async def test_a_delayed_exchange_s_holding_queue_is_deleted_with_its_exchange_only(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Deleted alone (204), it lost the waiting messages, and the exchange routed every
    later one at once, without its delay."""
    assert (await http.post("/api/exchanges/", json={"name": "later", "type": "x-delayed-message",
                                                     "arguments": {"x-delayed-type": "direct"}})).status_code == 201
    await http.post("/api/queues/", json={"name": "due"})
    await http.post("/api/bindings/", json={"exchange": "later", "queue": "due", "binding_key": "k"})
    message = {"routing_key": "k", "body": 1, "headers": {"x-delay": 60000}}
    assert (await http.post("/api/exchanges/later/publish/", json=message)).status_code == 200
    refused = await http.delete("/api/queues/amq.delayed.later/")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    held = (await http.get("/api/queues/amq.delayed.later/")).json()
    assert held["messages"] == 1
    assert (await http.get("/api/queues/due/")).json()["messages"] == 0
    assert (await http.delete("/api/exchanges/later/")).status_code == 204
    assert (await http.get("/api/queues/amq.delayed.later/")).status_code == 404


async def test_a_delayed_exchange_s_name_leaves_room_for_its_holding_queue_s(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """`amq.delayed.` and a 250-character name made a queue name past 255 characters."""
    longest = 255 - len("amq.delayed.")
    for name, status in (("d" * (longest + 1), 400), ("d" * longest, 201)):
        answer = await http.post("/api/exchanges/", json={"name": name, "type": "x-delayed-message",
                                                          "arguments": {"x-delayed-type": "direct"}})
        assert answer.status_code == status, answer.text
    assert (await http.get(f"/api/exchanges/{'d' * (longest + 1)}/")).status_code == 404
    assert (await http.get(f"/api/queues/amq.delayed.{'d' * longest}/")).status_code == 200
