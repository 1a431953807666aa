"""Exchange-to-exchange bindings, as RabbitMQ's: an exchange bound to another hands the
messages its binding matches on, and the other routes them by its own bindings."""

from __future__ import annotations

from typing import Any

import pytest

from broker.engine.broker import Broker
from broker.engine.errors import BrokerError, Forbidden, NotFound
from broker.engine.exchanges import ExchangeSpec, ExchangeType
from broker.engine.queues import QueueSpec
from broker.engine.routing import BindingSpec, DestinationType
from tests.engine.helpers import bind, exchange, msg, queue, ready, send

EXCHANGE = DestinationType.EXCHANGE


def bind_exchange(broker: Broker, source: str, destination: str, binding_key: str = "", arguments: Any = None) -> bool:
    return broker.bind(BindingSpec(source, destination, binding_key, arguments, EXCHANGE))


def topology() -> Broker:
    """orders (topic) -> eu (direct, by key) -> queue eu-work; orders -> audit (fanout)."""
    broker = Broker()
    exchange(broker, "orders", "topic")
    exchange(broker, "eu", "direct")
    exchange(broker, "audit", "fanout")
    for name in ("eu-work", "audit-log"):
        queue(broker, name)
    bind(broker, "eu", "eu-work", "orders.eu.new")
    bind(broker, "audit", "audit-log")
    bind_exchange(broker, "orders", "eu", "orders.eu.*")
    bind_exchange(broker, "orders", "audit", "#")
    return broker


def test_a_message_goes_on_through_the_bound_exchanges_by_their_own_bindings() -> None:
    broker = topology()
    assert broker.publish(msg("orders", "orders.eu.new", 1), now=0.0).routed == 2
    assert broker.publish(msg("orders", "orders.eu.paid", 2), now=0.0).routed == 1  # eu binds .new only
    assert broker.publish(msg("orders", "orders.us.new", 3), now=0.0).routed == 1
    assert ready(broker, "eu-work") == [1]
    assert ready(broker, "audit-log") == [1, 2, 3]
    assert (broker.exchanges["orders"].published, broker.exchanges["orders"].unroutable) == (3, 0)


def test_a_queue_reached_by_several_paths_gets_one_copy() -> None:
    broker = topology()
    bind(broker, "orders", "audit-log", "orders.#")  # directly, and through audit
    bind_exchange(broker, "eu", "audit", "orders.eu.new")  # and through eu
    assert broker.publish(msg("orders", "orders.eu.new", 1), now=0.0).routed == 2
    assert ready(broker, "audit-log") == [1]


def test_a_cycle_routes_each_exchange_once() -> None:
    broker = Broker()
    exchange(broker, "a", "fanout")
    exchange(broker, "b", "fanout")
    queue(broker, "q")
    bind_exchange(broker, "a", "b")
    bind_exchange(broker, "b", "a")
    bind_exchange(broker, "a", "a")  # to itself, too
    bind(broker, "b", "q")
    assert broker.publish(msg("a", "k", 1), now=0.0).routed == 1
    assert broker.publish(msg("b", "k", 2), now=0.0).routed == 1
    assert ready(broker, "q") == [1, 2]


def test_the_alternate_exchange_of_each_exchange_takes_what_it_alone_matches_nowhere() -> None:
    # RabbitMQ: an exchange whose bindings (to queues or exchanges) match nothing hands the
    # message to its own alternate exchange; one that handed it on does not.
    broker = Broker()
    exchange(broker, "lost", "fanout")
    queue(broker, "lost-and-found")
    bind(broker, "lost", "lost-and-found")
    exchange(broker, "front", "direct", arguments={"alternate-exchange": "lost"})
    exchange(broker, "back", "direct", arguments={"alternate-exchange": "lost"})
    queue(broker, "work")
    bind(broker, "back", "work", "job")
    bind_exchange(broker, "front", "back", "job")
    bind_exchange(broker, "front", "back", "other")
    assert broker.publish(msg("front", "job", 1), now=0.0).routed == 1
    assert broker.publish(msg("front", "other", 2), now=0.0).routed == 1  # back matched nothing: its AE
    assert broker.publish(msg("front", "none", 3), now=0.0).routed == 1  # front matched nothing: its AE
    assert ready(broker, "work") == [1]
    assert ready(broker, "lost-and-found") == [2, 3]


def test_headers_and_topic_exchanges_match_their_bindings_to_exchanges_as_to_queues() -> None:
    broker = Broker()
    exchange(broker, "h", "headers")
    exchange(broker, "t", "topic")
    queue(broker, "q")
    bind(broker, "t", "q", "*.important")
    bind_exchange(broker, "h", "t", "", {"x-match": "all", "kind": "alert"})
    send(broker, "disk.important", 1, exchange="h", headers={"kind": "alert"})
    send(broker, "disk.important", 2, exchange="h", headers={"kind": "info"})
    send(broker, "disk.minor", 3, exchange="h", headers={"kind": "alert"})
    assert ready(broker, "q") == [1]


def test_unbinding_and_deleting_either_exchange_remove_the_binding() -> None:
    broker = topology()
    assert broker.unbind(BindingSpec("orders", "audit", "#", None, EXCHANGE))
    assert not broker.unbind(BindingSpec("orders", "audit", "#", None, EXCHANGE))
    assert broker.publish(msg("orders", "orders.us.new", 1), now=0.0).routed == 0
    assert broker.exchanges["orders"].onward is not None  # eu is still bound
    broker.delete_exchange("eu")  # the destination: its binding from orders goes with it
    assert [b.destination for b in broker.bindings.values()] == ["audit-log"]
    assert broker.exchanges["orders"].onward is None and broker.exchanges["orders"].binding_count == 0
    bind_exchange(broker, "orders", "audit", "#")
    broker.delete_exchange("orders")  # the source
    assert [b.destination for b in broker.bindings.values()] == ["audit-log"]


def test_a_queue_and_an_exchange_of_one_name_are_distinct_destinations() -> None:
    broker = Broker()
    exchange(broker, "src", "fanout")
    exchange(broker, "same", "fanout")
    queue(broker, "same")
    queue(broker, "behind")
    bind(broker, "same", "behind")
    assert bind(broker, "src", "same")
    assert bind_exchange(broker, "src", "same")
    assert not bind_exchange(broker, "src", "same")  # identical
    assert broker.publish(msg("src", "k", 1), now=0.0).routed == 2
    assert ready(broker, "same") == [1] and ready(broker, "behind") == [1]
    assert broker.unbind(BindingSpec("src", "same"))  # the queue's; the exchange's stays
    assert broker.publish(msg("src", "k", 2), now=0.0).routed == 1


def test_an_exchange_retyped_keeps_its_bindings_to_exchanges() -> None:
    broker = topology()
    broker.sync_exchange(ExchangeSpec("orders", ExchangeType.TOPIC, arguments={"alternate-exchange": "x"}))
    assert broker.publish(msg("orders", "orders.eu.new", 1), now=0.0).routed == 2


@pytest.mark.parametrize(
    ("source", "destination", "error"),
    [("", "eu", Forbidden), ("orders", "", Forbidden), ("orders", "nope", NotFound), ("nope", "eu", NotFound)],
)
def test_a_binding_to_or_from_a_missing_or_default_exchange_is_refused_and_nothing_changes(
    source: str, destination: str, error: type[BrokerError]
) -> None:
    broker = topology()
    before = dict(broker.bindings)
    with pytest.raises(error):
        bind_exchange(broker, source, destination)
    assert broker.bindings == before


def test_a_delayed_exchange_reached_through_a_binding_holds_the_message_then_routes_it_on() -> None:
    # As RabbitMQ's plugin: a delayed exchange anywhere on the way delays a message with
    # x-delay; when due it routes from that exchange, not from the one published to.
    broker = Broker()
    exchange(broker, "front", "topic")
    exchange(broker, "later", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    broker.declare_queue(QueueSpec("amq.delayed.later"), now=0.0, reserved_ok=True)
    for name in ("q", "now"):
        queue(broker, name)
    bind(broker, "later", "q")
    bind(broker, "front", "now", "#")
    bind_exchange(broker, "front", "later", "#")
    published = broker.publish(msg("front", "k", 1, headers={"x-delay": 5000}), now=10.0)
    assert published.routed == 2  # `now`, and the holding queue
    assert ready(broker, "now") == [1] and ready(broker, "q") == [] and ready(broker, "amq.delayed.later") == [1]
    send(broker, "k", 2, exchange="front")  # no delay: through at once
    assert ready(broker, "q") == [2]
    assert broker.release_due(now=14.9).to_persist == ()
    broker.release_due(now=15.0)
    assert ready(broker, "q") == [2, 1] and ready(broker, "amq.delayed.later") == []
    assert ready(broker, "now") == [1, 2]  # not routed from front again
