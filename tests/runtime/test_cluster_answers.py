"""The cluster link when the router's answers are slow, or never reach the edge, in one
process (see test_cluster_link.py): a slow commit is waited for, not taken for a lost
answer; what a get took for an answer the edge never had goes back to its queue; a
callback that raises costs neither the rest of its batch nor the link.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from broker.cluster import edge as edge_module
from broker.engine.errors import Unavailable
from broker.engine.messages import StoredCopy
from tests.eventually import eventually

from .cluster_harness import Cluster, publish_request


def _slow_inserts(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Commits with messages take `seconds` (a synchronous replica, a lock wait)."""
    store = cluster.store
    write = store.write

    def slow(inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        if inserts:
            time.sleep(seconds)  # in the writer's thread, as a database's commit
        write(inserts, deletes, queues_to_delete)

    monkeypatch.setattr(store, "write", slow)


# -- a slow commit -----------------------------------------------------------------


async def test_a_commit_slower_than_the_answer_timeout_is_answered_and_resumes_nothing(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_module, "ANSWER_TIMEOUT", 0.5)
    await cluster.publish("other", "held")
    edge, sink, conn = await cluster.subscriber("s", queue="other")
    await eventually(lambda: len(sink.messages()) == 1, what="the message held unacked")
    generation = edge.generation
    _slow_inserts(cluster, monkeypatch, 1.5)

    _, routed = await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 1)), 5)

    assert routed == 1
    assert edge.generation == generation and edge.available
    assert not cluster.layer.router_items("reset")
    await asyncio.sleep(0.2)
    assert [m["body"] for m in sink.messages()] == ["held"]  # not delivered again
    assert [m["body"] for m in cluster.runtime.get("jobs", count=10, ack=True)] == [1]


async def test_an_answer_lost_after_its_ack_shows_at_the_next_beat(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router acked the batch (the edge's beat asked for it) and its answer, a commit
    later, is lost on the way: the router's reply to the next beat shows the gap."""
    edge = await cluster.edge()
    generation = edge.generation
    _slow_inserts(cluster, monkeypatch, 0.5)
    layer, original = cluster.layer, cluster.layer.send
    lost: list[dict[str, Any]] = []

    async def send(channel: str, message: dict[str, Any]) -> None:
        if message.get("type") == "broker.router_batch" and any(item[0] == "P" for item in message["items"]):
            if not lost:
                lost.append(message)
                return
        await original(channel, message)

    monkeypatch.setattr(layer, "send", send)
    publishing = edge.publish(0, publish_request("jobs", 1))
    assert publishing.settled is not None

    with pytest.raises(Unavailable, match="lost"):
        await asyncio.wait_for(publishing.settled, 3)  # ANSWER_TIMEOUT is 10 s
    assert lost and edge.generation == generation + 1


async def test_a_publish_unanswered_long_after_its_ack_fails_alone(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_module, "ANSWER_TIMEOUT", 0.5)
    monkeypatch.setattr(edge_module, "ANSWER_LATE_SECONDS", 1.0)
    await cluster.publish("other", "held")
    edge, sink, conn = await cluster.subscriber("s", queue="other")
    await eventually(lambda: len(sink.messages()) == 1, what="the message held unacked")
    generation = edge.generation
    fast = cluster.store.write
    _slow_inserts(cluster, monkeypatch, 3.0)

    with pytest.raises(Unavailable, match="may be stored"):
        await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 1)), 5)
    monkeypatch.setattr(cluster.store, "write", fast)  # commits are fast again

    assert edge.generation == generation and edge.available
    _, routed = await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 2)), 5)
    assert routed == 1
    assert [m["body"] for m in sink.messages()] == ["held"]
    assert [m["body"] for m in cluster.runtime.get("jobs", count=10, ack=True)] == [1, 2]
