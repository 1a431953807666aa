"""Exchanges and bindings: direct, fanout, headers, the default exchange, declare rules."""

from __future__ import annotations

from typing import Any

import pytest

from broker.engine.broker import Broker
from broker.engine.errors import (
    BrokerError,
    Forbidden,
    NotFound,
    PreconditionFailed,
)
from broker.engine.exchanges import (
    ExchangeSpec,
    ExchangeType,
    HeadersRoutes,
    parse_exchange_type,
)
from broker.engine.queues import QueueSpec
from broker.engine.routing import BindingSpec
from broker.engine.rules import check_name
from tests.engine.helpers import bind, exchange, msg, queue, ready, send


@pytest.fixture
def broker() -> Broker:
    b = Broker()
    for name in ("q1", "q2", "q3"):
        queue(b, name)
    return b


def routed(broker: Broker, exchange_name: str, routing_key: str = "", headers: dict[str, Any] | None = None) -> int:
    return broker.publish(msg(exchange_name, routing_key, headers=headers), now=0.0).routed


def test_direct_routes_by_exact_key(broker: Broker) -> None:
    exchange(broker, "x", "direct")
    bind(broker, "x", "q1", "red")
    bind(broker, "x", "q2", "red")
    bind(broker, "x", "q3", "blue")
    send(broker, "red", "r", exchange="x")
    send(broker, "blue", "b", exchange="x")
    assert routed(broker, "x", "green") == 0
    assert (ready(broker, "q1"), ready(broker, "q2"), ready(broker, "q3")) == (["r"], ["r"], ["b"])


def test_fanout_ignores_the_key_and_reaches_each_queue_once(broker: Broker) -> None:
    exchange(broker, "x", "fanout")
    bind(broker, "x", "q1", "a")
    bind(broker, "x", "q1", "b")
    bind(broker, "x", "q2")
    assert routed(broker, "x", "anything") == 2
    assert ready(broker, "q1") == [None]


def test_topic_exchange_routes_through_the_trie(broker: Broker) -> None:
    exchange(broker, "x", "topic")
    bind(broker, "x", "q1", "orders.*.created")
    bind(broker, "x", "q2", "orders.#")
    assert routed(broker, "x", "orders.eu.created") == 2
    assert routed(broker, "x", "orders") == 1


def test_default_exchange_routes_by_queue_name(broker: Broker) -> None:
    assert routed(broker, "", "q2") == 1
    assert routed(broker, "", "nope") == 0
    assert ready(broker, "q2") == [None]


@pytest.mark.parametrize(
    ("arguments", "headers", "expected"),
    [
        ({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, True),
        ({"a": 1, "b": 2}, {"a": 1}, False),
        ({"x-match": "all", "a": 1, "b": 2}, {"a": 1, "b": 3}, False),
        ({"x-match": "any", "a": 1, "b": 2}, {"a": 1, "b": 3}, True),
        ({"x-match": "any", "a": 1, "b": 2}, {"c": 1}, False),
        ({"x-match": "all", "x-other": "zzz"}, {}, True),  # x- keys take no part
        ({"x-match": "all", "x-other": "zzz", "a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": "1"}, False),
        ({"a": 1}, {"a": True}, False),
        ({"a": True}, {"a": 1}, False),
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": "1"}, {"a": "1"}, True),
        ({"a": None}, {"a": None}, True),
        ({"a": None}, {}, False),
        ({"a": {"b": [1, "x"]}}, {"a": {"b": [1, "x"]}}, True),
        ({"a": {"b": [1, "x"]}}, {"a": {"b": [True, "x"]}}, False),
        ({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, False),
    ],
)
def test_headers_match(broker: Broker, arguments: dict[str, Any], headers: dict[str, Any], expected: bool) -> None:
    exchange(broker, "h", "headers")
    bind(broker, "h", "q1", "ignored", arguments)
    assert routed(broker, "h", "any-key", headers) == int(expected)


@pytest.mark.parametrize("mode", ["ALL", "some", 1, None, ["any"]])
def test_headers_binding_with_a_bad_x_match_is_invalid(broker: Broker, mode: Any) -> None:
    exchange(broker, "h", "headers")
    with pytest.raises(BrokerError) as caught:
        bind(broker, "h", "q1", "", {"x-match": mode, "a": 1})
    assert caught.value.code == "invalid"
    assert caught.value.fields is not None and "arguments" in caught.value.fields
    assert broker.bindings == {}


def test_removing_a_headers_binding_leaves_one_that_only_python_finds_equal(broker: Broker) -> None:
    # {"a": 1} and {"a": true} are distinct bindings (JSON values differ) though 1 == True in Python.
    exchange(broker, "h", "headers")
    bind(broker, "h", "q1", "", {"a": 1})
    bind(broker, "h", "q1", "", {"a": True})
    assert broker.unbind(BindingSpec("h", "q1", "", {"a": True}))
    assert routed(broker, "h", "", {"a": 1}) == 1
    assert routed(broker, "h", "", {"a": True}) == 0


def test_headers_routes_remove_takes_one_identical_binding() -> None:
    routes = HeadersRoutes()
    routes.add("q", "", {"a": 1})
    routes.add("q", "", {"a": 1})
    routes.remove("q", "", {"a": 1})
    assert routes.route("", {"a": 1}) == {"q"}
    routes.remove("q", "", {"a": 1})
    assert routes.route("", {"a": 1}) == set()


def test_exchange_declare_is_idempotent_and_refuses_other_properties() -> None:
    broker = Broker()
    spec = ExchangeSpec("x", ExchangeType.TOPIC, durable=True, arguments={"k": 1})
    assert broker.declare_exchange(spec) is True
    assert broker.declare_exchange(ExchangeSpec("x", ExchangeType.TOPIC, durable=True, arguments={"k": 1})) is False
    for other in (
        ExchangeSpec("x", ExchangeType.DIRECT),
        ExchangeSpec("x", ExchangeType.TOPIC, durable=False, arguments={"k": 1}),
        ExchangeSpec("x", ExchangeType.TOPIC, auto_delete=True, arguments={"k": 1}),
        ExchangeSpec("x", ExchangeType.TOPIC, arguments={"k": 2}),
    ):
        with pytest.raises(PreconditionFailed):
            broker.declare_exchange(other)
    assert broker.exchanges["x"].spec is spec


def test_reserved_names_are_forbidden_unless_reserved_ok() -> None:
    broker = Broker()
    with pytest.raises(Forbidden):
        broker.declare_exchange(ExchangeSpec("amq.topic", ExchangeType.TOPIC))
    with pytest.raises(Forbidden):
        broker.declare_queue(QueueSpec("amq.gen-1"), now=0.0)
    assert broker.exchanges == {} and broker.queues == {}
    assert broker.declare_exchange(ExchangeSpec("amq.topic", ExchangeType.TOPIC), reserved_ok=True)
    with pytest.raises(Forbidden):
        broker.delete_exchange("amq.topic")
    broker.delete_exchange("amq.topic", reserved_ok=True)
    assert broker.exchanges == {}


def test_default_exchange_cannot_be_deleted_or_bound(broker: Broker) -> None:
    with pytest.raises(Forbidden):
        broker.delete_exchange("")
    with pytest.raises(Forbidden):
        bind(broker, "", "q1", "q1")
    assert broker.bindings == {}


def test_deleting_an_exchange_removes_its_bindings(broker: Broker) -> None:
    exchange(broker, "x", "fanout")
    exchange(broker, "y", "fanout")
    bind(broker, "x", "q1")
    bind(broker, "x", "q2")
    bind(broker, "y", "q1")
    broker.delete_exchange("x")
    assert [spec.exchange for spec in broker.bindings.values()] == ["y"]
    assert "x" not in broker.exchanges
    assert routed(broker, "y") == 1
    # Declared again, it starts with no bindings.
    exchange(broker, "x", "fanout")
    assert routed(broker, "x") == 0


def test_bind_to_missing_exchange_or_queue_is_not_found(broker: Broker) -> None:
    exchange(broker, "x")
    with pytest.raises(NotFound):
        bind(broker, "nope", "q1")
    with pytest.raises(NotFound):
        bind(broker, "x", "nope")
    with pytest.raises(NotFound):
        broker.publish(msg("nope", "k"), now=0.0)
    with pytest.raises(NotFound):
        broker.delete_exchange("nope")
    assert broker.bindings == {}


def test_identical_binding_returns_false_and_arguments_make_bindings_distinct(broker: Broker) -> None:
    exchange(broker, "x", "direct")
    assert bind(broker, "x", "q1", "k") is True
    assert bind(broker, "x", "q1", "k", {}) is False
    assert bind(broker, "x", "q1", "k", {"a": 1}) is True
    assert bind(broker, "x", "q1", "k", {"a": 1}) is False
    assert len(broker.bindings) == 2
    assert broker.exchanges["x"].binding_count == 2
    assert routed(broker, "x", "k") == 1
    assert broker.unbind(BindingSpec("x", "q1", "k"))
    assert routed(broker, "x", "k") == 1  # the binding with arguments still routes
    assert broker.unbind(BindingSpec("x", "q1", "k", {"a": 1}))
    assert broker.unbind(BindingSpec("x", "q1", "k", {"a": 1})) is False
    assert routed(broker, "x", "k") == 0
    assert broker.exchanges["x"].binding_count == 0


def test_deleting_a_queue_removes_its_bindings(broker: Broker) -> None:
    exchange(broker, "x", "topic")
    bind(broker, "x", "q1", "#")
    bind(broker, "x", "q2", "#")
    broker.delete_queue("q1")
    assert [spec.destination for spec in broker.bindings.values()] == ["q2"]
    assert routed(broker, "x", "a") == 1


def test_sync_exchange_changes_the_type_and_keeps_the_bindings(broker: Broker) -> None:
    exchange(broker, "x", "direct")
    bind(broker, "x", "q1", "a.*")
    assert routed(broker, "x", "a.b") == 0
    broker.sync_exchange(ExchangeSpec("x", ExchangeType.TOPIC))
    assert routed(broker, "x", "a.b") == 1
    assert broker.exchanges["x"].binding_count == 1


def test_exchange_types_parse() -> None:
    assert parse_exchange_type("topic") is ExchangeType.TOPIC
    for bad in ("Topic", "", None, 1, ["direct"]):
        with pytest.raises(BrokerError) as caught:
            parse_exchange_type(bad)
        assert caught.value.code == "invalid" and caught.value.fields == {
            "type": ["must be one of direct, fanout, topic, headers, x-delayed-message"]
        }


@pytest.mark.parametrize("name", ["", "a b", "é", "x" * 256, "a/b"])
def test_malformed_names_are_invalid(name: str) -> None:
    with pytest.raises(BrokerError) as caught:
        check_name("queue", name)
    assert caught.value.code == "invalid"


def test_name_rules() -> None:
    check_name("queue", "a-Z_0.9:x" + "y" * 246)
    with pytest.raises(Forbidden):
        check_name("exchange", "amq.direct")
    check_name("exchange", "amq.direct", reserved_ok=True)
