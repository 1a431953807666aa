"""An edge's record of its clients' connections (broker/cluster/edge_connections.py): an
unsubscribe waits for the router's answer, and a router lost before it answers ends it
(the next router is not given that subscription to resume), so nothing waits on it for ever."""

from __future__ import annotations

from typing import Any, cast

from broker.cluster.edge_connections import EdgeConnections
from broker.cluster.hub import Edge, RemoteSink
from broker.engine.errors import BrokerError, Unavailable
from broker.engine.queues import AckMode
from broker.protocol.client_frames import SubscribeRequest
from broker.protocol.link import FramesItem, SubscribedItem, SubscribeItem, UnsubscribedItem


class _Sink:
    def __init__(self) -> None:
        self.unsubscribed_keys: list[str] = []
        self.delivered: list[list[str]] = []

    def unsubscribed(self, key: str) -> None:
        self.unsubscribed_keys.append(key)

    def deliver(self, frames: list[str], counted: bool = False) -> None:
        self.delivered.append(frames)


def test_an_unsubscribe_the_router_answers_ends_once() -> None:
    connections = EdgeConnections()
    sink = _Sink()
    conn = connections.add(cast(Any, sink))
    connections.forget(conn, "s1")

    connections.unsubscribed(UnsubscribedItem("U", conn, "s1"))
    connections.fail_questions(Unavailable("the router changed"))

    assert sink.unsubscribed_keys == ["s1"]


def test_an_unsubscribe_a_lost_router_never_answers_ends_when_it_is_lost() -> None:
    connections = EdgeConnections()
    sink = _Sink()
    conn = connections.add(cast(Any, sink))
    connections.forget(conn, "s1")
    connections.forget(conn, "s2")
    assert sink.unsubscribed_keys == []  # the router's answer is awaited

    connections.fail_questions(Unavailable("the router changed"))
    connections.fail_questions(Unavailable("and again"))

    assert sorted(sink.unsubscribed_keys) == ["s1", "s2"]
    assert connections.resume_items()[0].subscriptions == []  # the next router is not given them


def test_an_unsubscribe_sent_before_the_subscribe_s_answer_is_not_resumed_when_the_router_is_lost() -> None:
    connections = EdgeConnections()
    sink = _Sink()
    conn = connections.add(cast(Any, sink))
    asked = SubscribeItem.of(conn, SubscribeRequest("s1", '"s1"', AckMode.CLIENT, 10, "jobs", None))
    answers: list[tuple[str | None, BrokerError | None]] = []
    assert connections.asked(asked, lambda queue, error: answers.append((queue, error)))
    connections.forget(conn, "s1")  # the client unsubscribes before the router's answer
    connections.subscribed(SubscribedItem("S", conn, "jobs", None))  # the answer; its unsubscribed is lost

    connections.fail_questions(Unavailable("the router changed"))

    assert answers == [("jobs", None)]
    assert sink.unsubscribed_keys == ["s1"]  # the client is told it ended...
    assert connections.resume_items()[0].subscriptions == []  # ...and the next router is not given it


def test_batches_written_are_told_by_the_router_s_number_of_the_last() -> None:
    connections = EdgeConnections()
    conn = connections.add(cast(Any, _Sink()))
    for batch in (1, 2, 4):  # the router's third batch was lost on the way
        connections.frames(FramesItem("d", conn, ["f"], batch))
    assert connections.written(conn, 2) == 2
    assert connections.written(conn, 1) == 4
    assert connections.written(conn, 1) is None  # nothing more was given to the sink


def test_batches_of_a_router_followed_before_are_not_counted_against_the_next_one() -> None:
    connections = EdgeConnections()
    conn = connections.add(cast(Any, _Sink()))
    for batch in (7, 8):
        connections.frames(FramesItem("d", conn, ["old"], batch))
    connections.resume_items()  # a new router: the sink's outbox still holds 7 and 8
    connections.frames(FramesItem("d", conn, ["new"], 1))
    assert connections.written(conn, 2) is None  # 7 and 8
    assert connections.written(conn, 1) == 1


def test_the_router_counts_batches_written_from_the_edge_s_running_number() -> None:
    sink = RemoteSink(Edge("edge", 1, 1), 1)
    for _ in range(5):
        sink.deliver(["f"], True)
    sink.deliver(["a stats frame"])  # took no credit: not numbered
    assert sink.written_upto(2) == 2
    assert sink.written_upto(4) == 2  # the report of 3 was lost: made up for
    assert sink.written_upto(3) == 0  # old news
    assert sink.written_upto(9) == 1  # never past what was sent


def test_batches_that_took_no_credit_are_not_reported() -> None:
    connections = EdgeConnections()
    conn = connections.add(cast(Any, _Sink()))
    connections.frames(FramesItem("d", conn, ["fanout"], 0))  # an exchange subscription's, a stats frame
    connections.frames(FramesItem("d", conn, ["queue"], 1))
    assert connections.written(conn, 1) == 1  # the sink counts only the counted one
