"""The cluster link when a router changes or either side falls silent, in one process
(see test_cluster_link.py): connections resume by themselves, what was in flight fails
with `unavailable`, nothing confirmed is lost.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.cluster import edge as edge_module
from broker.cluster import hub as hub_module
from broker.cluster.wire import BATCHES_IN_FLIGHT, EDGE_BATCH
from broker.engine.errors import Unavailable
from broker.protocol.calls import (
    QueueCountsCall,
    QueueIsPrivateCall,
)
from broker.runtime import runtime as runtime_module
from tests.eventually import eventually

from .cluster_harness import Cluster, EdgeSink, counts, publish_request, receive, subscribe_args, ws_client

# -- failover --------------------------------------------------------------------


async def test_after_a_router_change_a_connection_resumes_by_itself_with_tags_above_those_it_saw(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "STATS_SECONDS", 0.05)
    for n in range(3):
        await cluster.publish("jobs", n)
    edge = await cluster.edge()
    sink = EdgeSink()
    conn = edge.connect(sink)
    edge.subscribe(conn, subscribe_args("refused", queue="nope"), sink.answer("refused"))
    edge.subscribe(conn, subscribe_args("s", queue="jobs"), sink.answer("s"))
    edge.watch(conn, True)
    await eventually(lambda: len(sink.messages()) == 3 and bool(sink.of_type("stats")))
    assert [m["delivery_tag"] for m in sink.messages()] == [1, 2, 3]
    subscribes_sent = len(cluster.layer.edge_items("s"))

    await cluster.replace_router()
    await eventually(lambda: len(sink.messages()) == 6, what="the redeliveries")

    again = sink.messages()[3:]
    assert [(m["body"], m["delivery_tag"], m["redelivered"], m["subscription"]) for m in again] == [
        (0, 4, True, "s"),
        (1, 5, True, "s"),
        (2, 6, True, "s"),
    ]
    assert len(cluster.layer.edge_items("s")) == subscribes_sent  # resumed, not subscribed again
    seen = len(sink.events)
    await eventually(lambda: bool([e for e in sink.events[seen:] if e["type"] == "stats"]), what="still watching")
    assert counts(cluster, "jobs") == (0, 3, 1)
    edge.ack(conn, "old", 1, multiple=False)  # the previous router's tag: ignored
    edge.ack(conn, "new", 4, multiple=False)
    edge.ack(conn, "bogus", 99, multiple=False)
    await eventually(lambda: bool(sink.of_type("error")))
    # Items are applied in order: the error for "bogus" follows whatever "old" caused.
    assert [(e["id"], e["code"]) for e in sink.of_type("error")] == [("bogus", "precondition_failed")]
    assert counts(cluster, "jobs") == (0, 2, 1)
    assert sink.of_type("cancelled") == []  # "refused" was not resumed, to be refused again


async def test_what_is_in_flight_at_a_router_change_fails_with_unavailable(cluster: Cluster) -> None:
    edge = await cluster.edge()
    sink = EdgeSink()
    conn = edge.connect(sink)
    await cluster.stop_router()  # killed: the edge has not noticed yet
    batch = edge.publish(conn, publish_request("jobs", "lost")).settled
    edge.subscribe(conn, subscribe_args("s", queue="jobs"), sink.answer("s"))
    call = asyncio.create_task(edge.call(QueueCountsCall(["jobs"])))
    http_publish = asyncio.create_task(edge.publish_and_wait(publish_request("jobs", "lost too")))
    # Sent to the dead router, or waiting in the outbox for a place in the flow-control window.
    await eventually(lambda: bool(cluster.layer.edge_items("p")), what="sent to the dead router")
    assert not (batch.done() or call.done() or http_publish.done() or sink.events)

    await cluster.start_router()

    with pytest.raises(Unavailable, match="changed"):
        await asyncio.wait_for(batch, 2)
    with pytest.raises(Unavailable, match="changed"):
        await asyncio.wait_for(http_publish, 2)
    with pytest.raises(Unavailable, match="changed"):
        await asyncio.wait_for(call, 2)
    (answer,) = sink.of_type("answer")
    assert isinstance(answer["error"], Unavailable)
    # The new router serves the same link, the same connection.
    _, routed = await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", "kept")), 2)
    assert routed == 1
    edge.subscribe(conn, subscribe_args("s", queue="jobs"), sink.answer("s"))
    await eventually(lambda: len(sink.messages()) == 1)
    assert sink.messages()[0]["body"] == "kept"


async def test_a_websocket_client_on_an_edge_carries_on_through_a_router_change(cluster: Cluster) -> None:
    await cluster.edge()
    client = await ws_client()
    await client.send_json_to({"type": "subscribe", "id": "w", "queue": "jobs", "ack": "client"})
    assert await client.receive_json_from(timeout=2) == {
        "type": "subscribed",
        "id": "w",
        "subscription": "w",
        "queue": "jobs",
    }
    await cluster.publish("jobs", "a")
    await cluster.publish("jobs", "b")
    assert [m["delivery_tag"] for m in await receive(client, 2)] == [1, 2]

    await cluster.stop_router()
    await client.send_json_to({"type": "publish", "id": "lost", "routing_key": "jobs", "body": "c"})
    await eventually(lambda: bool(cluster.layer.edge_items("p")), what="the publish sent to the dead router")
    await cluster.start_router()

    frames = await receive(client, 3)
    (error,) = [f for f in frames if f["type"] == "error"]
    assert (error["id"], error["code"]) == ("lost", "unavailable")
    messages = [f for f in frames if f["type"] == "message"]
    assert [(m["body"], m["delivery_tag"], m["redelivered"]) for m in messages] == [("a", 3, True), ("b", 4, True)]
    await client.send_json_to({"type": "ack", "id": "old", "delivery_tag": 1})
    await client.send_json_to({"type": "ack", "id": "bad", "delivery_tag": 99})
    reply = await client.receive_json_from(timeout=2)
    assert (reply["id"], reply["code"]) == ("bad", "precondition_failed")  # nothing for "old"
    await client.send_json_to({"type": "ack", "delivery_tag": 4, "multiple": True})
    await eventually(lambda: counts(cluster, "jobs") == (0, 0, 1))
    assert await client.receive_nothing(timeout=0.05)
    await client.disconnect()


# -- silence -----------------------------------------------------------------------


async def test_an_edge_that_hears_no_router_fails_what_is_in_flight_and_resumes_on_the_next(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_module, "ROUTER_TIMEOUT", 0.3)
    edge, sink, conn = await cluster.subscriber("kept", queue="jobs")
    await cluster.stop_router()  # no router at all, this time
    batch = edge.publish(conn, publish_request("jobs", "lost")).settled
    edge.subscribe(conn, subscribe_args("failed", queue="other"), sink.answer("failed"))
    call = asyncio.create_task(edge.call(QueueCountsCall(["jobs"])))

    with pytest.raises(Unavailable, match="went away"):
        await asyncio.wait_for(batch, 2)
    with pytest.raises(Unavailable, match="went away"):
        await asyncio.wait_for(call, 1)
    assert isinstance(sink.of_type("answer")[-1]["error"], Unavailable)
    assert not edge.available
    refused = edge.publish(conn, publish_request("jobs", "now"))
    assert refused.done() and isinstance(refused.outcome(), Unavailable)
    with pytest.raises(Unavailable):
        await edge.call(QueueCountsCall(["jobs"]))

    await cluster.start_router()
    await eventually(lambda: edge.available and counts(cluster, "jobs")[2] == 1, what="resumed")
    assert counts(cluster, "other")[2] == 0  # the failed subscribe is not resumed


async def test_a_silent_edge_is_dropped_its_messages_requeued_and_it_resumes_after_a_reset(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "EDGE_TIMEOUT", 0.3)
    for n in range(3):
        await cluster.publish("jobs", n)
    quiet = await cluster.edge()
    quiet_sink = EdgeSink()
    quiet_conn = quiet.connect(quiet_sink)
    quiet.subscribe(quiet_conn, subscribe_args("q", queue="jobs"), quiet_sink.answer("q"))
    await eventually(lambda: len(quiet_sink.messages()) == 3)
    other = await cluster.edge()
    other_sink = EdgeSink()
    other_conn = other.connect(other_sink)
    other.subscribe(other_conn, subscribe_args("o", queue="jobs", prefetch=3), other_sink.answer("o"))
    await eventually(lambda: bool(other_sink.of_type("answer")))
    assert other_sink.messages() == []

    cluster.layer.cut_off.add(quiet.channel)  # its batches are lost from now on
    await eventually(lambda: len(other_sink.messages()) == 3, timeout=3, what="requeued to the other edge")

    assert [(m["body"], m["redelivered"]) for m in other_sink.messages()] == [(0, True), (1, True), (2, True)]
    assert counts(cluster, "jobs") == (0, 3, 1)
    generation = quiet.generation
    cluster.layer.cut_off.discard(quiet.channel)
    await eventually(lambda: counts(cluster, "jobs")[2] == 2, what="the quiet edge resumed")
    assert cluster.layer.router_items("reset")  # the router told it so
    assert quiet.generation == generation + 1
    # "o" is full (prefetch 3): the next message goes to the resumed "q", above its old tags.
    await cluster.publish("jobs", "after")
    await eventually(lambda: len(quiet_sink.messages()) == 4)
    last = quiet_sink.messages()[-1]
    assert (last["body"], last["delivery_tag"], last["subscription"]) == ("after", 4, "q")
    assert quiet_sink.of_type("error") == [] and quiet_sink.of_type("cancelled") == []


async def test_a_dropped_edge_resumes_once_however_many_batches_it_sent_before_hearing_the_reset(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "EDGE_TIMEOUT", 0.3)
    quiet = await cluster.edge()
    sink = EdgeSink()
    conn = quiet.connect(sink)
    quiet.subscribe(conn, subscribe_args("q", queue="jobs"), sink.answer("q"))
    await eventually(lambda: bool(sink.of_type("answer")))
    cluster.layer.cut_off.add(quiet.channel)
    await eventually(lambda: counts(cluster, "jobs")[2] == 0, timeout=3, what="the silent edge dropped")
    generation = quiet.generation
    cluster.layer.cut_off.discard(quiet.channel)
    # A busy edge: a second batch leaves before the router's answer to the first is back.
    quiet.watch(conn, True)
    await asyncio.sleep(0)
    quiet.watch(conn, False)
    await asyncio.sleep(0)
    stale = [
        m
        for m in cluster.layer.sent
        if m["type"] == EDGE_BATCH and m["edge"] == quiet.channel and m["gen"] == generation and m["items"]
    ]
    assert [m["items"][0] for m in stale[-2:]] == [["w", conn, True], ["w", conn, False]]

    await eventually(lambda: counts(cluster, "jobs")[2] == 1, what="resumed")
    # The router answered both batches with a reset; the second is old news to the
    # resumed edge, not a reason to fail this call and resume once more.
    assert len(cluster.layer.router_items("reset")) == 2
    assert await quiet.call(QueueIsPrivateCall("jobs")) is False
    assert quiet.generation == generation + 1
    assert len([item for item in cluster.layer.edge_items("a") if item[1] == conn]) == 1


async def test_answers_lost_on_the_way_fail_what_waits_on_them_and_the_edge_resumes(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis restart loses the router's batches (answers and acks) while beats go on:
    the edge must not wait for ever with a full window and `/health` at 200. (A batch of
    the router's that comes after a lost one tells it sooner: test_cluster_link_faults.py.)"""
    monkeypatch.setattr(edge_module, "ANSWER_TIMEOUT", 0.5)
    edge = await cluster.edge()
    sink = EdgeSink()
    conn = edge.connect(sink)
    generation = edge.generation
    layer, original = cluster.layer, cluster.layer.send
    losing = [True]
    lost: list[dict[str, Any]] = []

    async def send(channel: str, message: dict[str, Any]) -> None:
        if message.get("type") == "broker.router_batch" and losing[0]:
            lost.append(message)
            return
        await original(channel, message)

    def answers_lost() -> int:
        return sum(item[0] == "P" for message in lost for item in message["items"])

    monkeypatch.setattr(layer, "send", send)
    first = edge.publish(conn, publish_request("jobs", 1)).settled
    await eventually(lambda: answers_lost() == 1, what="the answer to the first publish lost")
    second = edge.publish(conn, publish_request("jobs", 2)).settled
    await eventually(lambda: answers_lost() == 2, what="the answer to the second publish lost")
    losing[0] = False  # Redis is back
    with pytest.raises(Unavailable, match="lost"):
        await asyncio.wait_for(first, 5)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(second, 1)
    assert edge.generation == generation + 1 and edge.available
    _, routed = await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 3)), 2)
    assert routed == 1


async def test_deliveries_lost_on_the_way_go_back_to_their_queue_and_the_edge_resumes(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis restart loses the router's batches that filled its window to an edge waiting
    for nothing of its own: the router must not wait for ever for their ack."""
    monkeypatch.setattr(hub_module, "ANSWER_TIMEOUT", 0.5)
    monkeypatch.setattr(edge_module, "BEAT_SECONDS", 0.05)
    edge, sink, conn = await cluster.subscriber("s", queue="jobs")
    generation = edge.generation
    layer, original = cluster.layer, cluster.layer.send
    lost: list[dict[str, Any]] = []

    async def send(channel: str, message: dict[str, Any]) -> None:
        if message.get("type") == "broker.router_batch" and message.get("items") and len(lost) < BATCHES_IN_FLIGHT:
            lost.append(message)
            return
        await original(channel, message)

    monkeypatch.setattr(layer, "send", send)
    for n in range(BATCHES_IN_FLIGHT + 1):
        await cluster.publish("jobs", n)
        await asyncio.sleep(0.01)  # a batch each
    await eventually(lambda: len(lost) == BATCHES_IN_FLIGHT, what="the window's batches lost")

    await eventually(lambda: len(sink.messages()) == BATCHES_IN_FLIGHT + 1, timeout=5, what="delivered again")
    assert edge.generation == generation + 1
    assert sorted(m["body"] for m in sink.messages()) == list(range(BATCHES_IN_FLIGHT + 1))
    assert cluster.layer.router_items("reset")


async def test_an_edge_the_router_dropped_and_forgot_resumes_when_it_speaks_again(cluster: Cluster) -> None:
    """A one-way failure longer than the router remembers dropped edges: the edge still
    hears the router, which no longer knows its connections. Its next batch gets a reset."""
    edge, sink, conn = await cluster.subscriber("s", queue="jobs")
    generation = edge.generation
    router = cluster.router
    assert router is not None
    dropped = next(e for e in router.hub._edges.values() if e.channel == edge.channel)
    router.hub._drop(dropped)
    router.hub._dropped.clear()  # forgotten, as 10 x EDGE_TIMEOUT later
    assert counts(cluster, "jobs")[2] == 0

    edge.watch(conn, True)  # any batch with items

    await eventually(lambda: edge.generation == generation + 1, timeout=2, what="reset and resumed")
    await eventually(lambda: counts(cluster, "jobs")[2] == 1, what="its subscription back")
    await cluster.publish("jobs", "after")
    await eventually(lambda: [m["body"] for m in sink.messages()] == ["after"])


async def test_an_edge_knows_whether_the_router_s_message_store_answers(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router's beat carries it: an edge's /health says 503 through a database outage too."""
    from broker.runtime import store_watch

    monkeypatch.setattr(store_watch, "CHECK_SECONDS", 0.05)
    edge = await cluster.edge()
    await eventually(lambda: edge.store_reachable is True, what="the first beat")
    cluster.store.refuse_inserts = True  # the database is away: the probe fails
    await eventually(lambda: edge.store_reachable is False, what="the outage reaches the edge")
    cluster.store.refuse_inserts = False
    await eventually(lambda: edge.store_reachable is True, what="and its end")


async def test_deliveries_sent_before_an_edge_resumed_are_not_given_to_the_resumed_connections(
    cluster: Cluster,
) -> None:
    # The router's batch to the old connections waited on the way (in Redis, or in a send
    # under way while the link to Redis was cut) and arrives after the edge resumed them.
    edge, sink, conn = await cluster.subscriber("q", queue="jobs")
    cluster.layer.hold(edge.channel)
    await cluster.publish("jobs", "held")
    await eventually(lambda: bool(cluster.layer.held[edge.channel]), what="the delivery on its way")
    epoch, channel = edge.epoch, edge.router_channel
    assert epoch is not None and channel is not None
    edge._lose_router("as after a silence")  # what a router silent for 3 s causes
    edge._follow(epoch, channel)
    # The resumed connection gets the message again from the router (its old connection's
    # unacknowledged message, requeued), after the old batch.
    await eventually(lambda: counts(cluster, "jobs")[1] == 1 and counts(cluster, "jobs")[2] == 1, what="resumed")
    await eventually(lambda: len(cluster.layer.held[edge.channel]) >= 2, what="the redelivery on its way")
    await cluster.layer.release(edge.channel)
    await eventually(lambda: bool(sink.messages()))
    await asyncio.sleep(0.2)
    assert [(m["body"], m["redelivered"]) for m in sink.messages()] == [("held", True)]
