"""Delayed messages (RabbitMQ's delayed-message plugin): an `x-delayed-message` exchange
holds a message with `x-delay` in its holding queue until it is due, then routes it as its
`x-delayed-type`; the holding row and the copies are one set of effects."""

from __future__ import annotations

import pytest

from broker.engine.broker import Broker
from broker.engine.errors import BrokerError, Forbidden
from broker.engine.exchanges import ExchangeSpec, ExchangeType
from broker.engine.queues import QueueSpec
from tests.engine.helpers import Backlogs, bind, bodies, exchange, msg, queue, ready, send, subscribe


def delayed(broker: Broker, kind: str = "direct") -> None:
    exchange(broker, "later", "x-delayed-message", arguments={"x-delayed-type": kind})
    broker.declare_queue(QueueSpec("amq.delayed.later"), now=0.0, reserved_ok=True)
    queue(broker, "jobs")
    bind(broker, "later", "jobs", "run")


def test_a_delayed_message_waits_then_routes_as_the_delayed_type() -> None:
    broker = Broker()
    delayed(broker)
    published = broker.publish(msg("later", "run", "in 2 s", headers={"x-delay": 2000}), now=10.0)
    now_effects = broker.publish(msg("later", "run", "now"), now=10.0)
    assert (published.routed, len(published.effects.to_persist)) == (1, 1)  # held, and stored
    assert published.effects.to_persist[0].queue == "amq.delayed.later"
    assert ready(broker, "jobs") == ["now"] and now_effects.routed == 1
    assert broker.next_due() == 12.0
    assert broker.release_due(now=11.999).to_persist == ()
    released = broker.release_due(now=12.0)
    assert ready(broker, "jobs") == ["now", "in 2 s"] and ready(broker, "amq.delayed.later") == []
    # Its holding row goes in the same commit as its copy.
    assert released.to_delete == (published.effects.to_persist[0].store_id,) and len(released.to_persist) == 1
    assert broker.next_due() is None


def test_messages_come_out_in_the_order_they_are_due_not_published() -> None:
    broker = Broker()
    delayed(broker, "fanout")
    for body, delay in (("third", "3000"), ("first", 1000), ("second", "2000")):
        broker.publish(msg("later", "any", body, headers={"x-delay": delay}), now=0.0)
    consumer = subscribe(broker, "jobs", ack="auto")
    effects = broker.release_due(now=5.0)
    assert consumer.effects.deliveries == () and bodies(effects.deliveries) == ["first", "second", "third"]


def test_a_restart_restores_the_delays_from_publication() -> None:
    from tests.engine.helpers import restore

    broker = Broker()
    delayed(broker)
    published = 1_795_867_200.0  # helpers.PUBLISHED_AT as seconds since the epoch
    rows = {1: ("amq.delayed.later", msg("later", "run", "due already", headers={"x-delay": 1000})),
            2: ("amq.delayed.later", msg("later", "run", "due later", headers={"x-delay": 10_000}))}
    store = restore(broker, rows, now=100.0, wall_now=published + 5.0)  # 5 s after publication
    store.serve(now=100.0, wall_now=published + 5.0)
    assert broker.next_due() == pytest.approx(96.0)
    store.take(broker.release_due(now=100.0))
    assert ready(broker, "jobs") == ["due already"]
    assert broker.next_due() == pytest.approx(105.0)


def test_the_holding_queue_is_neither_consumed_bound_nor_reached_by_name() -> None:
    broker = Broker()
    delayed(broker)
    with pytest.raises(Forbidden):
        subscribe(broker, "amq.delayed.later")
    broker.declare_exchange(ExchangeSpec("amq.direct", ExchangeType.DIRECT), reserved_ok=True)
    with pytest.raises(Forbidden):
        bind(broker, "amq.direct", "amq.delayed.later", "k")
    assert send(broker, "amq.delayed.later", "sneaky").to_persist == ()
    assert ready(broker, "amq.delayed.later") == []


def test_a_delayed_exchange_needs_a_delayed_type() -> None:
    broker = Broker()
    for arguments in ({}, {"x-delayed-type": "x-delayed-message"}, {"x-delayed-type": 1}):
        with pytest.raises(BrokerError) as refused:
            exchange(broker, "later", "x-delayed-message", arguments=arguments)
        assert "x-delayed-type" in refused.value.message
    assert "later" not in broker.exchanges


def test_headers_bindings_of_a_delayed_headers_exchange_need_x_match() -> None:
    broker = Broker()
    delayed(broker, "headers")
    with pytest.raises(BrokerError):
        bind(broker, "later", "jobs", "", {"x-match": "some"})
    assert bind(broker, "later", "jobs", "", {"x-match": "any", "kind": "a"})


def test_the_outbox_s_messages_wait_too() -> None:
    broker = Broker()
    delayed(broker)
    store = Backlogs(broker)
    planned = broker.plan(msg("later", "run", "from django", headers={"x-delay": "500"}))
    assert planned.targets[0][0] == "amq.delayed.later"
    store.take(broker.publish_planned(planned, now=0.0).effects)
    assert ready(broker, "jobs") == []
    broker.release_due(now=0.5)
    assert ready(broker, "jobs") == ["from django"]


def test_a_dead_letter_to_a_delayed_exchange_waits_its_delay() -> None:
    """A retry after a delay: the queue's dead-letter exchange is a delayed one. The dead
    letter was routed at once: only a publish looked for the holding queue."""
    broker = Broker()
    delayed(broker)
    queue(broker, "work", arguments={"dead_letter_exchange": "later", "dead_letter_routing_key": "run"})
    send(broker, "work", "job", headers={"x-delay": 5000}, now=0.0)
    sub = subscribe(broker, "work", now=0.0)
    broker.nack(sub.connection, 1, multiple=False, requeue=False, now=1.0)
    assert ready(broker, "jobs") == [] and ready(broker, "amq.delayed.later") == ["job"]
    broker.release_due(now=6.0)
    assert ready(broker, "jobs") == ["job"]
