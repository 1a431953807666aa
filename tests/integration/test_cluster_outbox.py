"""Publishing from Django code (docs/outbox.md) in a cluster of real processes.

A Django process that is no broker node (a web worker, a management command)
writes outbox rows on the cluster's database; the router (the lease holder),
woken by PostgreSQL's NOTIFY, routes them, and an edge delivers them to its
WebSocket subscribers. When the router is killed while that process keeps
committing, the standby takes over and routes the rows committed while no
router ran: every committed message lands in its queue exactly once, in the
order of the transactions. Needs E2E_DATABASE_URL and Redis (TEST_REDIS_URL):
fails, never skips, without them.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter

import httpx
import psycopg
import pytest

from broker.cluster.lease import WRITE_FENCE_KEY
from broker.runtime.outbox import BATCH_ROWS, POLL_SECONDS
from tests.e2e.client import WsClient
from tests.e2e.harness import BrokerProcess
from tests.e2e.outbox_harness import Publisher, take
from tests.eventually import eventually
from tests.integration.cluster_harness import HEALTH_INTERVAL, Cluster, role

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROUNDS = 5


def committed_ids(lines: list[str]) -> list[str]:
    """The message ids the publisher printed, as `committed <id> <id> ...` after each commit."""
    return [word for line in lines if line.startswith("committed ") for word in line.split()[1:]]


def outbox_depth(node: BrokerProcess) -> int:
    answer = httpx.get(f"{node.url}/api/outbox/", timeout=5)
    assert answer.status_code == 200, answer.text
    depth: int = answer.json()["depth"]
    return depth


def ready(node: BrokerProcess, queue: str) -> int:
    found = httpx.get(f"{node.url}/api/queues/{queue}/", timeout=5).json()["messages_ready"]
    return int(found or 0)  # null while no router answers


async def test_django_code_in_another_process_publishes_to_a_subscriber_on_an_edge(cluster: Cluster) -> None:
    router = cluster.node("router")
    edge = cluster.node("edge", edge=True)
    assert (role(router), role(edge)) == ("router", "edge")
    async with httpx.AsyncClient(base_url=edge.url, timeout=10) as http:
        assert (await http.post("/api/exchanges/", json={"name": "orders", "type": "topic"})).status_code == 201
        assert (await http.post("/api/queues/", json={"name": "eu-orders"})).status_code == 201
        binding = {"exchange": "orders", "queue": "eu-orders", "binding_key": "orders.eu.*"}
        assert (await http.post("/api/bindings/", json=binding)).status_code == 201
    subscriber = await WsClient.connect(edge.ws_url)
    reply = await subscriber.request({"type": "subscribe", "id": "s", "queue": "eu-orders"})
    assert reply["type"] == "subscribed"

    # One transaction per round, each only once the test has received the previous one:
    # a round trip is a commit, NOTIFY, the router's routing and the edge's delivery.
    publisher = Publisher(edge, f"""
        for round in range({ROUNDS}):
            with transaction.atomic():
                ids = publish_many(
                    [OutboxMessage("orders", {{"round": round, "line": line}}, "orders.eu.created") for line in range(3)]
                    + [OutboxMessage("orders", "not for this queue", "orders.us.created")]
                )
            say("committed", *ids[:3])
            told.get(timeout=30)
        try:
            with transaction.atomic():
                publish("orders", "rolled back", "orders.eu.created")
                raise RuntimeError
        except RuntimeError:
            pass
        say("committed", publish("orders", "last", "orders.eu.created"))
    """)
    received: list[dict[str, object]] = []
    round_trips = []  # from the test's go to the delivery of that transaction's messages
    told_at = time.monotonic()
    for expected in [3] * ROUNDS + [1]:
        received += await subscriber.messages(expected, timeout=15)
        round_trips.append(time.monotonic() - told_at)
        if len(round_trips) <= ROUNDS:
            publisher.tell("next")
            told_at = time.monotonic()
    lines = publisher.wait().splitlines()

    assert [m["message_id"] for m in received] == committed_ids(lines)
    assert [m["body"] for m in received] == [
        *({"round": r, "line": line} for r in range(ROUNDS) for line in range(3)),
        "last",  # right after the last round: nothing of the rolled-back transaction came first
    ]
    assert {(m["exchange"], m["routing_key"]) for m in received} == {("orders", "orders.eu.created")}
    # Woken by the publisher's NOTIFY, not by its look every POLL_SECONDS (which would
    # make each round trip last about that long): the median leaves a loaded machine room.
    assert statistics.median(round_trips[1:]) < POLL_SECONDS / 2, round_trips  # the first one: Django's start
    await subscriber.close()


async def test_the_standby_routes_what_was_committed_while_no_router_ran_each_message_once_in_order(
    cluster: Cluster,
) -> None:
    router = cluster.node("router")
    standby = cluster.node("standby")
    assert (role(router), role(standby)) == ("router", "standby")
    assert httpx.post(f"{standby.url}/api/queues/", json={"name": "stream"}).status_code == 201

    # Transactions of 10 messages, one after the other, until the test says stop.
    publisher = Publisher(standby, """
        n = 0
        while told.empty():
            with transaction.atomic():
                ids = publish_many([OutboxMessage("", n + i, "stream") for i in range(10)])
            n += 10
            say("committed", *ids)
            time.sleep(0.005)
        say("done")
    """)
    fence = psycopg.connect(cluster.database_url, autocommit=True)
    try:
        await eventually(
            lambda: ready(standby, "stream") >= 200, timeout=30, interval=0.05, what="the router routes the outbox"
        )
        # The takeover held: the standby waits for this "commit of the old router under way"
        # (lease.py, WriteFence) after it has the lease and before it starts, so rows surely
        # pile up while no router runs, however fast the takeover is.
        fence.execute("SELECT pg_advisory_lock_shared(%s)", [WRITE_FENCE_KEY])
        router.kill()
        await eventually(
            lambda: "router lease taken" in standby.log(), timeout=20, interval=HEALTH_INTERVAL,
            what="the standby takes the lease",
        )
        # More than one batch of the reader's, so that the new router drains in several.
        await eventually(
            lambda: outbox_depth(standby) > BATCH_ROWS + 100, timeout=30, interval=0.05,
            what="rows committed while no router runs",
        )
        assert role(standby) == "standby"
        committed_at_takeover = len(committed_ids(publisher.lines))
        fence.execute("SELECT pg_advisory_unlock_shared(%s)", [WRITE_FENCE_KEY])
        await eventually(
            lambda: role(standby) == "router", timeout=20, interval=HEALTH_INTERVAL, what="the standby takes over"
        )
        await eventually(
            lambda: len(committed_ids(publisher.lines)) >= committed_at_takeover + 200,
            timeout=30,
            what="more commits under the new router",
        )
        publisher.tell("stop")
        publisher.read_until("done")
        committed = committed_ids(publisher.wait().splitlines())
    finally:
        fence.close()
        if publisher.proc.poll() is None:
            publisher.kill()

    def all_routed() -> bool:
        return outbox_depth(standby) == 0 and ready(standby, "stream") >= len(committed)

    try:
        await eventually(all_routed, timeout=30, interval=0.1, what="the outbox drained into the queue")
    except AssertionError:
        pass  # what is missing is named below
    taken = take(standby, "stream")
    counts = Counter(str(m["message_id"]) for m in taken)
    assert sorted(set(committed) - set(counts)) == [], "committed, never routed"
    assert [i for i, n in counts.items() if n > 1] == [], "routed more than once"
    assert sorted(set(counts) - set(committed)) == [], "routed, never committed"
    order = [str(m["message_id"]) for m in taken]
    moved = next((i for i, (got, sent) in enumerate(zip(order, committed, strict=True)) if got != sent), None)
    assert moved is None, f"out of the transactions' order from message {moved}: {order[moved:moved + 20]}"
    assert [m["body"] for m in taken] == list(range(len(committed)))
