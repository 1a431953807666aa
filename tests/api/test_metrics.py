"""`GET /metrics` (broker/transport/metrics.py): every family, read by prometheus-client's own
parser, with values that match the API's after a known workload; and who may scrape."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from prometheus_client.parser import text_string_to_metric_families

from access import asgi as access_asgi
from broker.engine.queues import AckMode
from broker.router import registry
from broker.runtime import memory
from broker.runtime.metrics import EngineMetrics
from broker.runtime.runtime import Runtime
from broker.transport import census
from tests.access.helpers import make_user
from tests.conftest import Sink
from tests.engine.helpers import queue as declare_queue
from tests.engine.helpers import send

pytestmark = pytest.mark.django_db(transaction=True)

PUBLISH = "/api/exchanges/amq.default/publish/"


@pytest.fixture(autouse=True)
def fresh_token_cache() -> Iterator[None]:
    access_asgi.token_cache.clear()
    yield
    access_asgi.token_cache.clear()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family name -> type, (sample name, labels) -> value), as Prometheus reads them."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


async def scrape(http: httpx.AsyncClient, **headers: str) -> tuple[dict[str, str], Samples]:
    answer = await http.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(answer.text)


async def test_every_family_is_there_with_the_api_s_counts(http: httpx.AsyncClient, runtime: Runtime) -> None:
    for n in range(5):
        assert (await http.post(PUBLISH, json={"routing_key": "q", "body": n})).status_code == 200
    await http.post(PUBLISH, json={"routing_key": "nowhere", "body": 0})
    sink = Sink()
    connection = runtime.connect(sink)
    runtime.subscribe(connection, subscription="s", subscription_json='"s"', ack_mode=AckMode.CLIENT, prefetch=3, queue="q")
    runtime.ack(connection, 1, multiple=False)  # then 4 goes out
    runtime.nack(connection, 2, multiple=False, requeue=True)  # back at the head, out again as 5
    runtime.nack(connection, 3, multiple=False, requeue=False)  # no dead-letter exchange: dropped; 5 goes out

    types, samples = await scrape(http)
    q = (("queue", "q"),)
    api = (await http.get("/api/queues/q/")).json()
    assert samples[("pubsub_queue_messages_ready", q)] == api["messages_ready"] == 0
    assert samples[("pubsub_queue_messages_unacknowledged", q)] == api["messages_unacknowledged"] == 3
    assert samples[("pubsub_queue_consumers", q)] == api["consumers"] == 1
    assert samples[("pubsub_queue_messages_published_total", q)] == 5
    assert samples[("pubsub_queue_messages_delivered_total", q)] == 6
    assert samples[("pubsub_queue_messages_redelivered_total", q)] == 1
    assert samples[("pubsub_queue_messages_acknowledged_total", q)] == 1
    assert samples[("pubsub_queue_messages_nacked_total", q)] == 2
    assert samples[("pubsub_queue_messages_dropped_total", q)] == 1
    assert samples[("pubsub_queue_messages_dead_lettered_total", q)] == 0
    assert samples[("pubsub_queue_messages_refused_total", q)] == 0
    default = (("exchange", "amq.default"),)
    assert samples[("pubsub_exchange_messages_published_total", default)] == 6
    assert samples[("pubsub_exchange_messages_unroutable_total", default)] == 1
    assert samples[("pubsub_node_role", (("role", "router"),))] == 1
    assert samples[("pubsub_node_role", (("role", "edge"),))] == 0
    assert samples[("pubsub_store_reachable", ())] == 1
    assert samples[("pubsub_store_commit_seconds_count", ())] >= 1  # the persistent publishes' commits
    assert samples[("pubsub_store_commit_messages_sum", ())] >= 5
    assert types["pubsub_store_commit_seconds"] == types["pubsub_store_commit_messages"] == "histogram"
    assert types["pubsub_queue_messages_published"] == "counter"
    assert types["process_resident_memory_bytes"] == "gauge"
    for protocol, transport in (("json", "websocket"), ("stomp", "websocket"), ("stomp", "tcp")):
        labels = (("protocol", protocol), ("transport", transport))
        assert ("pubsub_connections", labels) in samples and ("pubsub_subscriptions", labels) in samples


async def test_a_websocket_client_is_counted_with_its_subscriptions(http: httpx.AsyncClient, runtime: Runtime) -> None:
    from channels.testing import WebsocketCommunicator

    from broker_project.asgi import application

    client = WebsocketCommunicator(application, "/ws")
    assert (await client.connect())[0]
    await client.send_json_to({"type": "subscribe", "id": "s1", "queue": "q"})
    assert (await client.receive_json_from())["type"] == "subscribed"
    _, samples = await scrape(http)
    json_ws = (("protocol", "json"), ("transport", "websocket"))
    assert samples[("pubsub_connections", json_ws)] == 1
    assert samples[("pubsub_subscriptions", json_ws)] == 1
    await client.disconnect()
    _, samples = await scrape(http)
    assert samples[("pubsub_connections", json_ws)] == 0


async def test_without_anonymous_access_a_scrape_needs_a_token(
    http: httpx.AsyncClient, runtime: Runtime, settings: Any
) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False
    refused = await http.get("/metrics")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    wrong = await http.get("/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    _, token = await database_sync_to_async(make_user)("prometheus")
    _, samples = await scrape(http, authorization=f"Bearer {token}")
    assert samples[("pubsub_queue_messages_ready", (("queue", "q"),))] == 0


async def test_a_scrape_takes_the_handlers_token_as_the_api_does(
    http: httpx.AsyncClient, runtime: Runtime, settings: Any
) -> None:
    """It was 401 here, and on the publish fast path, while Django's doors took it."""
    from access.handler_token import handler_token

    settings.BROKER_ALLOW_ANONYMOUS = False
    _, samples = await scrape(http, authorization=f"Bearer {handler_token()}")
    assert samples[("pubsub_queue_messages_ready", (("queue", "q"),))] == 0
    answer = await http.post(
        "/api/exchanges/amq.default/publish/", json={"routing_key": "q", "body": 1},
        headers={"authorization": f"Bearer {handler_token()}"},
    )
    assert answer.status_code == 200 and answer.json()["routed"] == 1


async def test_an_anonymous_scrape_from_a_host_outside_allowed_hosts_is_refused(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """As Django answers: else a page of another site could read the queues' names and counts
    through a name of its own that resolves here (DNS rebinding)."""
    refused = await http.get("/metrics", headers={"host": "evil.example:8060"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid")
    assert "ALLOWED_HOSTS" in refused.json()["error"]["message"]
    # A scrape with a token is the scraper's own: Prometheus names each node by its address.
    _, token = await database_sync_to_async(make_user)("prometheus")
    by_address = await http.get("/metrics", headers={"host": "10.0.0.11:8060", "authorization": f"Bearer {token}"})
    assert by_address.status_code == 200


async def test_an_authorization_header_of_another_scheme_does_not_skip_the_host_check(
    http: httpx.AsyncClient, runtime: Runtime, settings: Any
) -> None:
    """A page of another site can send `Authorization: Basic ...`: it carries no API token, so
    the scrape is anonymous, as the rest of the API takes it, and its Host must be allowed."""
    basic = {"authorization": "Basic Zm9vOmJhcg=="}
    refused = await http.get("/metrics", headers={"host": "evil.example", **basic})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid")
    assert "pubsub_queue" not in refused.text
    _, samples = await scrape(http, **basic)  # an allowed Host: an anonymous scrape
    assert samples[("pubsub_queue_messages_ready", (("queue", "q"),))] == 0
    settings.BROKER_ALLOW_ANONYMOUS = False
    anonymous = await http.get("/metrics", headers=basic)
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthorized")


async def test_a_malformed_or_unknown_token_is_refused_whatever_the_host(http: httpx.AsyncClient, runtime: Runtime) -> None:
    for authorization in ("Bearer", "Bearer two tokens", "Token nope"):
        refused = await http.get("/metrics", headers={"host": "evil.example", "authorization": authorization})
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized"), authorization


async def test_health_says_when_the_message_store_does_not_answer(http: httpx.AsyncClient, runtime: Runtime) -> None:
    healthy = await http.get("/health")
    assert healthy.status_code == 200 and healthy.json()["store"] is True
    assert runtime.store_watch is not None
    runtime.store_watch.failed(OSError("connection refused"))
    sick = await http.get("/health")
    assert sick.status_code == 503
    assert (sick.json()["router"], sick.json()["store"]) == (True, False)
    _, samples = await scrape(http)
    assert samples[("pubsub_store_reachable", ())] == 0
    runtime.store_watch.answered()
    assert (await http.get("/health")).status_code == 200


async def test_a_scrape_reads_the_sessions_and_the_node_on_the_loop_not_in_its_writing_thread(
    http: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exposition is written in a thread while the loop opens and closes sessions: the census's
    sets counted there raised "Set changed size during iteration" now and then."""
    loop_thread = threading.get_ident()
    readers: list[tuple[str, int]] = []

    class Session:
        def subscription_count(self) -> int:
            readers.append(("census", threading.get_ident()))
            return 2

    def recorded(name: str, read: Callable[[], object]) -> Callable[[], object]:
        def reading() -> object:
            readers.append((name, threading.get_ident()))
            return read()
        return reading

    monkeypatch.setattr(registry, "current", recorded("registry", registry.current))
    monkeypatch.setattr(memory, "guard", recorded("guard", memory.guard))
    session = Session()
    census.opened(session, "stomp", "tcp")
    try:
        _, samples = await scrape(http)
    finally:
        census.closed(session)
    stomp_tcp = (("protocol", "stomp"), ("transport", "tcp"))
    assert (samples[("pubsub_connections", stomp_tcp)], samples[("pubsub_subscriptions", stomp_tcp)]) == (1, 2)
    assert {name for name, _ in readers} == {"census", "registry", "guard"}
    assert [(name, thread) for name, thread in readers if thread != loop_thread] == []


def test_names_that_need_escaping_stay_one_label_value() -> None:
    from broker.engine.broker import Broker

    broker = Broker()
    odd = 'a "quoted" \\ back\nslash'
    declare_queue(broker, odd)
    send(broker, odd, 1)
    metrics = EngineMetrics()
    _, samples = parse(metrics.text(metrics.snapshot(broker)))
    assert samples[("pubsub_queue_messages_ready", (("queue", odd),))] == 1
