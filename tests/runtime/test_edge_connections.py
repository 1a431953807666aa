"""An edge's record of its clients' connections (broker/cluster/edge_connections.py): an
unsubscribe waits for the router's answer, and a router lost before it answers ends it
(the next router is not given that subscription to resume), so nothing waits on it for ever."""

from __future__ import annotations

from typing import Any, cast

from broker.cluster.edge_connections import EdgeConnections
from broker.engine.errors import Unavailable
from broker.protocol.link import UnsubscribedItem


class _Sink:
    def __init__(self) -> None:
        self.unsubscribed_keys: list[str] = []

    def unsubscribed(self, key: str) -> None:
        self.unsubscribed_keys.append(key)


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
