"""A refused call leaves no trace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broker.engine.broker import Broker
from broker.engine.errors import BrokerError
from broker.engine.exchanges import ExchangeSpec, ExchangeType
from broker.engine.jsoncodec import dumps
from broker.engine.queues import AckMode, QueueSpec
from broker.engine.routing import BindingSpec
from tests.engine.helpers import bind, exchange, fill, msg, queue, subscribe


def populated() -> tuple[Broker, int]:
    """Exchanges, bindings, messages ready and unacknowledged, a private queue; returns the consumer's connection."""
    broker = Broker()
    exchange(broker, "fan", "fanout")
    exchange(broker, "hdr", "headers")
    queue(broker, "q", arguments={"max_length": 10, "dead_letter_exchange": "fan"})
    queue(broker, "dead")
    bind(broker, "fan", "dead")
    bind(broker, "hdr", "q", "", {"x-match": "any", "a": 1})
    fill(broker, "q", 1, 2, 3, 4)
    sub = subscribe(broker, "q", prefetch=2)
    broker.declare_queue(QueueSpec("amq.gen-p", durable=False, auto_delete=True, exclusive_to=sub.connection),
                         now=0.0, reserved_ok=True)
    return broker, sub.connection


def snapshot(broker: Broker) -> Any:
    return (
        {name: (e.spec, e.binding_count) for name, e in broker.exchanges.items()},
        {
            name: (
                q.spec,
                q.args,
                [(e.message.message_id, e.store_id, e.redelivered, e.expires_at) for e in q.ready],
                [c.subscription for c in q.consumers],
                q.unacked,
                q.next_consumer,
                q.last_used,
                broker.queue_counts(name),
            )
            for name, q in broker.queues.items()
        },
        dict(broker.bindings),
        {
            cid: (
                c.next_tag,
                {tag: p.envelope.message.message_id for tag, p in c.unacked.items()},
                {s: (c2.queue.name, c2.unacked) for s, c2 in c.consumers.items()},
                set(c.exclusive_queues),
            )
            for cid, c in broker.connections.items()
        },
        broker.next_store_id,
        broker._next_connection,
    )


def consume_exchange(broker: Broker, conn: int, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = dict(
        subscription="s2", subscription_json='"s2"', exchange="fan", binding_key="", arguments=None,
        queue="amq.gen-new", ack_mode=AckMode.AUTO, prefetch=1, now=5.0,
    )
    kwargs.update(overrides)
    return broker.consume_exchange(conn, **kwargs)


REFUSED: dict[str, Callable[[Broker, int], object]] = {
    "declare reserved exchange": lambda b, c: b.declare_exchange(ExchangeSpec("amq.x", ExchangeType.DIRECT)),
    "redeclare exchange differently": lambda b, c: b.declare_exchange(ExchangeSpec("fan", ExchangeType.TOPIC)),
    "declare reserved queue": lambda b, c: b.declare_queue(QueueSpec("amq.q"), now=5.0),
    "redeclare queue differently": lambda b, c: b.declare_queue(QueueSpec("q", durable=False), now=5.0),
    "declare queue bad arguments": lambda b, c: b.declare_queue(QueueSpec("n", arguments={"expires": 0}), now=5.0),
    "declare exclusive queue of a missing connection": lambda b, c: b.declare_queue(
        QueueSpec("n", exclusive_to=999), now=5.0
    ),
    "sync queue bad arguments": lambda b, c: b.sync_queue(QueueSpec("q", arguments={"max_length": "x"}), now=5.0),
    "delete default exchange": lambda b, c: b.delete_exchange(""),
    "delete missing exchange": lambda b, c: b.delete_exchange("nope"),
    "delete missing queue": lambda b, c: b.delete_queue("nope"),
    "bind default exchange": lambda b, c: b.bind(BindingSpec("", "q", "q")),
    "bind missing exchange": lambda b, c: b.bind(BindingSpec("nope", "q")),
    "bind missing queue": lambda b, c: b.bind(BindingSpec("fan", "nope")),
    "bind bad x-match": lambda b, c: b.bind(BindingSpec("hdr", "dead", "", {"x-match": "none"})),
    "bind arguments not an object": lambda b, c: b.bind(BindingSpec("fan", "dead", "", ["a"])),  # type: ignore[arg-type]
    "publish to missing exchange": lambda b, c: b.publish(msg("nope", "q", 1), now=5.0),
    "consume missing queue": lambda b, c: b.consume(
        c, subscription="s2", subscription_json='"s2"', queue="nope", ack_mode=AckMode.CLIENT, prefetch=1, now=5.0
    ),
    "consume duplicate subscription": lambda b, c: b.consume(
        c, subscription="s1", subscription_json='"s1"', queue="dead", ack_mode=AckMode.CLIENT, prefetch=1, now=5.0
    ),
    "consume bad prefetch": lambda b, c: b.consume(
        c, subscription="s2", subscription_json='"s2"', queue="dead", ack_mode=AckMode.CLIENT, prefetch=-1, now=5.0
    ),
    "consume another connection's private queue": lambda b, c: b.consume(
        _other(b), subscription="s", subscription_json='"s"',
        queue="amq.gen-p", ack_mode=AckMode.CLIENT, prefetch=1, now=5.0,
    ),
    "consume on a missing connection": lambda b, c: b.consume(
        999, subscription="s", subscription_json='"s"', queue="q", ack_mode=AckMode.CLIENT, prefetch=1, now=5.0
    ),
    "consume exchange missing": lambda b, c: consume_exchange(b, c, exchange="nope"),
    "consume exchange existing queue": lambda b, c: consume_exchange(b, c, queue="q"),
    "consume exchange duplicate subscription": lambda b, c: consume_exchange(b, c, subscription="s1"),
    "consume exchange bad x-match": lambda b, c: consume_exchange(b, c, exchange="hdr", arguments={"x-match": 1}),
    "consume exchange arguments not an object": lambda b, c: consume_exchange(b, c, arguments=[1]),
    "cancel unknown subscription": lambda b, c: b.cancel(c, "nope", now=5.0),
    "ack unknown tag": lambda b, c: b.ack(c, 99, multiple=False, now=5.0),
    "ack multiple below every tag": lambda b, c: b.ack(c, 0, multiple=True, now=5.0),
    "ack a non-integer tag": lambda b, c: b.ack(c, "1", multiple=False, now=5.0),  # type: ignore[arg-type]
    "nack unknown tag": lambda b, c: b.nack(c, 99, multiple=False, requeue=False, now=5.0),
    "get bad count": lambda b, c: b.get("q", count=0, ack=True, now=5.0),
    "get missing queue": lambda b, c: b.get("nope", count=1, ack=True, now=5.0),
    "purge missing queue": lambda b, c: b.purge("nope"),
    "restore a missing queue": lambda b, c: b.restore("nope", 50),
}


def _other(broker: Broker) -> int:
    """A connection other than the consumer's, opened before the snapshot."""
    return max(broker.connections)


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_refused_call_changes_nothing(name: str) -> None:
    broker, conn = populated()
    broker.open_connection()  # the "other" connection, present in both snapshots
    before = snapshot(broker)
    with pytest.raises(BrokerError):
        REFUSED[name](broker, conn)
    assert snapshot(broker) == before


def test_the_populated_broker_is_what_the_refusals_run_against() -> None:
    broker, conn = populated()
    counts = broker.queue_counts("q")
    assert counts is not None and (counts.messages_ready, counts.messages_unacknowledged) == (2, 2)
    assert list(broker.connections[conn].unacked) == [1, 2]
    assert broker.connections[conn].exclusive_queues == {"amq.gen-p"}
    assert dumps(sorted(broker.queues)) == '["amq.gen-p","dead","q"]'
