"""@stomp/stompjs, the STOMP client of browser applications written for RabbitMQ's
Web-STOMP, in headless Chromium against the real `runbroker` over /ws
(docs/protocol.md, "STOMP").

Its UMD bundle comes from npm (tests/browser/stompjs: `npm ci --prefix
tests/browser/stompjs`, run by scripts/test) and is loaded into a blank page on
the broker's origin, so the page opens its WebSocket as an application's would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ROOT, BrokerProcess
from tests.interop.runbroker import Credentials, api_client, counts_become, limited_user, queue_counts, superuser

pytestmark = pytest.mark.browser

BUNDLE = ROOT / "tests" / "browser" / "stompjs" / "node_modules" / "@stomp" / "stompjs" / "bundles" / "stomp.umd.min.js"
BLANK = "<!doctype html><meta charset=utf-8><title>stompjs test</title>"
LIMITED_WRITE = r"amq\.topic|ix-open.*"  # may publish there only

# The page's side: connect, wait for receipts and messages, each with a timeout
# (`evaluate` has none of its own: a promise that never settles would hang the run).
HARNESS = """
window.within = (promise, ms = 5000) => Promise.race([
    promise,
    new Promise((_, fail) => setTimeout(() => fail(new Error(`no answer within ${ms} ms`)), ms)),
]);
window.clients = [];
let receipts = 0;

// A StompJs.Client once it is connected, or once the server refused it (client.record says which).
window.openStomp = ({url, login, passcode, heartbeat = 0}) => within(new Promise((resolve) => {
    const record = {connected: null, errors: [], closes: [], heartbeats: 0, lost: 0};
    const client = new StompJs.Client({
        brokerURL: url,
        connectHeaders: {login, passcode},
        reconnectDelay: 0,  // a refused client must stay closed
        heartbeatIncoming: heartbeat,
        heartbeatOutgoing: heartbeat,
        onConnect: (frame) => { record.connected = frame.headers; resolve(client); },
        onStompError: (frame) => { record.errors.push({headers: frame.headers, body: frame.body}); resolve(client); },
        onWebSocketClose: (event) => { record.closes.push(event.code); resolve(client); },
        onHeartbeatReceived: () => { record.heartbeats += 1; },
        onHeartbeatLost: () => { record.lost += 1; },
    });
    client.record = record;
    clients.push(client);
    client.activate();
}));

// Run `send(receiptId)`, which sends one frame asking for that receipt; resolve with the RECEIPT's headers.
window.receipted = (client, send) => within(new Promise((resolve) => {
    const id = `r-${++receipts}`;
    client.watchForReceipt(id, (frame) => resolve(frame.headers));
    send(id);
}));

// SUBSCRIBE, waiting for its RECEIPT; every MESSAGE lands in `got`.
window.subscribeTo = async (client, destination, headers = {}) => {
    const got = [];
    let subscription;
    await receipted(client, (receipt) => {
        subscription = client.subscribe(destination, (message) => got.push(message), {...headers, receipt});
    });
    return {got, subscription};
};

window.publishReceipted = (client, destination, body, headers = {}) =>
    receipted(client, (receipt) => client.publish({destination, body, headers: {...headers, receipt}}));

window.until = (predicate, ms = 5000) => within(new Promise((resolve) => {
    const check = () => (predicate() ? resolve() : setTimeout(check, 10));
    check();
}), ms);

window.sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
window.bodies = (messages) => messages.map((m) => m.body);
"""


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}: CI needs it for the browser tests (scripts/test runs npm ci)")
    pytest.skip(f"{what}: stompjs tests skipped")


@pytest.fixture(scope="module")
def admin(broker: BrokerProcess) -> Credentials:
    return superuser(broker, "sj-admin")


@pytest.fixture(scope="module")
def limited(broker: BrokerProcess) -> Credentials:
    return limited_user(broker, "sj-limited", configure=".*", write=LIMITED_WRITE, read=".*")


@pytest.fixture(scope="module")
def http(broker: BrokerProcess, admin: Credentials) -> Iterator[httpx.Client]:
    with api_client(broker, admin) as client:
        yield client


@pytest.fixture
def page(browser: Any, broker: BrokerProcess) -> Iterator[Any]:
    """A blank page on the broker's origin with StompJs and the harness; fails on any JavaScript error."""
    if not BUNDLE.exists():
        _missing(f"{BUNDLE.relative_to(ROOT)} is missing (npm ci --prefix tests/browser/stompjs)")
    context = browser.new_context(base_url=broker.url)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto("/ping")
    tab.set_content(BLANK)
    tab.add_script_tag(path=str(BUNDLE))
    tab.add_script_tag(content=HARNESS)
    tab.evaluate("(url) => { window.wsUrl = url; }", broker.ws_url)
    yield tab
    tab.evaluate("() => Promise.all(clients.map((c) => c.deactivate()))")
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def connect(page: Any, credentials: Credentials, *, heartbeat: int = 0) -> dict[str, Any]:
    """Connect a StompJs client as `window.client`; returns its record (CONNECTED's headers or the ERROR)."""
    return page.evaluate(  # type: ignore[no-any-return]
        """async ([login, passcode, heartbeat]) => {
        window.client = await openStomp({url: wsUrl, login, passcode, heartbeat});
        return client.record;
    }""",
        [credentials.login, credentials.passcode, heartbeat],
    )


def test_connects_with_a_user_and_a_token(page: Any, admin: Credentials) -> None:
    record = connect(page, admin)
    assert record["errors"] == []
    assert record["connected"]["version"] == "1.2"
    assert page.evaluate("client.webSocket.protocol") == "v12.stomp"


def test_a_wrong_token_gets_an_error_frame(page: Any, admin: Credentials) -> None:
    record = connect(page, Credentials(admin.login, "not-a-token"))
    assert record["connected"] is None
    page.wait_for_function("client.record.closes.length > 0")
    record = page.evaluate("client.record")
    assert record["errors"] and record["errors"][0]["headers"].get("message")
    assert page.evaluate("client.connected") is False


def test_auto_ack_with_receipts(page: Any, admin: Credentials, http: httpx.Client) -> None:
    queue = "sj-auto"
    connect(page, admin)
    receipts = page.evaluate(
        """async (queue) => {
        window.sub = await subscribeTo(client, `/queue/${queue}`);
        const receipts = [];
        for (const body of ["m0", "m1", "m2"]) receipts.push(await publishReceipted(client, `/queue/${queue}`, body));
        await until(() => sub.got.length === 3);
        return receipts;
    }""",
        queue,
    )
    assert len({r["receipt-id"] for r in receipts}) == 3
    assert page.evaluate("bodies(sub.got)") == ["m0", "m1", "m2"]
    assert page.evaluate("sub.got.map((m) => m.headers.destination)") == [f"/queue/{queue}"] * 3
    counts_become(http, queue, (0, 0))


def test_client_ack_acks_every_earlier_message(page: Any, admin: Credentials, http: httpx.Client) -> None:
    queue = "sj-client"
    connect(page, admin)
    page.evaluate(
        """async (queue) => {
        window.sub = await subscribeTo(client, `/queue/${queue}`, {ack: "client"});
        for (const body of ["m0", "m1", "m2"]) await publishReceipted(client, `/queue/${queue}`, body);
        await until(() => sub.got.length === 3);
    }""",
        queue,
    )
    counts_become(http, queue, (3, 3))
    page.evaluate("sub.got[2].ack()")
    counts_become(http, queue, (0, 0))


def test_client_individual_ack_and_nack(page: Any, admin: Credentials, http: httpx.Client) -> None:
    queue = "sj-individual"
    connect(page, admin)
    got = page.evaluate(
        """async (queue) => {
        window.sub = await subscribeTo(client, `/queue/${queue}`, {ack: "client-individual"});
        await publishReceipted(client, `/queue/${queue}`, "a");
        await publishReceipted(client, `/queue/${queue}`, "b");
        await until(() => sub.got.length === 2);
        sub.got[1].nack({requeue: "true"});
        sub.got[0].ack();
        await until(() => sub.got.length === 3);
        return sub.got.map((m) => [m.body, m.headers.redelivered]);
    }""",
        queue,
    )
    assert got == [["a", "false"], ["b", "false"], ["b", "true"]]
    counts_become(http, queue, (1, 1))
    page.evaluate("sub.got[2].ack()")
    counts_become(http, queue, (0, 0))


def test_prefetch_count(page: Any, admin: Credentials) -> None:
    queue = "sj-prefetch"
    connect(page, admin)
    seen = page.evaluate(
        """async (queue) => {
        window.sub = await subscribeTo(client, `/queue/${queue}`, {ack: "client-individual", "prefetch-count": "1"});
        for (const body of ["m0", "m1", "m2"]) await publishReceipted(client, `/queue/${queue}`, body);
        const seen = [];
        for (let n = 0; n < 3; n++) {
            await until(() => sub.got.length === n + 1);
            await sleep(300);  // nothing more arrives before the ack
            seen.push(sub.got.length);
            sub.got[n].ack();
        }
        return seen;
    }""",
        queue,
    )
    assert seen == [1, 2, 3]
    assert page.evaluate("bodies(sub.got)") == ["m0", "m1", "m2"]


def test_a_transaction_aborted_then_committed(page: Any, admin: Credentials) -> None:
    queue = "sj-tx"
    connect(page, admin)
    result = page.evaluate(
        """async (queue) => {
        const destination = `/queue/${queue}`;
        window.sub = await subscribeTo(client, destination);
        const aborted = client.begin();
        client.publish({destination, body: "aborted-1", headers: {transaction: aborted.id}});
        client.publish({destination, body: "aborted-2", headers: {transaction: aborted.id}});
        aborted.abort();
        await publishReceipted(client, destination, "between");  // after the ABORT, in order

        const committed = client.begin();
        for (const body of ["c1", "c2", "c3"]) client.publish({destination, body, headers: {transaction: committed.id}});
        await sleep(300);
        const beforeCommit = bodies(sub.got);
        committed.commit();
        await until(() => sub.got.length === 4);
        await sleep(300);
        return {beforeCommit, after: bodies(sub.got)};
    }""",
        queue,
    )
    assert result == {"beforeCommit": ["between"], "after": ["between", "c1", "c2", "c3"]}


def test_an_ack_in_a_transaction_is_applied_at_commit(page: Any, admin: Credentials, http: httpx.Client) -> None:
    queue = "sj-tx-ack"
    connect(page, admin)
    page.evaluate(
        """async (queue) => {
        window.sub = await subscribeTo(client, `/queue/${queue}`, {ack: "client-individual"});
        await publishReceipted(client, `/queue/${queue}`, "job");
        await until(() => sub.got.length === 1);
    }""",
        queue,
    )
    counts_become(http, queue, (1, 1))
    page.evaluate("window.tx = client.begin(); sub.got[0].ack({transaction: tx.id})")
    time.sleep(0.5)  # the ACK has reached the server: it must not count yet
    assert queue_counts(http, queue) == (1, 1)
    page.evaluate("tx.commit()")
    counts_become(http, queue, (0, 0))


def test_heartbeats_keep_an_idle_connection(page: Any, admin: Credentials) -> None:
    queue = "sj-heartbeat"
    record = connect(page, admin, heartbeat=1000)
    server_sends, server_wants = (int(v) for v in record["connected"]["heart-beat"].split(","))
    assert 0 < server_sends <= 1000 and server_wants > 0
    result = page.evaluate(
        """async (queue) => {
        await sleep(3000);  // idle: time passing is the scenario
        const idle = {connected: client.connected, heartbeats: client.record.heartbeats, lost: client.record.lost};
        window.sub = await subscribeTo(client, `/queue/${queue}`);
        await publishReceipted(client, `/queue/${queue}`, "still here");
        await until(() => sub.got.length === 1);
        return {...idle, body: sub.got[0].body, closes: client.record.closes};
    }""",
        queue,
    )
    assert result["connected"] is True and result["lost"] == 0 and result["closes"] == []
    assert result["heartbeats"] >= 2
    assert result["body"] == "still here"


def test_publishing_without_the_write_right_is_an_error(page: Any, limited: Credentials) -> None:
    connect(page, limited)
    allowed = page.evaluate("publishReceipted(client, '/topic/sj.allowed', 'may')")
    assert allowed["receipt-id"].startswith("r-")
    page.evaluate(
        "client.publish({destination: '/exchange/amq.direct/k', body: 'may not', headers: {receipt: 'forbidden-1'}})"
    )
    page.wait_for_function("client.record.closes.length > 0")
    [error] = page.evaluate("client.record.errors")
    assert error["headers"].get("message")
    assert error["headers"].get("receipt-id") == "forbidden-1"
    assert page.evaluate("client.connected") is False


def test_a_json_body_from_stompjs_is_json_over_http(page: Any, admin: Credentials, http: httpx.Client) -> None:
    http.post("/api/queues/", json={"name": "sj-to-http"}).raise_for_status()
    connect(page, admin)
    page.evaluate(
        """publishReceipted(client, "/amq/queue/sj-to-http", JSON.stringify({n: 1, text: "été"}),
        {"content-type": "application/json"})"""
    )
    [message] = http.post("/api/queues/sj-to-http/get/", json={"count": 1}).raise_for_status().json()
    assert message["body"] == {"n": 1, "text": "été"}
