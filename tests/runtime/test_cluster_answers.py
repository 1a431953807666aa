"""The cluster link when the router's answers are slow, or never reach the edge, in one
process (see test_cluster_link.py): a slow commit is waited for, not taken for a lost
answer; what a get took for an answer the edge never had goes back to its queue; a
callback that raises costs neither the rest of its batch nor the link.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from broker.cluster import edge as edge_module
from broker.cluster import hub as hub_module
from broker.cluster.wire import EDGE_BATCH, ROUTER_BATCH
from broker.engine.errors import BrokerError, Unavailable
from broker.engine.messages import StoredCopy
from broker.protocol.calls import QueueGetCall, RouterCall
from broker.runtime.runtime import Runtime
from tests.eventually import eventually

from .cluster_harness import Cluster, EdgeSink, counts, publish_request, subscribe_args


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
    await eventually(lambda: cluster.store.message_counts().get("jobs") == 1, what="the slow commit landed")

    assert edge.generation == generation and edge.available
    _, routed = await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 2)), 5)
    assert routed == 1
    assert [m["body"] for m in sink.messages()] == ["held"]
    assert [m["body"] for m in cluster.runtime.get("jobs", count=10, ack=True)] == [1, 2]


# -- what a get takes -----------------------------------------------------------------


async def test_a_get_with_ack_through_an_edge_takes_its_messages_once_the_answer_arrived(cluster: Cluster) -> None:
    for n in range(3):
        await cluster.publish("jobs", n)
    edge = await cluster.edge()

    taken = await edge.call(QueueGetCall("jobs", 2, True))

    assert [(m["body"], m["redelivered"]) for m in taken] == [(0, False), (1, False)]
    await eventually(lambda: counts(cluster, "jobs") == (1, 0, 0), what="the taken messages acked")
    await eventually(lambda: cluster.store.message_counts().get("jobs") == 1, what="their rows deleted")


async def test_what_a_get_took_for_an_answer_the_edge_never_had_goes_back_to_its_queue(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        await cluster.publish("jobs", n)
    edge = await cluster.edge()
    generation = edge.generation
    layer, original = cluster.layer, cluster.layer.send
    lost: list[dict[str, Any]] = []

    async def send(channel: str, message: dict[str, Any]) -> None:
        if message.get("type") == "broker.router_batch" and any(item[0] == "R" for item in message["items"]):
            lost.append(message)  # the answer, lost on the way
            return
        await original(channel, message)

    monkeypatch.setattr(layer, "send", send)

    with pytest.raises(Unavailable, match="lost"):
        await edge.call(QueueGetCall("jobs", 2, True))

    assert lost and edge.generation == generation + 1
    await eventually(lambda: counts(cluster, "jobs") == (3, 0, 0), what="the messages given back")
    again = cluster.runtime.get("jobs", count=10, ack=True)
    assert [(m["body"], m["redelivered"]) for m in again] == [(0, True), (1, True), (2, False)]


async def test_what_a_get_took_for_an_answer_that_cannot_be_sent_goes_back_to_its_queue(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(2):
        await cluster.publish("jobs", n)
    edge = await cluster.edge()
    execute = hub_module.execute

    def odd_answer(runtime: Runtime, call: RouterCall, *, holder: int | None = None) -> Any:
        result = execute(runtime, call, holder=holder)

        async def with_a_lone_surrogate() -> Any:
            return [*(await result), "\ud800"]

        return with_a_lone_surrogate() if isinstance(call, QueueGetCall) else result

    monkeypatch.setattr(hub_module, "execute", odd_answer)

    with pytest.raises(BrokerError, match="cannot send its answer"):
        await edge.call(QueueGetCall("jobs", 2, True))

    await eventually(lambda: counts(cluster, "jobs") == (2, 0, 0), what="the messages given back")
    again = cluster.runtime.get("jobs", count=10, ack=True)
    assert [(m["body"], m["redelivered"]) for m in again] == [(0, True), (1, True)]


def _slow_gets(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, seconds: float) -> list[int]:
    """Gets on the router answer after `seconds`; returns the numbers of messages each took."""
    runtime, taken = cluster.runtime, []
    get_waiting = runtime.get_waiting

    async def slow(queue: str, *, count: int, ack: bool, holder: int | None = None) -> list[Any]:
        await asyncio.sleep(seconds)
        found = await get_waiting(queue, count=count, ack=ack, holder=holder)
        taken.append(len(found))
        return found

    monkeypatch.setattr(runtime, "get_waiting", slow)
    return taken


def _holding(cluster: Cluster) -> bool:
    """Does the router hold what a get took for an edge's answer?"""
    assert cluster.router is not None
    return any(edge.held or edge.held_in for edge in cluster.router.hub._edges.values())


@pytest.mark.parametrize("gives_up", ["timeout", "client gone"])
async def test_what_a_get_took_for_a_call_that_gave_up_goes_back_to_its_queue(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, gives_up: str
) -> None:
    """The edge's call stops waiting (CALL_TIMEOUT, or the HTTP client went away) before the
    router's answer comes: the edge acks the batch carrying it all the same, and says it
    had nobody to give it to, so the messages are not acked with it."""
    monkeypatch.setattr(edge_module, "CALL_TIMEOUT", 0.3)
    for n in range(3):
        await cluster.publish("jobs", n)
    edge = await cluster.edge()
    generation = edge.generation
    taken = _slow_gets(cluster, monkeypatch, 0.6)

    call = asyncio.ensure_future(edge.call(QueueGetCall("jobs", 2, True)))
    if gives_up == "timeout":
        with pytest.raises(Unavailable, match="in time"):
            await call
    else:
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    await eventually(lambda: taken == [2], what="the router took the messages")
    await eventually(lambda: counts(cluster, "jobs") == (3, 0, 0) and not _holding(cluster),
                     what="the messages given back")
    assert edge.generation == generation  # not by resuming
    again = cluster.runtime.get("jobs", count=10, ack=True)
    assert [(m["body"], m["redelivered"]) for m in again] == [(0, True), (1, True), (2, False)]


async def test_a_give_back_waiting_for_room_goes_before_the_ack_of_its_answer(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The give-back waits in the edge's outbox (its window is full) while its beats ack the
    router's batches: none of them acks the answer's batch before the give-back is sent."""
    monkeypatch.setattr(edge_module, "CALL_TIMEOUT", 0.2)
    for n in range(2):
        await cluster.publish("jobs", n)
    edge = await cluster.edge()
    taken = _slow_gets(cluster, monkeypatch, 0.4)
    with pytest.raises(Unavailable, match="in time"):
        await edge.call(QueueGetCall("jobs", 2, True))
    assert cluster.router is not None
    hub_channel = cluster.router.hub.channel
    cluster.layer.hold(hub_channel)  # the router reads nothing more for a while
    for n in range(2):  # two batches the router does not ack: the edge's window is full
        edge.publish(0, publish_request("other", n))
        await asyncio.sleep(0.05)
    await eventually(lambda: taken == [2] and bool(cluster.layer.router_items("R")), what="the answer sent")
    await asyncio.sleep(0.3)  # beats meanwhile
    assert not cluster.layer.edge_items("b")

    await cluster.layer.release(hub_channel)

    await eventually(lambda: counts(cluster, "jobs") == (2, 0, 0) and not _holding(cluster),
                     what="the messages given back")
    sent = cluster.layer.sent
    (answer,) = [n for n, m in enumerate(sent) if m["type"] == ROUTER_BATCH and _holds(m, "R")]
    give_back = next(n for n, m in enumerate(sent) if m["type"] == EDGE_BATCH and _holds(m, "b"))
    between = [m for m in sent[answer:give_back] if m["type"] == EDGE_BATCH]
    assert between and all(not m["items"] for m in between)  # beats went meanwhile
    assert all(m["ack"] < sent[answer]["seq"] for m in between)
    assert sent[give_back]["ack"] >= sent[answer]["seq"]


def _holds(message: dict[str, Any], kind: str) -> bool:
    return any(item[0] == kind for item in message["items"])


# -- a callback that raises ----------------------------------------------------------


class RaisingOnce(EdgeSink):
    """A client connection whose transport fails once (a bug of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.raised = False

    def _once(self) -> None:
        if not self.raised:
            self.raised = True
            raise RuntimeError("a client connection's bug")

    def deliver(self, frames: list[str], counted: bool = False) -> None:
        self._once()
        super().deliver(frames, counted)

    def answer(self, key: str) -> Callable[[str | None, BrokerError | None], None]:
        recorded = super().answer(key)

        def answered(queue: str | None, error: BrokerError | None) -> None:
            self._once()
            recorded(queue, error)

        return answered


async def test_a_sink_that_raises_costs_neither_the_rest_of_its_batch_nor_the_link(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = await cluster.edge()
    raising, other = RaisingOnce(), EdgeSink()
    first, second = edge.connect(raising), edge.connect(other)
    answers: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    edge._awaiting[99] = answers  # the publishes of a batch 99, awaiting their answers

    edge.on_batch([
        ["d", first, ['{"type":"pong","n":1}'], 0],
        ["d", second, ['{"type":"pong","n":2}'], 0],
        ["P", 99, [1]],
        ["d", first, ['{"type":"pong","n":3}'], 0],
    ])

    assert raising.raised and [e["n"] for e in raising.events] == [3]
    assert [e["n"] for e in other.events] == [2]
    assert answers.result() == [1]
    _, routed = await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 1)), 2)
    assert routed == 1


async def test_an_answer_callback_that_raises_when_the_router_is_lost_does_not_end_the_link(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_module, "ROUTER_TIMEOUT", 0.3)
    edge = await cluster.edge()
    raising, other = RaisingOnce(), EdgeSink()
    first, second = edge.connect(raising), edge.connect(other)
    await cluster.stop_router()
    edge.subscribe(first, subscribe_args("s", queue="jobs"), raising.answer("s"))
    edge.subscribe(second, subscribe_args("s", queue="jobs"), other.answer("s"))

    await eventually(lambda: bool(other.of_type("answer")), what="the subscribe failed")
    assert raising.raised and isinstance(other.of_type("answer")[0]["error"], Unavailable)
    await cluster.start_router()
    await eventually(lambda: edge.available, what="the edge follows the new router")
    _, routed = await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 1)), 2)
    assert routed == 1


async def test_a_failed_task_of_the_edge_s_link_starts_the_link_again(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a zombie, `available` while nobody receives and publishes wait for ever."""
    edge = await cluster.edge()
    generation = edge.generation
    failed = []

    def answer_lost(now: float) -> bool:
        if not failed:
            failed.append(now)
            raise RuntimeError("a bug of the watchdog")
        return False

    monkeypatch.setattr(edge, "_answer_lost", answer_lost)
    await eventually(lambda: bool(failed), what="the watchdog failed")
    await eventually(lambda: edge.generation == generation + 1 and edge.available, what="the link again")
    _, routed = await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 1)), 2)
    assert routed == 1


async def test_an_edge_whose_sender_on_the_router_failed_resumes(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = await cluster.edge()
    generation = edge.generation
    await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 0)), 2)
    assert cluster.router is not None
    hub = cluster.router.hub
    send, failed = hub._send, []

    async def failing(to: Any, message: dict[str, Any]) -> None:
        if not failed:
            failed.append(message)
            raise RuntimeError("a bug of the sender")
        await send(to, message)

    monkeypatch.setattr(hub, "_send", failing)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 1)), 3)  # its answer never left
    assert edge.generation == generation + 1
    _, routed = await asyncio.wait_for(edge.publish_and_wait(publish_request("jobs", 2)), 2)
    assert routed == 1


async def test_an_edge_whose_link_ended_is_no_longer_available(cluster: Cluster) -> None:
    edge = await cluster.edge()
    publishing = edge.publish(0, publish_request("jobs", 1))

    async def fails() -> None:
        raise RuntimeError("a bug past the link's own restart")

    ended = asyncio.ensure_future(fails())
    await asyncio.wait({ended})
    edge._link_ended(ended)

    assert not edge.available
    assert publishing.settled is not None and isinstance(publishing.settled.exception(), Unavailable)
