"""The cluster link against what it cannot send and what it loses on the way, in one
process (see test_cluster_link.py): an item that cannot be encoded is refused alone and
the link goes on; a lost batch, either way, resumes the edge's connections.
"""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import ANY

import pytest

from broker.cluster import edge as edge_module
from broker.cluster import hub as hub_module
from broker.cluster.wire import EDGE_BATCH, ROUTER_BATCH, UNENCODABLE_ANSWER, UNENCODABLE_REQUEST
from broker.engine.errors import BrokerError, Unavailable
from broker.engine.jsoncodec import dumps
from broker.protocol.calls import QueueBrowseCall, QueueIsPrivateCall, RouterCall
from broker.protocol.link import CancelledItem
from broker.protocol.publish import PublishRequest
from broker.router.interface import Publishing
from broker.runtime.runtime import Runtime
from tests.eventually import eventually

from .cluster_harness import Cluster, EdgeSink, counts, publish_request, subscribe_args

# -- what cannot be encoded -------------------------------------------------------


def _refusal(outcome: int | BrokerError) -> tuple[str, str] | int:
    return (outcome.code, outcome.message) if isinstance(outcome, BrokerError) else outcome


async def _settled(publishing: Publishing) -> int | BrokerError:
    if publishing.settled is not None:
        await asyncio.wait({publishing.settled}, timeout=2)
    assert publishing.done(), "not answered in 2 s"
    return publishing.outcome()


async def test_a_publish_that_cannot_be_encoded_is_refused_alone_and_the_edge_goes_on(cluster: Cluster) -> None:
    edge = await cluster.edge()
    generation = edge.generation
    conn = edge.connect(EdgeSink())
    # One batch: a routing key with a lone surrogate (what json.loads makes of "\ud800")
    # between two publishes that go through.
    sent = [
        edge.publish(conn, publish_request("jobs", 1)),
        edge.publish(conn, publish_request("\ud800", 2)),
        edge.publish(conn, publish_request("jobs", 3)),
    ]
    assert len({id(p.settled) for p in sent}) == 1

    assert [_refusal(await _settled(p)) for p in sent] == [1, ("invalid", UNENCODABLE_REQUEST), 1]

    # A batch of nothing else: a header beyond 64 bits. Its number is not used up: the
    # router sees no gap, and what follows goes through.
    alone = edge.publish(conn, PublishRequest("", "jobs", dumps(4), {"n": 2**64}, True, None))
    assert _refusal(await _settled(alone)) == ("invalid", UNENCODABLE_REQUEST)
    await asyncio.sleep(0.2)  # beats of both sides, every 50 ms here
    assert await _settled(edge.publish(conn, publish_request("jobs", 5))) == 1
    assert [m["body"] for m in cluster.runtime.get("jobs", count=10, ack=True)] == [1, 3, 5]
    assert cluster.router is not None and edge.channel in cluster.router.hub._edges
    assert edge.generation == generation  # no reset, no resume


async def test_a_call_subscribe_ack_or_unsubscribe_that_cannot_be_encoded_is_answered_with_an_error(
    cluster: Cluster,
) -> None:
    edge = await cluster.edge()
    sink = EdgeSink()
    conn = edge.connect(sink)

    with pytest.raises(BrokerError, match="beyond 64 bits") as refused:
        await edge.call(QueueBrowseCall("jobs", None, 10**20, 10))  # a message browser's offset
    assert refused.value.code == "invalid"
    assert await edge.call(QueueIsPrivateCall("jobs")) is False

    # Two subscribes in one batch: the first refused here, the router's answer is the second's.
    edge.subscribe(conn, subscribe_args("\ud800", queue="jobs", shown="bad"), sink.answer("bad"))
    edge.subscribe(conn, subscribe_args("good", queue="jobs"), sink.answer("good"))
    edge.ack(conn, "big", 2**64, multiple=False)
    edge.unsubscribe(conn, "\udfff")
    await eventually(lambda: len(sink.of_type("answer")) == 2)

    bad, good = sink.of_type("answer")
    assert (bad["subscription"], bad["error"].code) == ("bad", "invalid")
    assert (good["subscription"], good["queue"], good["error"]) == ("good", "jobs", None)
    assert [(e["id"], e["code"]) for e in sink.of_type("error")] == [("big", "invalid")]
    assert sink.of_type("unsubscribed") == [{"type": "unsubscribed", "subscription": "\udfff"}]
    await cluster.publish("jobs", "hello")
    await eventually(lambda: [m["body"] for m in sink.messages()] == ["hello"])
    assert counts(cluster, "jobs")[2] == 1


async def test_an_answer_of_the_router_that_cannot_be_encoded_is_an_error_and_the_link_goes_on(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = await cluster.edge()
    execute = hub_module.execute

    def odd_answer(runtime: Runtime, call: RouterCall, *, holder: int | None = None) -> Any:
        # A queue named by a client of the router's own process, say, from a legacy /publish.
        if isinstance(call, QueueIsPrivateCall) and call.name == "odd":
            return "\ud800"
        return execute(runtime, call, holder=holder)

    monkeypatch.setattr(hub_module, "execute", odd_answer)
    generation = edge.generation
    sink = EdgeSink()
    conn = edge.connect(sink)
    edge.subscribe(conn, subscribe_args("s", queue="jobs", ack="auto"), sink.answer("s"))
    await eventually(lambda: bool(sink.of_type("answer")))

    with pytest.raises(BrokerError, match="cannot send its answer") as refused:
        await edge.call(QueueIsPrivateCall("odd"))
    assert refused.value.message == UNENCODABLE_ANSWER
    assert await edge.call(QueueIsPrivateCall("jobs")) is False

    # A batch of nothing else, which answers nothing: dropped, and its number is not used
    # up (the edge would see a gap and resume).
    assert cluster.router is not None
    cluster.router.hub._edges[edge.channel].push(CancelledItem("c", conn, "\ud800", "gone"))
    await asyncio.sleep(0.2)
    await cluster.publish("jobs", "still")
    await eventually(lambda: [m["body"] for m in sink.messages()] == ["still"])
    assert edge.generation == generation


# -- lost batches ------------------------------------------------------------------


def _losing(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, kind: str, item: str) -> list[int]:
    """The cluster's layer loses the first batch of `kind` holding an `item`, as a Redis
    restarted empty, or a blocking pop whose reply was lost, would; returns its seq once lost."""
    layer = cluster.layer
    send = layer.send
    lost: list[int] = []

    async def lossy(channel: str, message: dict[str, Any]) -> None:
        if not lost and message.get("type") == kind and any(entry[0] == item for entry in message["items"]):
            lost.append(message["seq"])
            return
        await send(channel, message)

    monkeypatch.setattr(layer, "send", lossy)
    return lost


async def _two_consumers(cluster: Cluster) -> tuple[Any, int, EdgeSink]:
    """Auto-ack consumers of `jobs` on edges a and b: edge A and its connection, and the sink
    of B's, which gets what A's ghost would swallow."""
    edge_a, _, conn_a = await cluster.subscriber("a", queue="jobs", ack="auto")
    _, sink_b, _ = await cluster.subscriber("b", queue="jobs", ack="auto")
    return edge_a, conn_a, sink_b


async def test_a_lost_batch_of_an_edge_is_noticed_by_its_next_one_and_the_edge_resumes(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge_a, conn_a, sink_b = await _two_consumers(cluster)
    generation = edge_a.generation
    monkeypatch.setattr(edge_module, "BEAT_SECONDS", 5.0)  # no beat of edge A's tells it first
    await asyncio.sleep(0.1)  # the watchdog's sleep of 50 ms ends
    lost = _losing(cluster, monkeypatch, EDGE_BATCH, "x")

    edge_a.disconnect(conn_a)  # the client on edge A goes away; its close is lost
    await eventually(lambda: bool(lost), interval=0.001)
    other = edge_a.connect(EdgeSink())
    publishing = edge_a.publish(other, publish_request("nowhere", 0))  # in the next batch

    assert isinstance(await _settled(publishing), Unavailable)  # that batch was not carried out
    await eventually(lambda: edge_a.generation == generation + 1, what="edge A resumed")
    await eventually(lambda: counts(cluster, "jobs")[2] == 1, what="no consumer left of the closed connection")
    for n in range(10):
        await cluster.publish("jobs", n)
    await eventually(lambda: len(sink_b.messages()) == 10, what="every message to the consumer that is there")
    assert await edge_a.publish_and_wait(publish_request("jobs", "after")) == (ANY, 1)


async def test_a_lost_batch_of_an_edge_is_noticed_by_its_next_beat(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge_a, conn_a, sink_b = await _two_consumers(cluster)
    generation = edge_a.generation
    lost = _losing(cluster, monkeypatch, EDGE_BATCH, "x")

    edge_a.disconnect(conn_a)  # its close is lost, and edge A has nothing more to say

    await eventually(lambda: bool(lost) and edge_a.generation == generation + 1, what="edge A resumed")
    await eventually(lambda: counts(cluster, "jobs")[2] == 1, what="no consumer left of the closed connection")


async def test_a_lost_batch_of_the_router_is_noticed_by_its_next_one_and_its_deliveries_come_again(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge, sink, conn = await cluster.subscriber("s", queue="jobs")
    generation = edge.generation
    lost = _losing(cluster, monkeypatch, ROUTER_BATCH, "d")

    await cluster.publish("jobs", "lost")
    await eventually(lambda: bool(lost), what="the delivery lost")
    await cluster.publish("jobs", "next")  # in the router's next batch

    await eventually(lambda: edge.generation == generation + 1, what="the edge resumed")
    await eventually(lambda: {m["body"] for m in sink.messages()} >= {"lost", "next"}, what="delivered again")
    again = [m for m in sink.messages() if m["body"] == "lost"]
    assert [m["redelivered"] for m in again] == [True]
    for message in sink.messages():
        edge.ack(conn, None, message["delivery_tag"], multiple=False)
    await eventually(lambda: counts(cluster, "jobs") == (0, 0, 1), what="every message acknowledged")


async def test_beats_batches_and_a_router_change_make_no_false_alarm_of_a_lost_batch(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    edge, sink, conn = await cluster.subscriber("s", queue="jobs", ack="auto")
    generation = edge.generation
    for n in range(20):  # batches with items both ways, beats and acks alone between them
        await edge.publish_and_wait(publish_request("jobs", n))
        await asyncio.sleep(0.02)
    await eventually(lambda: len(sink.messages()) == 20)
    await cluster.replace_router()
    await eventually(lambda: edge.generation == generation + 1, what="the edge follows the new router")
    for n in range(20, 40):
        await edge.publish_and_wait(publish_request("jobs", n))
    await eventually(lambda: len(sink.messages()) == 40)
    await asyncio.sleep(0.3)

    assert edge.generation == generation + 1
    assert not [record for record in caplog.records if "was lost" in record.getMessage()]
