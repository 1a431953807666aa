"""Auto-ack settled when written (`Broker.written`): on a connection whose shell reports
its writes, an auto-ack subscription of a shared queue takes a window at a time, and
what it had not written comes back if the connection is lost."""

from __future__ import annotations

import pytest

from broker_project.engine.broker import Broker
from broker_project.engine.errors import PreconditionFailed
from broker_project.engine.queues import AUTO_WINDOW, AckMode
from tests.engine.helpers import (
    bodies,
    exchange,
    fill,
    queue,
    ready,
    ready_flags,
    send,
    subscribe,
)


@pytest.fixture
def broker() -> Broker:
    b = Broker()
    queue(b, "q")
    return b


def test_a_window_at_a_time_and_more_once_written(broker: Broker) -> None:
    fill(broker, "q", *range(AUTO_WINDOW + 50))
    conn = broker.open_connection(acks_on_write=True)
    first = subscribe(broker, "q", connection=conn, ack="auto").effects.deliveries
    assert bodies(first) == list(range(AUTO_WINDOW))
    assert all(d.unwritten for d in first)
    assert broker.queue_counts("q").messages_unacknowledged == AUTO_WINDOW
    more = broker.written(conn, first[99].delivery_tag, now=0.0).deliveries
    assert bodies(more) == list(range(AUTO_WINDOW, AUTO_WINDOW + 50))
    counts = broker.queue_counts("q")
    assert (counts.messages_ready, counts.messages_unacknowledged) == (0, AUTO_WINDOW + 50 - 100)
    assert broker.written(conn, more[-1].delivery_tag, now=0.0).to_delete  # stored copies go
    assert broker.queue_counts("q").messages_unacknowledged == 0


def test_the_window_counts_bytes_too(broker: Broker) -> None:
    fill(broker, "q", *("x" * 1000 for _ in range(10)))
    conn = broker.open_connection(acks_on_write=True, window_bytes=2500)
    first = subscribe(broker, "q", connection=conn, ack="auto").effects.deliveries
    assert len(first) == 3  # one more goes out while under the bound
    assert len(ready(broker, "q")) == 7


def test_a_lost_connection_gives_back_what_it_had_not_written(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3)
    conn = broker.open_connection(acks_on_write=True)
    delivered = subscribe(broker, "q", connection=conn, ack="auto").effects.deliveries
    broker.written(conn, delivered[0].delivery_tag, now=0.0)
    broker.close_connection(conn, now=0.0)
    assert ready_flags(broker, "q") == [(2, True), (3, True)]


def test_a_cancelled_subscription_s_unwritten_deliveries_still_go_out(broker: Broker) -> None:
    # The connection stays, and writes what was delivered before the cancel.
    fill(broker, "q", 1, 2)
    conn = broker.open_connection(acks_on_write=True)
    subscribe(broker, "q", connection=conn, ack="auto")
    effects = broker.cancel(conn, "s1", now=0.0)[1]
    assert len(effects.to_delete) == 2 and ready(broker, "q") == []
    assert broker.queue_counts("q").messages_unacknowledged == 0


def test_the_client_cannot_ack_an_unwritten_delivery(broker: Broker) -> None:
    fill(broker, "q", 1)
    conn = broker.open_connection(acks_on_write=True)
    (delivery,) = subscribe(broker, "q", connection=conn, ack="auto").effects.deliveries
    with pytest.raises(PreconditionFailed):
        broker.ack(conn, delivery.delivery_tag, multiple=False, now=0.0)
    with pytest.raises(PreconditionFailed):
        broker.ack(conn, delivery.delivery_tag, multiple=True, now=0.0)


def test_client_acks_and_written_reports_leave_each_other_s_deliveries_alone(broker: Broker) -> None:
    queue(broker, "c")
    fill(broker, "q", "a1", "a2")
    fill(broker, "c", "c1")
    conn = broker.open_connection(acks_on_write=True)
    auto = subscribe(broker, "q", connection=conn, ack="auto", subscription="a").effects.deliveries
    (client,) = subscribe(broker, "c", connection=conn, ack="client", subscription="c").effects.deliveries
    broker.written(conn, client.delivery_tag, now=0.0)  # past every tag: settles the auto ones only
    assert broker.queue_counts("q").messages_unacknowledged == 0
    assert broker.queue_counts("c").messages_unacknowledged == 1
    broker.ack(conn, client.delivery_tag, multiple=True, now=0.0)
    assert broker.queue_counts("c").messages_unacknowledged == 0
    assert len(auto) == 2


def test_private_queues_and_other_connections_deliver_at_once(broker: Broker) -> None:
    # A private queue held back would grow in memory for a client that never reads,
    # out of the slow-consumer close's sight: its deliveries are settled at once.
    exchange(broker, "fan", "fanout")
    reporting = broker.open_connection(acks_on_write=True)
    broker.consume_exchange(
        reporting, subscription="f", subscription_json='"f"', exchange="fan", binding_key="", arguments=None,
        queue="amq.gen-f", ack_mode=AckMode.AUTO, prefetch=0, now=0.0,
    )
    effects = send(broker, "", "x", exchange="fan")
    assert [d.unwritten for d in effects.deliveries] == [False]
    fill(broker, "q", *range(AUTO_WINDOW + 1))
    plain = subscribe(broker, "q", ack="auto").effects.deliveries  # a connection that does not report
    assert len(plain) == AUTO_WINDOW + 1 and not any(d.unwritten for d in plain)
