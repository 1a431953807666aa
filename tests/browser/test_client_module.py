"""The browser client, /static/pubsub/client.js, in headless Chromium
against the real `runbroker`: subscribe with a callback, ack/nack, publish
confirms and errors, `watch`, and reconnection after the broker is killed and
started again on the same port.

The page is a blank one on the broker's origin, which imports the module as a
user's page would; the docs' example page is run the same way. (Their HTML is
written into a page the broker served: Chromium's local network access checks
refuse a loopback WebSocket to a page that came from Playwright's router.)
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ROOT, BrokerProcess

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture reports it: a skip here, a failure under CI
    expect = None  # type: ignore[assignment]

pytestmark = pytest.mark.browser

BLANK = "<!doctype html><meta charset=utf-8><title>client test</title>"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def open_page(context: Any, html: str) -> Any:
    """A tab on the broker's origin (its /ping) showing `html`; JavaScript errors go to `tab.errors`."""
    tab = context.new_page()
    tab.errors = []
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.goto("/ping")
    tab.set_content(html)
    return tab


@pytest.fixture
def page(browser: Any, broker: BrokerProcess) -> Iterator[Any]:
    """A blank page on the broker's origin with the module as `window.pubsub`; fails on any JavaScript error."""
    context = browser.new_context(base_url=broker.url)
    context.set_default_timeout(10_000)
    tab = open_page(context, BLANK)
    tab.evaluate("async () => { window.pubsub = await import('/static/pubsub/client.js'); }")
    # `evaluate` has no timeout of its own: a promise that never settles would hang the run.
    tab.evaluate(
        "window.within = (promise) => Promise.race([promise, new Promise((_, fail) => setTimeout(() => fail(new Error('no answer within 10 s')), 10000))])"
    )
    yield tab
    tab.evaluate("() => window.client && window.client.close()")
    context.close()
    assert tab.errors == [], f"JavaScript errors on the page: {tab.errors}"


@pytest.fixture
def http(broker: BrokerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=broker.url, timeout=10) as client:
        yield client


def queue(http: httpx.Client, name: str) -> dict[str, Any]:
    response = http.get(f"/api/queues/{name}/")
    response.raise_for_status()
    return response.json()


def test_subscribe_publish_ack_and_nack(page: Any, http: httpx.Client) -> None:
    http.post("/api/queues/", json={"name": "bm-jobs"}).raise_for_status()
    confirm = page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws");
        window.got = [];
        window.sub = await within(client.subscribe({queue: "bm-jobs"}, (m) => got.push(m), {ack: "client", prefetch: 10}));
        return await within(client.publish({routingKey: "bm-jobs", body: {n: 1}, headers: {"x-trace": "t1"}}));
    }"""
    )
    assert confirm["routed"] == 1 and UUID.match(confirm["message_id"])
    page.wait_for_function("got.length === 1")
    first = page.evaluate("({...got[0], sub: sub.queue})")
    assert first["message_id"] == confirm["message_id"]
    assert (
        first["body"],
        first["headers"],
        first["routing_key"],
        first["exchange"],
    ) == ({"n": 1}, {"x-trace": "t1"}, "bm-jobs", "")
    assert (first["redelivered"], first["persistent"], first["sub"]) == (
        False,
        True,
        "bm-jobs",
    )
    assert "unique_id" not in first and "type" not in first

    assert page.evaluate("got[0].nack({requeue: true})") is True
    page.wait_for_function("got.length === 2")
    again = page.evaluate("got[1]")
    assert (again["message_id"], again["redelivered"]) == (confirm["message_id"], True)
    assert page.evaluate("[got[0].ack(), got[1].ack(), got[1].ack()]") == [
        False,
        True,
        False,
    ]  # settled once
    page.wait_for_function("client.ping().then(() => true)")
    assert queue(http, "bm-jobs")["messages"] == 0

    # A publish that is not routed is still confirmed, with routed 0; a nack without requeue drops.
    assert page.evaluate("client.publish({routingKey: 'nowhere', body: 1})")["routed"] == 0
    page.evaluate("client.publish({routingKey: 'bm-jobs', body: 'drop me', persistent: false})")
    page.wait_for_function("got.length === 3")
    assert page.evaluate("got[2].nack({requeue: false})") is True
    page.evaluate("sub.unsubscribe()")
    assert page.evaluate("sub.active") is False
    detail = queue(http, "bm-jobs")
    assert (detail["messages"], detail["consumers"]) == (0, 0)


def test_exchange_subscription_with_auto_acks(page: Any, http: httpx.Client) -> None:
    http.post("/api/exchanges/", json={"name": "bm-news", "type": "topic"}).raise_for_status()
    private = page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws");
        window.got = [];
        window.sub = await within(client.subscribe({exchange: "bm-news", bindingKey: "sports.#"}, (m) => got.push(m)));
        return sub.queue;
    }"""
    )
    assert private.startswith("amq.gen-")
    routed = page.evaluate(
        """async () => [
        (await within(client.publish({exchange: "bm-news", routingKey: "sports.tennis", body: "ace"}))).routed,
        (await within(client.publish({exchange: "bm-news", routingKey: "weather", body: "rain"}))).routed,
    ]"""
    )
    assert routed == [1, 0]
    page.wait_for_function("got.length === 1")
    assert page.evaluate("[got[0].body, got[0].routing_key, got[0].ack()]") == [
        "ace",
        "sports.tennis",
        False,
    ]
    assert queue(http, private)["messages_unacknowledged"] == 0  # auto acks


def test_errors_carry_the_broker_code(page: Any) -> None:
    errors = page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws");
        const code = (promise) => within(promise).then(() => "resolved", (e) => [e.name, e.code, e.message, e instanceof pubsub.BrokerError]);
        return {
            publish: await code(client.publish({exchange: "bm-missing", routingKey: "k", body: {}})),
            subscribe: await code(client.subscribe({queue: "bm-missing"}, () => {})),
            name: await code(client.publish({exchange: "bad name!", body: {}})),
            body: await code(client.publish({routingKey: "k"})),
            after: (await within(client.publish({routingKey: "k", body: 1}))).routed,  // the connection stayed open
            closed: (client.close(), await code(client.publish({routingKey: "k", body: 1}))),
        };
    }"""
    )
    assert errors["publish"][:2] == ["BrokerError", "not_found"] and "bm-missing" in errors["publish"][2]
    assert errors["publish"][3] is True
    assert errors["subscribe"][:2] == ["BrokerError", "not_found"]
    assert errors["name"][:2] == ["BrokerError", "invalid"]
    assert errors["body"][:2] == ["BrokerError", "invalid"]
    assert errors["after"] == 0
    assert errors["closed"][:2] == ["BrokerError", "closed"]


def test_watch_gets_stats(page: Any, http: httpx.Client) -> None:
    http.post("/api/queues/", json={"name": "bm-watched"}).raise_for_status()
    names = page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws");
        const frame = await new Promise((resolve) => client.watch(resolve));
        return frame.queues.map((q) => q.name);
    }"""
    )
    assert "bm-watched" in names
    assert page.evaluate("client.watching") is True
    page.evaluate("async () => { const stop = await within(client.watch(() => {})); await stop(); }")
    assert page.evaluate("client.watching") is True  # the first callback still watches


def test_a_token_goes_in_the_query_and_a_refused_one_ends_the_client(page: Any, broker: BrokerProcess) -> None:
    url = page.evaluate(
        """() => { const c = pubsub.connect("http://example.invalid/ws", {token: "s3cret/+"}); c.close(); return c.url; }"""
    )
    assert url == "ws://example.invalid/ws?token=s3cret%2F%2B"

    manage = [sys.executable, "manage.py"]
    env = {**broker.env, "DJANGO_SUPERUSER_PASSWORD": "bm-secret-42"}
    subprocess.run(
        [
            *manage,
            "createsuperuser",
            "--noinput",
            "--username",
            "bm-alice",
            "--email",
            "a@example.invalid",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    token = subprocess.run(
        [*manage, "createtoken", "bm-alice"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    routed = page.evaluate(
        """async (token) => {
        window.client = pubsub.connect("/ws", {token});
        return (await within(client.publish({routingKey: "k", body: "with a token"}))).routed;
    }""",
        token,
    )
    assert routed == 0

    # A token that is given must be valid (README, "Authentication"): refused, and no reconnection.
    refused = page.evaluate(
        """async () => {
        const bad = pubsub.connect("/ws", {token: "not-a-token", minDelay: 10});
        const closes = [];
        bad.addEventListener("close", (e) => closes.push(e.detail));
        const error = await within(bad.subscribe({queue: "k"}, () => {}).then(() => null, (e) => e.code));
        await new Promise((resolve) => setTimeout(resolve, 300));  // time enough for reconnections, if any
        return {error, closes, closed: bad.closed};
    }"""
    )
    assert refused["error"] == "unauthorized"
    assert refused["closed"] is True
    assert [(c["code"], c["reconnecting"]) for c in refused["closes"]] == [(4401, False)]


def test_unavailable_publish_is_sent_again(page: Any) -> None:
    """A cluster's failover answers `unavailable`: the client retries the same message after a backoff."""
    seen: list[dict[str, Any]] = []

    def route(ws: Any) -> None:
        server = ws.connect_to_server()

        def from_page(message: str) -> None:
            frame = json.loads(message)
            if frame.get("type") == "publish":
                seen.append(frame)
                if len(seen) == 1:  # refuse the first attempt as a router in failover would
                    ws.send(
                        json.dumps(
                            {
                                "type": "error",
                                "id": frame["id"],
                                "code": "unavailable",
                                "message": "failover",
                            }
                        )
                    )
                    return
            server.send(message)

        ws.on_message(from_page)

    page.route_web_socket("**/ws", route)
    confirm = page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws", {minDelay: 50});
        return await within(client.publish({routingKey: "k", body: "again"}));
    }"""
    )
    assert len(seen) == 2 and seen[0] == seen[1]  # the same frame, message_id included
    assert confirm["message_id"] == seen[0]["message_id"]


def test_reconnects_resubscribes_and_resends_after_a_restart(
    page: Any, broker: BrokerProcess, http: httpx.Client
) -> None:
    http.post("/api/queues/", json={"name": "bm-durable"}).raise_for_status()
    http.post("/api/exchanges/", json={"name": "bm-events", "type": "fanout"}).raise_for_status()
    page.evaluate(
        """async () => {
        window.events = [];
        window.client = pubsub.connect("/ws", {minDelay: 100, maxDelay: 500});
        for (const type of ["open", "close", "reconnect"]) client.addEventListener(type, (e) => events.push([type, e.detail]));
        window.got = [];
        window.fan = [];
        window.sub = await within(client.subscribe({queue: "bm-durable"}, (m) => got.push(m), {ack: "client"}));
        window.fanSub = await within(client.subscribe({exchange: "bm-events"}, (m) => fan.push(m.body)));
        window.firstQueue = fanSub.queue;
        await within(client.publish({routingKey: "bm-durable", body: "m1"}));
    }"""
    )
    page.wait_for_function("got.length === 1")  # delivered, not acknowledged

    broker.kill()
    page.wait_for_function("events.some(([type]) => type === 'close')")
    # Published while the broker is down: kept, and sent once it is back.
    page.evaluate(
        "() => { client.publish({routingKey: 'bm-durable', body: 'm2'}).then((c) => (window.confirmed = c)); }"
    )
    assert page.evaluate("got[0].ack()") is False  # its connection is gone
    broker.start()  # the same port, database and settings

    page.wait_for_function("events.some(([type]) => type === 'reconnect')", timeout=20_000)
    report = page.evaluate("events.find(([type]) => type === 'reconnect')[1]")
    assert report == {"resubscribed": 2, "republished": 1, "errors": []}
    page.wait_for_function("window.confirmed && got.length === 3")
    bodies = page.evaluate("got.map((m) => [m.body, m.redelivered])")
    assert bodies[0] == ["m1", False]
    assert sorted(bodies[1:]) == [
        ["m1", True],
        ["m2", False],
    ]  # m1 unacknowledged before the kill: again
    assert page.evaluate("got.slice(1).map((m) => m.ack())") == [True, True]
    assert page.evaluate("sub.active && client.connected") is True

    # The exchange subscription has a new private queue (the old one died with the process).
    new_queue = page.evaluate("fanSub.queue")
    assert new_queue.startswith("amq.gen-") and new_queue != page.evaluate("firstQueue")
    http.post("/api/exchanges/bm-events/publish/", json={"body": "after"}).raise_for_status()
    page.wait_for_function("fan.includes('after')")
    page.wait_for_function("client.ping().then(() => true)")
    assert queue(http, "bm-durable")["messages"] == 0


def test_the_documented_example_page_works(browser: Any, broker: BrokerProcess, http: httpx.Client) -> None:
    """docs/browser-client.md's example page, as is, on the broker's origin."""
    doc = (ROOT / "docs" / "browser-client.md").read_text()
    html = re.search(r"```html\n(.*?)```", doc, re.DOTALL).group(1)  # type: ignore[union-attr]
    http.post("/api/queues/", json={"name": "greetings"}).raise_for_status()
    context = browser.new_context(base_url=broker.url)
    context.set_default_timeout(10_000)
    tab = open_page(context, html)
    try:
        tab.fill("#text", "hello from the docs")
        tab.click("#send")
        tab.wait_for_function("document.querySelector('#log').textContent.includes('routed to 1')")
        tab.wait_for_function("document.querySelector('#log').textContent.includes('hello from the docs')")
    finally:
        context.close()
    assert tab.errors == [], f"JavaScript errors on the page: {tab.errors}"
    http.get("/ping").raise_for_status()
    assert queue(http, "greetings")["messages"] == 0  # acknowledged by the page


def test_a_page_of_another_allowed_origin_imports_the_module(
    browser: Any, broker: BrokerProcess, http: httpx.Client
) -> None:
    """A page of http://localhost:PORT, another origin than the broker's http://127.0.0.1:PORT that
    the WebSocket's Origin check allows (a host of ALLOWED_HOSTS), imports the module by its full
    URL: the browser fetches it in CORS mode (broker/transport/cors.py)."""
    http.post("/api/queues/", json={"name": "bm-cors"}).raise_for_status()
    context = browser.new_context(base_url=f"http://localhost:{broker.port}")
    context.set_default_timeout(10_000)
    tab = open_page(context, BLANK)
    try:
        confirm = tab.evaluate(
            """async ([module, ws]) => {
            const pubsub = await import(module);
            window.client = pubsub.connect(ws);
            return await client.publish({routingKey: "bm-cors", body: "from another origin"});
        }""",
            [f"{broker.url}/static/pubsub/client.js", broker.ws_url],
        )
        tab.evaluate("() => client.close()")
    finally:
        context.close()
    assert tab.errors == [], f"JavaScript errors on the page: {tab.errors}"
    assert confirm["routed"] == 1
    assert queue(http, "bm-cors")["messages_ready"] == 1


def test_the_console_resubscribes_its_tail_after_a_restart(
    browser: Any, broker: BrokerProcess, http: httpx.Client
) -> None:
    """The web console goes through the module: after a restart its stats and its tail come back by themselves."""
    http.post("/api/queues/", json={"name": "bm-console"}).raise_for_status()
    context = browser.new_context(base_url=broker.url)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        tab.goto("/")
        expect(tab.locator("#status")).to_have_attribute("data-state", "live")
        form = tab.locator("#tail-form")
        form.locator('select[name="queue"]').select_option("bm-console")
        form.locator('select[name="ack"]').select_option("client")
        form.locator('button[type="submit"]').click()
        state = tab.locator("#tail-state")
        expect(state).to_have_text("subscribed to queue bm-console · client acks")
        http.post("/api/exchanges/amq.default/publish/", json={"routing_key": "bm-console", "body": "x"})
        messages = tab.locator("#tail-messages li")
        expect(messages).to_have_count(1)

        broker.kill()
        expect(tab.locator("#status")).to_have_text("disconnected · retrying")
        expect(state).to_contain_text("connection lost")
        expect(messages.first.locator(".outcome")).to_have_text("requeued")
        broker.start()

        expect(tab.locator("#status")).to_have_attribute("data-state", "live", timeout=20_000)
        expect(state).to_have_text("subscribed to queue bm-console · client acks")
        redelivered = messages.filter(has=tab.locator(".tag", has_text="redelivered"))
        expect(redelivered).to_have_count(1)
        redelivered.get_by_role("button", name="Ack", exact=True).click()
        expect(redelivered.locator(".outcome")).to_have_text("acknowledged")
        expect(tab.locator('#queues tr[data-name="bm-console"] [data-field="messages_unacknowledged"]')).to_have_text(
            "0"
        )
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def passthrough(page: Any, refuse: Any = None) -> list[list[Any]]:
    """Route the page's WebSockets to the broker; `refuse(n, frame)` may name an error code to answer a
    frame with instead (n: the connection, from 0). Returns the frames sent, as [n, type, id], and
    keeps each connection's route in `page.routes`; `drop(page, n)` ends connection n on both sides."""
    sent: list[list[Any]] = []
    page.routes = []
    page.servers = []

    def route(ws: Any) -> None:
        server = ws.connect_to_server()
        n = len(page.routes)
        page.routes.append(ws)
        page.servers.append(server)

        def from_page(message: str) -> None:
            frame = json.loads(message)
            sent.append([n, frame.get("type"), frame.get("id")])
            code = refuse and refuse(n, frame)
            if code:
                ws.send(
                    json.dumps({"type": "error", "id": frame.get("id"), "code": code, "message": "refused by the test"})
                )
                return
            server.send(message)

        ws.on_message(from_page)

    page.route_web_socket("**/ws", route)
    return sent


def drop(page: Any, n: int) -> None:
    page.servers[n].close()
    page.routes[n].close(code=1001, reason="going away")


def test_an_open_listener_subscribes_and_publishes_once(page: Any, http: httpx.Client) -> None:
    """What an `open` listener asks is sent once: not also as what waited for the socket."""
    http.post("/api/queues/", json={"name": "bm-open"}).raise_for_status()
    http.post("/api/queues/", json={"name": "bm-presence"}).raise_for_status()
    sent = passthrough(page)
    out = page.evaluate(
        """async () => {
        window.got = []; window.errors = [];
        window.client = pubsub.connect("/ws");
        client.addEventListener("error", (e) => errors.push(e.detail.error.code));
        const subscribed = new Promise((resolve) => client.addEventListener("open", () => {
            resolve(Promise.all([
                client.subscribe({queue: "bm-open"}, (m) => got.push(m.body)),
                client.publish({routingKey: "bm-presence", body: "online"}),
            ]));
        }, {once: true}));
        window.sub = (await within(subscribed))[0];
        await within(client.ping());
        return {active: sub.active, errors};
    }"""
    )
    assert out == {"active": True, "errors": []}
    assert [frame[1] for frame in sent if frame[1] in ("subscribe", "publish")] == ["subscribe", "publish"]
    assert queue(http, "bm-presence")["messages"] == 1
    http.post("/api/exchanges/amq.default/publish/", json={"routing_key": "bm-open", "body": "kept"}).raise_for_status()
    page.wait_for_function("got.length === 1")
    assert queue(http, "bm-open")["consumers"] == 1


def test_close_during_the_reconnection_delay_opens_no_socket(page: Any) -> None:
    passthrough(page)
    page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws", {minDelay: 400, maxDelay: 400});
        await within(client.ping());
    }"""
    )
    drop(page, 0)
    page.wait_for_function("!client.connected")
    page.evaluate("client.close()")
    page.wait_for_timeout(800)  # past the delay
    assert len(page.routes) == 1
    assert page.evaluate("[client.closed, client.connected]") == [True, False]


def test_a_connection_closed_at_once_does_not_reset_the_backoff(page: Any) -> None:
    """A broker that accepts then closes at once (1013 too_many_connections) sees the delays double up
    to `maxDelay`; a connection that stayed open that long starts them again from `minDelay`."""
    opened: list[float] = []
    refuse = [True]

    def route(ws: Any) -> None:  # no broker behind it: the socket opens, and its first frame closes it
        opened.append(time.monotonic())

        def from_page(message: str) -> None:
            if refuse[0]:
                ws.close(code=1013, reason="too_many_connections")

        ws.on_message(from_page)

    page.route_web_socket("**/ws", route)
    page.evaluate(
        """() => {
        window.client = pubsub.connect("/ws", {minDelay: 50, maxDelay: 1000});
        window.opens = 0;
        client.addEventListener("open", () => (opens += 1));
        client.subscribe({queue: "k"}, () => {}).catch(() => {});  // sent on every open
    }"""
    )
    page.wait_for_timeout(1500)
    storm = len(opened)
    assert 3 <= storm <= 8, f"{storm} connections in 1.5 s"  # 25-50, 50-100, 100-200, 200-400 ms, ...

    refuse[0] = False  # the next connection stays open
    page.wait_for_function("client.connected", timeout=5_000)
    page.wait_for_timeout(1200)  # longer than maxDelay: it proved itself
    delay = page.evaluate(
        """async () => {
        const start = performance.now();
        client.ws.close();
        await within(new Promise((resolve) => client.addEventListener("open", resolve, {once: true})));
        return performance.now() - start;
    }"""
    )
    assert delay < 400  # minDelay again (25-50 ms), not the 500-1000 ms reached in the storm


def test_unsubscribe_and_stop_during_a_resubscribe_retry(page: Any, http: httpx.Client) -> None:
    """A resubscribe (and a renewed watch) refused `unavailable` is not sent again once unsubscribed
    (stopped), and the reconnection is reported."""
    http.post("/api/queues/", json={"name": "bm-retry"}).raise_for_status()
    refused: set[str] = set()

    def refuse(n: int, frame: dict[str, Any]) -> str | None:
        if n == 1 and frame.get("type") in ("subscribe", "watch") and frame["type"] not in refused:
            refused.add(frame["type"])
            return "unavailable"
        return None

    sent = passthrough(page, refuse)
    page.evaluate(
        """async () => {
        window.events = [];
        // A retry waits 1-2 s: time for the unsubscribe below to come first on a busy machine.
        window.client = pubsub.connect("/ws", {minDelay: 2000, maxDelay: 2000});
        for (const t of ["open", "reconnect", "error"]) client.addEventListener(t, (e) => events.push([t, e.detail]));
        window.sub = await within(client.subscribe({queue: "bm-retry"}, () => {}));
        window.stop = await within(client.watch(() => {}));
    }"""
    )
    drop(page, 0)
    page.wait_for_function("events.filter(([t]) => t === 'open').length === 2")
    page.wait_for_function("() => true")
    assert refused == {"subscribe", "watch"}
    page.evaluate("async () => { await within(sub.unsubscribe()); await within(stop()); }")
    page.wait_for_timeout(2500)  # past the retries' backoff
    assert [frame[1] for frame in sent if frame[0] == 1 and frame[1] in ("subscribe", "watch")] == [
        "subscribe",
        "watch",
    ]
    assert queue(http, "bm-retry")["consumers"] == 0
    assert page.evaluate("[client.watching, events.filter(([t]) => t !== 'open')]") == [
        False,
        [["reconnect", {"resubscribed": 0, "republished": 0, "errors": []}]],
    ]


def test_ping_is_a_round_trip(page: Any) -> None:
    """Asked before the socket opens, a ping waits for it and its pong; after close() it is refused."""
    sent = passthrough(page)
    out = page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws");
        const early = client.ping();
        const connected = client.connected;
        await within(early);
        const other = pubsub.connect("/ws");
        const pending = other.ping().then(() => "resolved", (e) => e.code);
        other.close();
        return {connected, pending: await within(pending), after: (client.close(), await within(client.ping().then(() => "resolved", (e) => e.code)))};
    }"""
    )
    assert out == {"connected": False, "pending": "closed", "after": "closed"}
    assert [frame[:2] for frame in sent if frame[1] == "ping"] == [[0, "ping"]]


def test_an_unsubscribe_or_ack_refused_rate_limited_is_sent_again(page: Any, http: httpx.Client) -> None:
    """`rate_limited` means not carried out: the client sends the unsubscribe, or the ack, again."""
    http.post("/api/queues/", json={"name": "bm-limited"}).raise_for_status()
    counts: dict[str, int] = {}

    def refuse(n: int, frame: dict[str, Any]) -> str | None:
        kind = frame.get("type")
        counts[kind] = counts.get(kind, 0) + 1
        return "rate_limited" if kind in ("unsubscribe", "ack") and counts[kind] == 1 else None

    passthrough(page, refuse)
    page.evaluate(
        """async () => {
        window.got = []; window.errors = [];
        window.client = pubsub.connect("/ws", {minDelay: 50});
        client.addEventListener("error", (e) => errors.push(e.detail.error.code));
        window.sub = await within(client.subscribe({queue: "bm-limited"}, (m) => got.push(m), {ack: "client"}));
        await within(client.publish({routingKey: "bm-limited", body: "x"}));
    }"""
    )
    page.wait_for_function("got.length === 1")
    assert page.evaluate("got[0].ack()") is True
    page.wait_for_timeout(500)  # past the backoff
    page.wait_for_function("client.ping().then(() => true)")
    assert counts["ack"] == 2 and queue(http, "bm-limited")["messages"] == 0
    page.evaluate("within(sub.unsubscribe())")
    assert counts["unsubscribe"] == 2 and queue(http, "bm-limited")["consumers"] == 0
    assert page.evaluate("errors") == []


def test_ack_and_nack_after_the_subscription_ended_send_nothing(page: Any, http: httpx.Client) -> None:
    """Unsubscribed (the broker requeues its unacknowledged messages) or cancelled (its queue deleted):
    a message's ack or nack is `false` and sends nothing, not a tag the broker refuses as unknown."""
    http.post("/api/queues/", json={"name": "bm-ended"}).raise_for_status()
    http.post("/api/queues/", json={"name": "bm-doomed"}).raise_for_status()
    sent = passthrough(page)
    page.evaluate(
        """async () => {
        window.got = []; window.errors = []; window.cancelled = [];
        window.client = pubsub.connect("/ws");
        client.addEventListener("error", (e) => errors.push(e.detail.error.code));
        client.addEventListener("cancelled", (e) => cancelled.push(e.detail.subscription.id));
        window.sub = await within(client.subscribe({queue: "bm-ended"}, (m) => got.push(m), {ack: "client"}));
        window.doomed = await within(client.subscribe({queue: "bm-doomed"}, (m) => got.push(m), {ack: "client"}));
    }"""
    )
    for name in ("bm-ended", "bm-doomed"):
        http.post("/api/exchanges/amq.default/publish/", json={"routing_key": name, "body": name}).raise_for_status()
    page.wait_for_function("got.length === 2")
    page.evaluate("within(sub.unsubscribe())")
    http.delete("/api/queues/bm-doomed/").raise_for_status()
    page.wait_for_function("cancelled.length === 1")
    settled = page.evaluate("got.map((m) => [m.body, m.ack(), m.nack(), m.nack({requeue: false})])")
    assert settled == [["bm-ended", False, False, False], ["bm-doomed", False, False, False]]
    page.evaluate("within(client.ping())")
    assert page.evaluate("errors") == []
    assert [frame for frame in sent if frame[1] in ("ack", "nack")] == []
    detail = queue(http, "bm-ended")
    assert (detail["messages_ready"], detail["consumers"]) == (1, 0)  # requeued by the unsubscribe


def test_an_ack_refused_rate_limited_again_and_again_waits_longer_each_time(page: Any, http: httpx.Client) -> None:
    """Under a sustained rate limit an ack's retries back off as everything else's do (minDelay 50:
    25-50, 50-100, 100-200, 200-400 ms), not every 25-50 ms for as long as the limit lasts."""
    http.post("/api/queues/", json={"name": "bm-throttled"}).raise_for_status()
    acks: list[tuple[float, str]] = []

    def refuse(n: int, frame: dict[str, Any]) -> str | None:
        if frame.get("type") != "ack":
            return None
        acks.append((time.monotonic(), frame["id"]))
        return "rate_limited" if len(acks) <= 4 else None

    passthrough(page, refuse)
    page.evaluate(
        """async () => {
        window.got = []; window.errors = [];
        window.client = pubsub.connect("/ws", {minDelay: 50, maxDelay: 10000});
        client.addEventListener("error", (e) => errors.push(e.detail.error.code));
        await within(client.subscribe({queue: "bm-throttled"}, (m) => got.push(m), {ack: "client"}));
        await within(client.publish({routingKey: "bm-throttled", body: "x"}));
    }"""
    )
    page.wait_for_function("got.length === 1")
    assert page.evaluate("got[0].ack()") is True
    deadline = time.monotonic() + 5
    while len(acks) < 5 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(acks) == 5  # the first, and four retries
    gaps = [later - earlier for (earlier, _), (later, _) in zip(acks, acks[1:], strict=False)]
    assert gaps[-1] >= 0.19, gaps  # the fourth retry waited 200-400 ms
    assert sum(gaps) >= 0.37, gaps  # 375-750 ms in all
    assert [frame_id for _, frame_id in acks] == ["a1.1", "a1.1.1", "a1.1.2", "a1.1.3", "a1.1.4"]
    page.wait_for_function("client.ping().then(() => true)")
    assert queue(http, "bm-throttled")["messages"] == 0
    assert page.evaluate("errors") == []


def test_auto_ack_deliveries_before_the_unsubscribe_answer_reach_the_callback(page: Any, http: httpx.Client) -> None:
    """An auto-ack delivery already on its way when unsubscribe() is called is settled: it is not dropped."""
    http.post("/api/queues/", json={"name": "bm-leaving"}).raise_for_status()
    page.routes = []

    def route(ws: Any) -> None:
        server = ws.connect_to_server()

        def from_page(message: str) -> None:
            frame = json.loads(message)
            if frame.get("type") == "unsubscribe":  # a delivery the broker sent meanwhile
                ws.send(
                    json.dumps(
                        {
                            "type": "message",
                            "subscription": frame["id"],
                            "delivery_tag": 99,
                            "redelivered": False,
                            "message_id": "in-flight",
                            "exchange": "",
                            "routing_key": "bm-leaving",
                            "body": "in flight",
                            "headers": {},
                            "persistent": True,
                            "published_at": "2026-01-01T00:00:00.000000Z",
                        }
                    )
                )
            server.send(message)

        ws.on_message(from_page)

    page.route_web_socket("**/ws", route)
    got = page.evaluate(
        """async () => {
        const got = [];
        window.client = pubsub.connect("/ws");
        const sub = await within(client.subscribe({queue: "bm-leaving"}, (m) => got.push(m.body)));
        await within(sub.unsubscribe());
        return got;
    }"""
    )
    assert got == ["in flight"]


def test_a_publish_over_the_size_limit_is_told_by_its_utf8_bytes(page: Any, http: httpx.Client) -> None:
    """Closed with 1009, the client rejects the publish whose frame is the largest in UTF-8 bytes, as the
    broker counts them: 400,000 CJK characters (1.2 MB) rather than 600,000 ASCII ones (600 KB)."""
    http.post("/api/queues/", json={"name": "bm-sizes"}).raise_for_status()
    out = page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws", {minDelay: 50});
        await within(client.ping());
        const outcome = (promise) => within(promise).then((c) => c.routed, (e) => e.code);
        const cjk = outcome(client.publish({routingKey: "bm-sizes", body: "\\u4e2d".repeat(400_000), persistent: false}));
        const ascii = outcome(client.publish({routingKey: "bm-sizes", body: "a".repeat(600_000), persistent: false}));
        return {cjk: await cjk, ascii: await ascii};
    }"""
    )
    assert out == {"cjk": "too_large", "ascii": 1}
    assert queue(http, "bm-sizes")["messages"] == 1


def silenceable(page: Any) -> set[int]:
    """Route the page's WebSockets to the broker; connection n (from 0) in the returned set falls
    silent both ways, as a half-open socket after a laptop's sleep: nothing is lost or closed."""
    silent: set[int] = set()
    page.routes = []

    def route(ws: Any) -> None:
        server = ws.connect_to_server()
        n = len(page.routes)
        page.routes.append(ws)
        ws.on_message(lambda message: None if n in silent else server.send(message))
        server.on_message(lambda message: None if n in silent else ws.send(message))

    page.route_web_socket("**/ws", route)
    return silent


def test_a_socket_fallen_silent_is_given_up_and_the_client_reconnects(page: Any) -> None:
    """The browser notices nothing of a dead socket it has not been told of; the heartbeat does:
    nothing heard for `heartbeat`, a ping; nothing for as long again, the socket is closed."""
    silent = silenceable(page)
    page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws", {heartbeat: 300, minDelay: 50, maxDelay: 100});
        window.closes = [];
        client.addEventListener("close", (e) => closes.push([e.detail.code, e.detail.reconnecting]));
        await within(client.ping());
    }"""
    )
    page.wait_for_timeout(1000)  # quiet but alive: the heartbeat's pings are answered
    assert page.evaluate("closes") == [] and len(page.routes) == 1
    silent.add(0)
    page.wait_for_function("closes.length === 1", timeout=5_000)
    assert page.evaluate("closes") == [[1006, True]]
    page.wait_for_function("client.connected", timeout=5_000)
    page.evaluate("within(client.ping())")
    assert len(page.routes) == 2


def test_a_page_back_from_sleep_asks_at_once_whether_its_socket_lives(page: Any) -> None:
    silent = silenceable(page)
    page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws", {heartbeat: 60000, minDelay: 50, maxDelay: 100});
        window.closes = [];
        client.addEventListener("close", (e) => closes.push(e.detail.code));
        await within(client.ping());
    }"""
    )
    silent.add(0)
    started = time.monotonic()
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_function("closes.length === 1", timeout=10_000)
    assert time.monotonic() - started < 8  # the wake's ping waits 5 s, not the minute's heartbeat
    page.wait_for_function("client.connected", timeout=5_000)


def test_a_connection_held_by_the_memory_alarm_is_told_and_its_heartbeat_kept(page: Any) -> None:
    """The broker reads nothing from a connection whose publish its memory alarm holds, pings
    included; it says `blocked`, again every few seconds, then `unblocked`. The page hears the
    events, and a `blocked` counts as life for the heartbeat (here sent more often than the
    heartbeat's two quiet periods, as the broker's 5 s are against the default 20 s)."""
    silent = silenceable(page)
    page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws", {heartbeat: 1500, minDelay: 50, maxDelay: 100});
        window.flow = [];
        window.closes = [];
        client.addEventListener("blocked", (e) => flow.push(["blocked", e.detail.reason]));
        client.addEventListener("unblocked", () => flow.push(["unblocked"]));
        client.addEventListener("close", (e) => closes.push(e.detail.code));
        await within(client.ping());
    }"""
    )
    silent.add(0)  # the "broker" reads nothing more from the page, and sends only `blocked`
    for _ in range(16):  # 4 s: over twice the heartbeat, a `blocked` every sixth of it
        page.routes[0].send('{"type": "blocked", "reason": "memory"}')
        page.wait_for_timeout(250)
    silent.discard(0)
    page.routes[0].send('{"type": "unblocked"}')
    page.wait_for_function("flow.length === 17")
    assert page.evaluate("flow") == [["blocked", "memory"]] * 16 + [["unblocked"]]
    assert page.evaluate("closes") == [] and len(page.routes) == 1  # never taken for dead
    page.evaluate("within(client.ping())")


def test_an_attempt_to_connect_that_hangs_is_given_up_and_tried_again(page: Any) -> None:
    """A server that takes the connection and never answers its upgrade (packets dropped on a
    new network): the attempt is given up after a heartbeat's time and tried again, where it
    waited for the system's connect timeout."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)  # connections wait in the backlog: never accepted, never answered
        port = hole.getsockname()[1]
        page.evaluate(
            f"""() => {{
            window.client = pubsub.connect("ws://127.0.0.1:{port}/ws", {{heartbeat: 300, minDelay: 50, maxDelay: 100}});
            window.closes = [];
            client.addEventListener("close", (e) => closes.push(e.detail.code));
        }}"""
        )
        page.wait_for_function("closes.length >= 2", timeout=3_000)
        assert set(page.evaluate("closes")) == {1006}
        page.evaluate("client.close()")


def test_a_page_back_online_connects_at_once_rather_than_at_the_end_of_its_backoff(page: Any) -> None:
    silenceable(page)  # the page's sockets, in page.routes
    page.evaluate(
        """async () => {
        window.client = pubsub.connect("/ws", {heartbeat: 20000, minDelay: 30000, maxDelay: 60000});
        window.closes = [];
        client.addEventListener("close", (e) => closes.push(e.detail.code));
        await within(client.ping());
    }"""
    )
    page.routes[0].close(code=1012, reason="restarting")  # the broker went away: a backoff of 15-30 s follows
    page.wait_for_function("closes.length === 1")
    started = time.monotonic()
    page.evaluate("window.dispatchEvent(new Event('online'))")
    page.wait_for_function("client.connected", timeout=5_000)
    assert time.monotonic() - started < 5 and len(page.routes) == 2
    page.evaluate("within(client.ping())")
