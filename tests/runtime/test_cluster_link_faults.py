"""The cluster link against what it cannot send and what it loses on the way, in one
process (see test_cluster_link.py): an item that cannot be encoded is refused alone and
the link goes on; a lost batch, either way, resumes the edge's connections.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.cluster import hub as hub_module
from broker.cluster.wire import UNENCODABLE_ANSWER, UNENCODABLE_REQUEST
from broker.engine.errors import BrokerError
from broker.engine.jsoncodec import dumps
from broker.protocol.calls import QueueBrowseCall, QueueIsPrivateCall, RouterCall
from broker.protocol.publish import PublishRequest
from broker.runtime.runtime import Runtime
from tests.eventually import eventually

from .cluster_harness import Cluster, EdgeSink, counts, publish_request, subscribe_args

# -- what cannot be encoded -------------------------------------------------------


def _refusal(outcome: int | BrokerError) -> tuple[str, str] | int:
    return (outcome.code, outcome.message) if isinstance(outcome, BrokerError) else outcome


async def test_a_publish_that_cannot_be_encoded_is_refused_alone_and_the_edge_goes_on(cluster: Cluster) -> None:
    edge = await cluster.edge()
    conn = edge.connect(EdgeSink())
    # One batch: a routing key with a lone surrogate (what json.loads makes of "\ud800")
    # between two publishes that go through.
    sent = [
        edge.publish(conn, publish_request("jobs", 1)),
        edge.publish(conn, publish_request("\ud800", 2)),
        edge.publish(conn, publish_request("jobs", 3)),
    ]
    assert len({id(p.settled) for p in sent}) == 1
    await asyncio.wait_for(asyncio.shield(sent[0].settled), 2)  # type: ignore[arg-type]

    assert [_refusal(p.outcome()) for p in sent] == [1, ("invalid", UNENCODABLE_REQUEST), 1]

    # A batch of nothing else: a header beyond 64 bits. Its number is not used up: the
    # router sees no gap, and what follows goes through.
    alone = edge.publish(conn, PublishRequest("", "jobs", dumps(4), {"n": 2**64}, True, None))
    await asyncio.wait_for(asyncio.shield(alone.settled), 2)  # type: ignore[arg-type]
    assert _refusal(alone.outcome()) == ("invalid", UNENCODABLE_REQUEST)
    await asyncio.sleep(0.2)  # beats of both sides, every 50 ms here
    later = edge.publish(conn, publish_request("jobs", 5))
    await asyncio.wait_for(asyncio.shield(later.settled), 2)  # type: ignore[arg-type]
    assert later.outcome() == 1
    assert [m["body"] for m in cluster.runtime.get("jobs", count=10, ack=True)] == [1, 3, 5]
    assert cluster.router is not None and edge.channel in cluster.router.hub._edges


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

    def odd_answer(runtime: Runtime, call: RouterCall) -> Any:
        # A queue named by a client of the router's own process, say, from a legacy /publish.
        return "\ud800" if isinstance(call, QueueIsPrivateCall) and call.name == "odd" else execute(runtime, call)

    monkeypatch.setattr(hub_module, "execute", odd_answer)
    sink = EdgeSink()
    conn = edge.connect(sink)
    edge.subscribe(conn, subscribe_args("s", queue="jobs", ack="auto"), sink.answer("s"))
    await eventually(lambda: bool(sink.of_type("answer")))

    with pytest.raises(BrokerError, match="cannot send its answer") as refused:
        await edge.call(QueueIsPrivateCall("odd"))
    assert refused.value.message == UNENCODABLE_ANSWER
    assert await edge.call(QueueIsPrivateCall("jobs")) is False
    await cluster.publish("jobs", "still")
    await eventually(lambda: [m["body"] for m in sink.messages()] == ["still"])
