"""Limits on WebSocket clients (README, "Limits"): origins, frames per second,
connections per address, a slow consumer's unsent data, private queues; each allowed and refused."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from broker.runtime.runtime import Runtime
from broker.transport.limits import (
    ABUSIVE,
    ALLOWED,
    REFUSED,
    FrameBudget,
    frame_id_of,
    text_bytes,
)
from broker.transport.origins import OriginPolicy
from broker.transport.startup import new_router
from broker_project.asgi import application
from storage.store import OrmMessageStore
from tests.eventually import eventually
from tests.ws.conftest import Connect
from tests.ws.helpers import (
    declare_exchange,
    declare_queue,
    publish,
    receive,
    request,
    subscribe,
)

# -- pure parts: no loop, no database -------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def charge(budget: FrameBudget) -> int:
    """What the consumer does per frame."""
    budget.tokens -= 1.0
    return budget.refill() if budget.tokens < 0.0 else ALLOWED


def test_budget_allows_the_burst_then_the_rate() -> None:
    clock = FakeClock()
    budget = FrameBudget(rate=10, burst=5, clock=clock)
    assert [charge(budget) for _ in range(6)] == [ALLOWED] * 5 + [REFUSED]
    clock.now += 0.11  # one frame's worth
    assert [charge(budget) for _ in range(2)] == [ALLOWED, REFUSED]
    clock.now += 60  # refills up to the burst, not beyond
    assert [charge(budget) for _ in range(6)] == [ALLOWED] * 5 + [REFUSED]


def test_budget_calls_a_client_over_ten_times_the_rate_abusive() -> None:
    clock = FakeClock()
    budget = FrameBudget(rate=10, burst=10, clock=clock)
    verdicts = [charge(budget) for _ in range(10 + 10 * 10)]
    assert verdicts.count(ALLOWED) == 10 and ABUSIVE not in verdicts  # 10x refused: still only refused
    assert charge(budget) == ABUSIVE


def test_budget_forgets_refusals_of_an_earlier_second() -> None:
    clock = FakeClock()
    budget = FrameBudget(rate=10, burst=10, clock=clock)
    for _ in range(80):
        charge(budget)
    clock.now += 1.05
    verdicts = [charge(budget) for _ in range(90)]
    assert ABUSIVE not in verdicts


def test_frame_id_of_a_refused_frame() -> None:
    assert frame_id_of('{"type": "ping", "id": "p1"}') == "p1"
    assert frame_id_of('{"id": 7}') == 7
    assert frame_id_of('{"id": true}') is None
    assert frame_id_of("not json") is None
    assert frame_id_of("[1]") is None


def test_text_bytes_counts_utf8() -> None:
    assert text_bytes("abc") == 3
    assert text_bytes("é") == 2
    assert text_bytes("€") == 3


@pytest.mark.parametrize(
    ("allowed", "origin", "ok"),
    [
        (["localhost", "127.0.0.1", "[::1]"], None, True),  # not a browser
        (["localhost", "127.0.0.1", "[::1]"], "http://localhost:8060", True),
        (["localhost", "127.0.0.1", "[::1]"], "https://127.0.0.1", True),
        (["localhost", "127.0.0.1", "[::1]"], "http://[::1]:8060", True),
        (["localhost", "127.0.0.1", "[::1]"], "http://evil.example", False),
        (["localhost", "127.0.0.1", "[::1]"], "http://localhost.evil.example", False),
        (["localhost", "127.0.0.1", "[::1]"], "null", False),
        ([".example.com"], "https://app.example.com", True),
        ([".example.com"], "https://example.com", True),
        ([".example.com"], "https://example.com.evil", False),
        (["https://app.example.com"], "https://app.example.com", True),
        (["https://app.example.com"], "http://app.example.com", False),
        (["https://app.example.com:8443"], "https://APP.example.com:8443/", True),
        (["*"], "http://anything.example", True),
    ],
)
def test_origin_policy(allowed: list[str], origin: str | None, ok: bool) -> None:
    assert OriginPolicy(allowed).allows(origin) is ok


# -- origins at the handshake ------------------------------------------------------


@pytest.fixture
def ws_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The `broker.ws` logger does not propagate (settings.LOGGING): listen to it directly."""
    logger = logging.getLogger("broker.ws")
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.INFO)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def communicator(path: str = "/ws", *, origin: str | None = None, address: str | None = None, app: Any = application) -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode())] if origin is not None else []
    client = WebsocketCommunicator(app, path, headers=headers)
    if address is not None:
        client.scope["client"] = (address, 50000)  # read when the application starts, on the first await
    return client


@pytest.mark.django_db(transaction=True)
async def test_a_page_of_an_allowed_host_connects(runtime: Runtime) -> None:
    client = communicator(origin="http://localhost:8060")
    assert (await client.connect())[0]
    assert await request(client, {"type": "ping", "id": 1}) == {"type": "pong", "id": 1}
    await client.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_page_of_another_site_is_refused_at_the_handshake_and_logged_once(
    runtime: Runtime, ws_log: pytest.LogCaptureFixture
) -> None:
    origin = "http://refused-once.example"
    for _ in range(3):
        client = communicator(origin=origin)
        connected, _code = await client.connect()
        assert not connected  # uvicorn answers a close before accept with HTTP 403
        await client.wait(timeout=1)
    lines = {id(r): r for r in ws_log.records if origin in r.getMessage()}  # the handler may sit twice
    assert [r.levelno for r in lines.values()] == [logging.INFO]
    assert not runtime.broker.connections  # the consumer never ran


@pytest.mark.django_db(transaction=True)
async def test_allowed_origins_replace_the_hosts(runtime: Runtime, settings: Any) -> None:
    settings.ALLOWED_ORIGINS = ["https://console.example.com"]
    allowed = communicator(origin="https://console.example.com")
    assert (await allowed.connect())[0]
    await allowed.disconnect()
    refused = communicator(origin="http://localhost:8060")
    assert not (await refused.connect())[0]


# -- frames per second -------------------------------------------------------------


async def closed_with(client: WebsocketCommunicator, timeout: float = 3) -> dict[str, Any]:
    """Read until the server closes; returns the close message."""
    while True:
        output = await client.receive_output(timeout)
        if output["type"] == "websocket.close":
            return output


async def test_frames_over_the_rate_are_refused_and_not_carried_out(
    settings: Any, runtime: Runtime, connect: Connect
) -> None:
    settings.WS_MAX_FRAMES_PER_SECOND = 5
    settings.WS_MAX_FRAMES_BURST = 5
    await declare_queue("q")
    client = await connect()
    for n in range(5):
        assert await request(client, {"type": "ping", "id": n}) == {"type": "pong", "id": n}
    refused = await request(client, {"type": "publish", "id": "p", "routing_key": "q", "body": 1})
    assert (refused["type"], refused["id"], refused["code"]) == ("error", "p", "rate_limited")
    assert runtime.broker.queue_counts("q").messages_ready == 0  # not carried out
    await asyncio.sleep(0.25)  # a frame's worth of tokens, and more
    confirm = await request(client, {"type": "publish", "id": "p2", "routing_key": "q", "body": 1})
    assert (confirm["type"], confirm["routed"]) == ("confirm", 1)


async def test_a_flooding_client_is_closed_with_1008(settings: Any, runtime: Runtime, connect: Connect) -> None:
    settings.WS_MAX_FRAMES_PER_SECOND = 5
    settings.WS_MAX_FRAMES_BURST = 5
    client = await connect()
    for n in range(5 + 5 * 10 + 1):
        await client.send_json_to({"type": "ping", "id": n})
    close = await closed_with(client)
    assert (close["code"], close["reason"]) == (1008, "rate_limited")
    assert not runtime.broker.connections


# -- connections per address ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_connections_per_address_are_limited(runtime: Runtime, settings: Any) -> None:
    settings.MAX_CONNECTIONS_PER_IP = 2
    settings.BROKER_ALLOW_ANONYMOUS = settings.BROKER_ALLOW_ANONYMOUS_SET = True  # for other machines too
    first, second = communicator(address="10.0.0.7"), communicator(address="10.0.0.7")
    assert (await first.connect())[0] and (await second.connect())[0]
    third = communicator(address="10.0.0.7")
    assert (await third.connect())[0]  # accepted, so the client can read the code
    close = await third.receive_output(1)
    assert (close["type"], close["code"], close["reason"]) == ("websocket.close", 1013, "too_many_connections")
    other = communicator(address="10.0.0.8")  # another address has its own count
    assert (await other.connect())[0]
    await first.disconnect()
    again = communicator(address="10.0.0.7")  # a closed connection frees its place
    assert (await again.connect())[0]
    assert await request(again, {"type": "ping", "id": 1}) == {"type": "pong", "id": 1}
    for client in (second, other, again):
        await client.disconnect()


# -- slow consumers --------------------------------------------------------------------


class Stalled:
    """The application behind a client that stops reading: `websocket.send` waits while stalled,
    as uvicorn's does once the socket's buffers are full. A close still goes through."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.reading = asyncio.Event()
        self.reading.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def gated(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                await self.reading.wait()
            await send(message)

        await self.app(scope, receive, gated)


@pytest.mark.parametrize("ack", ["auto", "client"])
async def test_a_consumer_that_does_not_read_is_closed_and_its_messages_requeued(
    settings: Any, runtime: Runtime, connect: Connect, ack: str
) -> None:
    settings.WS_MAX_BUFFERED_BYTES = 20_000
    await declare_queue("slow")
    await declare_queue("fast")
    app = Stalled(application)
    slow = communicator(app=app)
    assert (await slow.connect())[0]
    await subscribe(slow, "s", "slow", ack=ack, prefetch=0)
    fast = await connect()
    await subscribe(fast, "f", "fast", ack="client", prefetch=0)
    app.reading.clear()
    for n in range(100):  # ~300 bytes each: over 20,000 bytes unsent
        await publish(runtime, "", "slow", {"n": n, "pad": "x" * 200}, persistent=False)
        await publish(runtime, "", "fast", {"n": n}, persistent=False)
        await asyncio.sleep(0)  # as between two frames of a publisher: senders run
    close = await slow.receive_output(3)
    assert (close["type"], close["code"], close["reason"]) == ("websocket.close", 1008, "slow_consumer")
    await eventually(lambda: runtime.broker.queue_counts("slow").consumers == 0, what="the slow consumer gone")
    counts = runtime.broker.queue_counts("slow")
    if ack == "client":  # everything delivered but unacknowledged is back, the rest was never taken
        assert (counts.messages_ready, counts.messages_unacknowledged) == (100, 0)
    else:  # auto-ack: delivered means settled; what was not delivered waits in the queue
        assert counts.messages_unacknowledged == 0 and counts.messages_ready < 100
    got = [(await receive(fast))["body"]["n"] for _ in range(100)]  # everyone else is served
    assert got == list(range(100))
    await slow.disconnect()


async def test_a_stalled_consumer_under_the_bound_stays_and_gets_everything(
    settings: Any, runtime: Runtime
) -> None:
    settings.WS_MAX_BUFFERED_BYTES = 200_000
    await declare_queue("q")
    app = Stalled(application)
    client = communicator(app=app)
    assert (await client.connect())[0]
    await subscribe(client, "s", "q", ack="auto")
    app.reading.clear()
    for n in range(100):
        await publish(runtime, "", "q", {"n": n, "pad": "x" * 200}, persistent=False)
    assert await client.receive_nothing(0.2)
    app.reading.set()
    assert [(await receive(client))["body"]["n"] for _ in range(100)] == list(range(100))
    await client.disconnect()


async def test_stats_frames_of_a_watcher_that_does_not_read_are_bounded_too(
    settings: Any, runtime: Runtime
) -> None:
    settings.WS_MAX_BUFFERED_BYTES = 1024
    for n in range(20):  # a stats frame of about 4 KiB
        await declare_queue(f"queue-with-a-long-name-{n:03d}")
    app = Stalled(application)
    client = communicator(app=app)
    assert (await client.connect())[0]
    app.reading.clear()
    await client.send_json_to({"type": "watch", "id": "w"})
    close = await client.receive_output(3)
    assert (close["type"], close["code"], close["reason"]) == ("websocket.close", 1008, "slow_consumer")
    await eventually(lambda: not runtime.broker.connections, what="the watcher's connection gone")
    await client.disconnect()


# -- queues and bindings the router makes ------------------------------------------------


async def test_an_exchange_subscription_past_max_queues_is_refused(runtime: Runtime, connect: Connect) -> None:
    await declare_exchange("news", "fanout")
    await declare_queue("q")
    runtime.broker.max_queues = len(runtime.broker.queues) + 1
    client = await connect()
    reply = await request(client, {"type": "subscribe", "id": "a", "exchange": "news"})
    assert reply["type"] == "subscribed"
    before = (set(runtime.broker.queues), set(runtime.broker.bindings))
    refused = await request(client, {"type": "subscribe", "id": "b", "exchange": "news"})
    assert (refused["type"], refused["id"], refused["code"]) == ("error", "b", "limit_exceeded")
    assert (set(runtime.broker.queues), set(runtime.broker.bindings)) == before  # nothing changed
    # Consuming an existing queue makes nothing, so it is still allowed.
    await subscribe(client, "c", "q")


@pytest.mark.parametrize(("given", "limit"), [(7, 7), (0, None)])
def test_the_router_takes_its_share_of_private_queues_from_the_settings(settings: Any, given: int, limit: Any) -> None:
    settings.MAX_PRIVATE_QUEUES_PER_CONNECTION = given
    assert new_router(OrmMessageStore(), None).runtime.broker.max_private_queues == limit


async def test_a_connection_s_private_queues_past_its_share_are_refused(runtime: Runtime, connect: Connect) -> None:
    """MAX_PRIVATE_QUEUES_PER_CONNECTION: one client cannot fill MAX_QUEUES for everyone."""
    await declare_exchange("news", "fanout")
    runtime.broker.max_private_queues = 2
    client, other = await connect(), await connect()
    for sub, exchange in (("a", "news"), ("b", "")):  # the default exchange's reply queue counts too
        assert (await request(client, {"type": "subscribe", "id": sub, "exchange": exchange}))["type"] == "subscribed"
    before = (set(runtime.broker.queues), set(runtime.broker.bindings))
    refused = await request(client, {"type": "subscribe", "id": "c", "exchange": "news"})
    assert (refused["type"], refused["id"], refused["code"]) == ("error", "c", "limit_exceeded")
    assert "MAX_PRIVATE_QUEUES_PER_CONNECTION" in refused["message"]
    assert (set(runtime.broker.queues), set(runtime.broker.bindings)) == before  # nothing changed
    assert (await request(other, {"type": "subscribe", "id": "c", "exchange": "news"}))["type"] == "subscribed"
    assert (await request(client, {"type": "unsubscribe", "id": "a"}))["type"] == "unsubscribed"  # still open
    assert (await request(client, {"type": "subscribe", "id": "d", "exchange": "news"}))["type"] == "subscribed"


async def test_an_exchange_subscription_past_max_bindings_is_refused(runtime: Runtime, connect: Connect) -> None:
    await declare_exchange("news", "fanout")
    runtime.broker.max_bindings = len(runtime.broker.bindings)
    client = await connect()
    refused = await request(client, {"type": "subscribe", "id": "b", "exchange": "news"})
    assert (refused["type"], refused["code"]) == ("error", "limit_exceeded")
    assert not [name for name in runtime.broker.queues if name.startswith("amq.gen-")]
