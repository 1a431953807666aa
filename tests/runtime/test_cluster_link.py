"""The cluster link in one process: a real `Runtime` and `Hub`, `EdgeLink`s, and
channels' in-memory layer between them (broker/cluster/wire.py).

What tests/integration/test_cluster.py checks with real processes, PostgreSQL
and Redis, checked here in a second: batching, the order of answers and
deliveries, per-publish errors, and the HTTP API's calls. Failover and silence
are in test_cluster_failover.py. Timeouts are patched where they are used.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import msgpack
import pytest

import queues.selectors
from broker.cluster import edge as edge_module
from broker.cluster.edge import EdgeLink
from broker.cluster.wire import BATCHES_IN_FLIGHT, EDGE_BATCH, EDGES_GROUP, LINK_VERSION, ROUTER_BATCH
from broker.engine import errors
from broker.engine.errors import BrokerError, Forbidden, NotFound, Unavailable
from broker.engine.jsoncodec import dumps
from broker.engine.messages import make_message
from broker.engine.queues import AckMode, QueueSpec, delivery_cost
from broker.protocol.calls import (
    QueueGetCall,
    QueueIsPrivateCall,
    QueuePurgeCall,
    TopologyCall,
    decode_call,
)
from broker.protocol.link import decode_error, encode_error
from broker.protocol.server_frames import message_object
from broker.protocol.topology import QueueSaved, encode_change
from broker.runtime.calls import execute
from tests.conftest import Sink
from tests.eventually import eventually

from .cluster_harness import Cluster, EdgeSink, Router, counts, publish_request, receive, subscribe_args, ws_client

# -- batching and order --------------------------------------------------------


async def test_publishes_of_one_loop_turn_travel_as_one_batch_each_answered_with_its_routed_count(
    cluster: Cluster,
) -> None:
    edge = await cluster.edge()
    conn = edge.connect(EdgeSink())
    # Routed to 1 queue (jobs), 0 (no such queue) and 2 (fan: jobs and other), in turn.
    targets = [("", "jobs", 1), ("", "nowhere", 0), ("fan", "", 2)]
    sent = [
        edge.publish(conn, publish_request(key, n, exchange=exchange))
        for n in range(500)
        for exchange, key, _ in [targets[n % 3]]
    ]

    answers = [(await asyncio.wait_for(p.settled, 2))[p.slot] for p in sent]

    assert answers == [targets[n % 3][2] for n in range(500)]
    # One channel-layer message carried every publish, and one item answered them all.
    assert [sum(item[0] == "p" for item in items) for items in cluster.layer.batches(EDGE_BATCH, "p")] == [500]
    assert len(cluster.layer.router_items("P")) == 1
    queued = cluster.runtime.get("jobs", count=1000, ack=True)
    expected = [p.message_id for n, p in enumerate(sent) if n % 3 != 1]
    assert [m["message_id"] for m in queued] == expected  # in publish order


async def test_confirms_through_a_websocket_on_an_edge_come_in_publish_order_from_few_batches(
    cluster: Cluster,
) -> None:
    await cluster.edge()
    client = await ws_client()
    frames = [{"type": "publish", "id": n, "routing_key": "jobs", "body": n} for n in range(300)]
    frames[150] = {"type": "publish", "id": 150, "exchange": "nope", "body": 150}
    for frame in frames:
        await client.send_json_to(frame)

    replies = await receive(client, 300)

    assert [reply["id"] for reply in replies] == list(range(300))
    assert replies[150]["type"] == "error" and replies[150]["code"] == "not_found"
    assert all(r["type"] == "confirm" and r["routed"] == 1 for n, r in enumerate(replies) if n != 150)
    assert len(cluster.layer.batches(EDGE_BATCH, "p")) < 30  # far fewer messages than publishes
    assert counts(cluster, "jobs") == (299, 0, 0)
    await client.disconnect()


async def test_an_edge_keeps_a_window_of_unanswered_batches_and_sends_what_waits_as_one(cluster: Cluster) -> None:
    edge = await cluster.edge()
    conn = edge.connect(EdgeSink())
    await edge.call(QueueIsPrivateCall("jobs"))  # answered: nothing of ours is unanswered
    cluster.layer.hold(edge.channel)  # the router's answers are slow to come back
    sent = []
    for n in range(6):  # each in a loop turn of its own: without the window, six batches
        sent.append(edge.publish(conn, publish_request("jobs", n)))
        await asyncio.sleep(0.01)

    assert len(cluster.layer.batches(EDGE_BATCH, "p")) == BATCHES_IN_FLIGHT
    await cluster.layer.release(edge.channel)
    answers = [(await asyncio.wait_for(p.settled, 2))[p.slot] for p in sent]

    assert answers == [1] * 6
    sizes = [sum(item[0] == "p" for item in items) for items in cluster.layer.batches(EDGE_BATCH, "p")]
    assert sizes == [1] * BATCHES_IN_FLIGHT + [6 - BATCHES_IN_FLIGHT]
    assert [m["body"] for m in cluster.runtime.get("jobs", count=10, ack=True)] == list(range(6))


async def test_an_edge_sends_an_ack_alone_only_for_a_batch_that_fills_the_routers_window(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_module, "BEAT_SECONDS", 60.0)  # no beat carries an ack meanwhile
    edge, sink, conn = await cluster.subscriber("s", queue="jobs", ack="auto")
    start = len(cluster.layer.sent)
    for n in range(6):  # each in a router batch of its own
        await cluster.publish("jobs", n)
        await eventually(lambda n=n: len(sink.messages()) == n + 1)

    asked: int | None = None  # the router batch that asked for an ack at once
    deferred = alone = 0
    for message in cluster.layer.sent[start:]:
        if message["type"] == ROUTER_BATCH and message["items"]:
            assert asked is None  # its window was full: the ack came first
            if message["now"]:
                asked = message["seq"]
            else:
                deferred += 1
        elif message["type"] == EDGE_BATCH:
            assert not message["items"] and asked is not None and message["ack"] >= asked
            asked, alone = None, alone + 1
    assert deferred >= 2 and alone >= 2


async def test_the_router_carries_its_ack_on_and_answers_at_once_a_beat_that_waits_for_it(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = await cluster.edge()
    sink = EdgeSink()
    conn = edge.connect(sink)
    edge.subscribe(conn, subscribe_args("s", queue="jobs"), sink.answer("s"))
    await cluster.publish("jobs", "x")
    await eventually(lambda: len(sink.messages()) == 1)
    monkeypatch.setattr(edge_module, "BEAT_SECONDS", 0.05)
    start = len(cluster.layer.sent)
    edge.ack(conn, None, 1, multiple=False)  # a batch the router has nothing to answer with

    await eventually(lambda: counts(cluster, "jobs") == (0, 0, 1))
    await eventually(lambda: not edge._window.waiting, what="the router's ack")
    after = [m for m in cluster.layer.sent[start:] if m["type"] in (EDGE_BATCH, ROUTER_BATCH)]
    acked = next(m for m in after if m["type"] == EDGE_BATCH and m["items"])["seq"]
    first_answer = next(n for n, m in enumerate(after) if m["type"] == ROUTER_BATCH and m["ack"] >= acked)
    # Not at once: the edge's beat asked for it, and got it.
    asking = [m for m in after[:first_answer] if m["type"] == EDGE_BATCH and not m["items"]]
    assert asking and asking[-1]["now"] is True
    assert after[first_answer]["items"] == []


async def test_a_subscribe_is_answered_before_the_deliveries_it_starts_and_they_carry_its_id_and_tags(
    cluster: Cluster,
) -> None:
    for n in range(3):
        await cluster.publish("jobs", n)
    edge = await cluster.edge()
    sink = EdgeSink()
    conn = edge.connect(sink)
    edge.subscribe(conn, subscribe_args("missing", queue="nope"), sink.answer("missing"))
    edge.subscribe(conn, subscribe_args("s", queue="jobs", prefetch=2), sink.answer("s"))
    edge.subscribe(conn, subscribe_args("7", exchange="fan", shown=7), sink.answer("7"))
    await eventually(lambda: len(sink.of_type("answer")) == 3)

    first, second, *deliveries, third = sink.events
    assert (first["subscription"], first["queue"], type(first["error"])) == ("missing", None, NotFound)
    assert (second["subscription"], second["queue"], second["error"]) == ("s", "jobs", None)
    assert [(m["subscription"], m["delivery_tag"], m["body"], m["redelivered"]) for m in deliveries] == [
        ("s", 1, 0, False),
        ("s", 2, 1, False),
    ]
    assert third["subscription"] == "7" and third["queue"].startswith("amq.gen-") and third["error"] is None

    # A second connection, on another edge, counts its own tags.
    other_edge = await cluster.edge()
    other_sink = EdgeSink()
    other_conn = other_edge.connect(other_sink)
    other_edge.subscribe(other_conn, subscribe_args("o", queue="other"), other_sink.answer("o"))
    await eventually(lambda: bool(other_sink.of_type("answer")))
    await asyncio.wait_for(cluster.runtime.publish(publish_request("", "through fan", exchange="fan")), 2)
    await eventually(lambda: len(sink.messages()) == 3 and len(other_sink.messages()) == 1)
    last = sink.messages()[-1]
    assert (last["subscription"], last["delivery_tag"], last["body"]) == (7, 3, "through fan")
    only = other_sink.messages()[0]
    assert (only["subscription"], only["delivery_tag"], only["body"]) == ("o", 1, "through fan")
    assert counts(cluster, "jobs") == (2, 2, 1)  # "s" is full at prefetch 2: the fan copy waits


async def test_a_refused_publish_is_answered_alone_and_the_rest_of_its_batch_goes_through(
    cluster: Cluster,
) -> None:
    edge = await cluster.edge()
    conn = edge.connect(EdgeSink())
    sent = [
        edge.publish(conn, publish_request("jobs", 1)),
        edge.publish(conn, publish_request("", 2, exchange="nope")),
        edge.publish(conn, publish_request("jobs", 3)),
    ]
    assert len({id(p.settled) for p in sent}) == 1  # one batch

    answers = await asyncio.wait_for(sent[0].settled, 2)

    assert answers[0] == 1 and answers[2] == 1
    error = decode_error(answers[1])
    assert isinstance(error, NotFound) and "nope" in error.message
    assert [m["body"] for m in cluster.runtime.get("jobs", count=10, ack=True)] == [1, 3]
    with pytest.raises(NotFound):
        await asyncio.wait_for(edge.publish_and_wait(publish_request("", 4, exchange="nope")), 2)


async def test_a_failed_commit_fails_only_the_publishes_it_held(cluster: Cluster) -> None:
    edge = await cluster.edge()
    conn = edge.connect(EdgeSink())
    cluster.store.refuse_inserts = True
    sent = [
        edge.publish(conn, publish_request("jobs", "memory only", persistent=False)),
        edge.publish(conn, publish_request("jobs", "stored", persistent=True)),
        edge.publish(conn, publish_request("", "missing", exchange="nope")),
        edge.publish(conn, publish_request("nowhere", "unrouted", persistent=True)),
    ]

    answers = await asyncio.wait_for(sent[0].settled, 2)
    cluster.store.refuse_inserts = False

    assert [answers[0], answers[1][0], answers[2][0], answers[3]] == [1, "unavailable", "not_found", 0]


# -- calls of the HTTP API -------------------------------------------------------------


async def test_router_ops_over_the_link_return_what_they_return_on_the_router(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = cluster.runtime
    for n in range(2):
        await cluster.publish("jobs", n)
    owner = runtime.connect(Sink())
    private = runtime.subscribe(
        owner, subscription="p", subscription_json='"p"', ack_mode=AckMode.AUTO, prefetch=0, exchange="fan"
    )
    other = runtime.subscribe(
        owner, subscription="o", subscription_json='"o"', ack_mode=AckMode.AUTO, prefetch=0, exchange="fan"
    )
    edge = await cluster.edge()

    calls: list[tuple[str, list[Any]]] = [
        ("queue.counts", [["jobs", "other", "missing"]]),
        ("queue.snapshot", [["jobs"]]),
        ("queue.names", [""]),
        ("queue.names", ["AMQ.GEN"]),
        ("queue.names", ["no such name"]),
        ("queue.infos", [["jobs", private, "missing"]]),
        ("queue.listed", []),
        ("queue.is_private", [private]),
        ("queue.is_private", ["jobs"]),
        ("queue.redeclared", ["jobs", 1]),
    ]
    for op, args in calls:
        here = execute(runtime, decode_call(op, args))
        if inspect.isawaitable(here):  # queue.redeclared: it may wait for the writer
            here = await here
        assert await edge.call(decode_call(op, args)) == here, op
    assert execute(runtime, decode_call("queue.names", ["amq.GEN"])) == [2, sorted([private, other])]
    assert execute(runtime, decode_call("queue.names", [private[-6:].upper()])) == [2, [private]]
    assert execute(runtime, decode_call("queue.names", ["jobs"])) == [2, []]  # stored queues are not private
    counts, infos = execute(runtime, decode_call("queue.infos", [["jobs", private]]))
    assert set(counts) == {"jobs", private} and [info["name"] for info in infos] == [private]

    head = message_object(runtime.broker.queues["jobs"].ready[0].message, redelivered=False)
    assert await edge.call(QueueGetCall("jobs", 1, False)) == [head]
    assert await edge.call(QueuePurgeCall("other")) == 0
    assert await edge.call(TopologyCall(encode_change(QueueSaved(QueueSpec("declared-remotely"))))) is None
    assert "declared-remotely" in runtime.broker.queues
    # As the HTTP API calls them, from a worker thread of an edge process.
    live = await asyncio.to_thread(queues.selectors.queue_live_counts, ["jobs"])
    assert (live["jobs"].messages_ready, live["jobs"].consumers) == (2, 0)


@pytest.mark.parametrize(
    ("op", "args", "error_class"),
    [
        ("queue.get", ["missing", 1, True], NotFound),
        ("queue.get", ["jobs", 0, True], BrokerError),
        ("queue.purge", [None], Forbidden),  # None: the test's private queue
    ],
)
async def test_an_error_of_a_router_op_arrives_over_the_link_as_raised(
    cluster: Cluster, op: str, args: list[Any], error_class: type[BrokerError]
) -> None:
    runtime = cluster.runtime
    owner = runtime.connect(Sink())
    private = runtime.subscribe(
        owner, subscription="p", subscription_json='"p"', ack_mode=AckMode.AUTO, prefetch=0, exchange="fan"
    )
    args = [private if arg is None else arg for arg in args]
    with pytest.raises(BrokerError) as local:
        result = execute(runtime, decode_call(op, args))
        if inspect.isawaitable(result):  # a get
            await result
    edge = await cluster.edge()

    with pytest.raises(BrokerError) as remote:
        await edge.call(decode_call(op, args))

    assert type(local.value) is error_class
    assert type(remote.value) is error_class
    assert (remote.value.code, remote.value.message, remote.value.fields) == (
        local.value.code,
        local.value.message,
        local.value.fields,
    )


@dataclass(frozen=True)
class UnknownCall:
    op: ClassVar[str] = "no.such.op"


async def test_an_op_that_fails_unexpectedly_is_unavailable_and_the_link_goes_on(cluster: Cluster) -> None:
    edge: EdgeLink = await cluster.edge()
    with pytest.raises(Unavailable, match="topology.apply"):
        await edge.call(TopologyCall({"kind": "teleport"}))
    with pytest.raises(Unavailable, match="no.such.op"):
        await edge.call(UnknownCall())  # type: ignore[arg-type]  # a call of a newer edge
    assert await edge.call(QueueIsPrivateCall("jobs")) is False


ERROR_CLASSES = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, BrokerError)]


@pytest.mark.parametrize("error_class", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_engine_error_crosses_the_link_with_its_code_status_and_fields(error_class: type[BrokerError]) -> None:
    sent = error_class("queue 'q' is odd", fields={"name": ["is odd"]})
    received = decode_error(msgpack.unpackb(msgpack.packb(encode_error(sent))))
    assert type(received) is error_class
    assert (received.code, received.status, received.message, received.fields) == (
        sent.code,
        sent.status,
        sent.message,
        sent.fields,
    )


async def test_a_connection_s_credit_comes_back_from_its_edge_as_its_batches_are_written(cluster: Cluster) -> None:
    """The router sends a subscription to a named queue no more than its credit; the edge
    says which batches its socket has taken (a `WrittenItem`), and the router sends on."""
    body = "x" * 1000
    cost = delivery_cost(make_message(
        message_id="m", exchange="", routing_key="jobs", body_json=dumps(body), headers={}, persistent=True,
        published_at="2026-12-07T00:00:00Z",
    )) + len(dumps("s"))
    cluster.runtime.broker.credit = 3 * cost  # for connections opened from now on
    for _ in range(8):
        await cluster.publish("jobs", body)
    edge, sink, conn = await cluster.subscriber("s", queue="jobs", ack="auto")
    await eventually(lambda: len(sink.messages()) == 3)
    await asyncio.sleep(0.1)
    assert len(sink.messages()) == 3  # the rest waits in the queue
    assert counts(cluster, "jobs")[0] == 5
    edge.written(conn, 1)  # the batch of three has left
    await eventually(lambda: len(sink.messages()) == 6)
    edge.written(conn, 1)
    await eventually(lambda: len(sink.messages()) == 8)
    assert [m["delivery_tag"] for m in sink.messages()] == list(range(1, 9))


async def test_an_unsubscribe_on_an_edge_is_answered_after_the_last_delivery_and_may_cross_its_subscribe(
    cluster: Cluster,
) -> None:
    await cluster.edge()
    client = await ws_client()
    await client.send_json_to({"type": "subscribe", "id": "s", "queue": "jobs"})  # auto-ack
    assert (await client.receive_json_from(timeout=2))["type"] == "subscribed"
    for body in range(3):
        await cluster.publish("jobs", body)
    await client.send_json_to({"type": "unsubscribe", "id": "s"})
    frames = [await client.receive_json_from(timeout=2) for _ in range(4)]
    # As on one node: every message handed out before the unsubscribe, then its answer.
    assert [f["type"] for f in frames] == ["message", "message", "message", "unsubscribed"]
    # Sent before the subscribe is answered, the unsubscribe still finds it.
    await client.send_json_to({"type": "subscribe", "id": "t", "queue": "jobs"})
    await client.send_json_to({"type": "unsubscribe", "id": "t"})
    replies = [await client.receive_json_from(timeout=2) for _ in range(2)]
    assert [(r["type"], r["id"]) for r in replies] == [("subscribed", "t"), ("unsubscribed", "t")]
    await cluster.publish("jobs", "after")
    assert await client.receive_nothing(timeout=0.1)
    assert counts(cluster, "jobs") == (1, 0, 0)
    await client.disconnect()


async def test_an_edge_skips_an_item_it_does_not_know_and_carries_out_the_rest(cluster: Cluster) -> None:
    edge = await cluster.edge()
    sink = EdgeSink()
    conn = edge.connect(sink)

    # "z": a kind of a newer release; 5 and [[1]]: not items at all (a bug)
    edge.on_batch([["z", conn], 5, [[1]], ["d", conn, ['{"type":"pong"}'], 1]])

    assert sink.events == [{"type": "pong"}]


async def test_the_router_skips_what_is_not_an_item_and_answers_the_rest_of_its_batch(cluster: Cluster) -> None:
    edge = await cluster.edge()
    conn = edge.connect(EdgeSink())
    first = edge.publish(conn, publish_request("jobs", 1))
    edge._push(cast(Any, 5))  # a bug's item, not even a list: its log must not fail too
    edge._push(cast(Any, None))
    second = edge.publish(conn, publish_request("jobs", 2))
    assert first.settled is second.settled  # one batch

    assert await asyncio.wait_for(first.settled, 2) == [1, 1]
    assert [m["body"] for m in cluster.runtime.get("jobs", count=10, ack=True)] == [1, 2]


async def test_nodes_of_another_link_version_neither_follow_nor_serve_each_other(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = cluster.router.hub if cluster.router is not None else None
    assert hub is not None
    hub.on_batch({"type": EDGE_BATCH, "edge": "old", "gen": 1, "link": 1, "seq": 1, "ack": 0, "items": [["o", 1]]})
    assert "old" not in hub._edges  # a batch of another release is not served

    monkeypatch.setattr(edge_module, "LINK_VERSION", LINK_VERSION + 1)
    other = EdgeLink(cluster.layer)
    await other.start()
    try:
        assert not await other.wait_for_router(0.5)  # the router's beat is not followed
    finally:
        await other.stop()


async def test_an_edge_that_redis_forgot_joins_the_edges_group_again_when_it_says_hello(cluster: Cluster) -> None:
    # A Redis restarted empty has forgotten the edges' group: the router's beats (and the
    # memory alarm and store state they carry) would no longer reach the edge.
    layer = cluster.layer
    lonely = EdgeLink(layer)
    await lonely.start()
    try:
        assert await lonely.wait_for_router(1.0)
        await layer.group_discard(EDGES_GROUP, lonely.channel)
        lonely._lose_router("as after a Redis restart")  # what a silent router causes, sooner
        await eventually(lambda: lonely.available and lonely.channel in layer.groups.get(EDGES_GROUP, {}))
    finally:
        await lonely.stop()


async def test_an_edge_does_not_follow_a_router_of_an_older_lease_term(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The running router took the lease after the other (a higher term); the other was
    # stopped and, woken, beats for a moment before it finds its lease gone.
    assert cluster.router is not None
    cluster.router.hub.term = 7
    edge = await cluster.edge()
    current = edge.epoch
    stale = Router(cluster.store, cluster.layer, term=3)
    await stale.start()
    try:
        await asyncio.sleep(0.3)  # beats of both, every 50 ms here
        assert edge.epoch == current
        # Once the higher term is silent for long, a lower one is followed (a cluster started
        # again on a new database).
        monkeypatch.setattr(edge_module, "STALE_TERM_SECONDS", 0.2)
        await cluster.stop_router()
        await eventually(lambda: edge.epoch == stale.hub.epoch, timeout=5, what="the edge follows the lower term")
    finally:
        await stale.stop()


async def test_an_edge_that_follows_its_router_joins_the_edges_group_again_every_few_seconds(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An edge busy with batches hears its router in their answers and never says hello; a
    # Redis restarted empty would leave it out of the beats (memory alarm, store state).
    monkeypatch.setattr(edge_module, "REJOIN_SECONDS", 0.2)
    layer = cluster.layer
    busy = await cluster.edge()
    await layer.group_discard(EDGES_GROUP, busy.channel)
    epoch = busy.epoch
    await eventually(lambda: busy.channel in layer.groups.get(EDGES_GROUP, {}), what="the edge joined again")
    assert busy.epoch == epoch  # without losing its router


async def test_a_batch_that_arrives_twice_is_carried_out_once(cluster: Cluster) -> None:
    # A send retried after Redis took it (the reply lost on the way) pushes it twice.
    edge, sink, conn = await cluster.subscriber("q", queue="jobs")
    publishing = edge.publish(conn, publish_request("jobs", "once"))
    await asyncio.wait_for(publishing.settled, 2)
    await eventually(lambda: len(sink.messages()) == 1)
    layer = cluster.layer
    (publish_batch,) = [m for m in layer.sent if m["type"] == EDGE_BATCH and any(i[0] == "p" for i in m["items"])]
    (delivery_batch,) = [m for m in layer.sent if m["type"] == ROUTER_BATCH and any(i[0] == "d" for i in m["items"])]
    assert edge.router_channel is not None
    await layer.send(edge.router_channel, publish_batch)
    await layer.send(edge.channel, delivery_batch)
    await asyncio.sleep(0.2)
    assert len(sink.messages()) == 1
    assert counts(cluster, "jobs") == (0, 1, 1)  # routed once
