"""The running totals the metrics read: per queue and per exchange, one per event."""

from __future__ import annotations

from broker.engine.broker import Broker
from tests.engine.helpers import bind, exchange, fill, queue, send, subscribe


def totals(broker: Broker, name: str) -> dict[str, int]:
    q = broker.queues[name]
    return {
        "enqueued": q.enqueued,
        "delivered": q.delivered,
        "redelivered": q.redelivered,
        "acknowledged": q.acknowledged,
        "nacked": q.nacked,
        "dead_lettered": q.dead_lettered,
        "dropped": q.dropped,
        "refused": q.refused,
    }


def test_a_nack_with_requeue_counts_a_redelivery_and_one_without_a_dead_letter() -> None:
    broker = Broker()
    exchange(broker, "dlx", "fanout")
    queue(broker, "dead")
    bind(broker, "dlx", "dead")
    queue(broker, "work", arguments={"x-dead-letter-exchange": "dlx"})
    fill(broker, "work", "a", "b")
    consumer = subscribe(broker, "work", prefetch=1)
    broker.nack(consumer.connection, 1, multiple=False, requeue=True, now=0.0)  # "a" comes back as tag 2
    broker.ack(consumer.connection, 2, multiple=False, now=0.0)  # "b" goes out as tag 3
    broker.nack(consumer.connection, 3, multiple=False, requeue=False, now=0.0)
    assert totals(broker, "work") == {
        "enqueued": 2, "delivered": 3, "redelivered": 1, "acknowledged": 1,
        "nacked": 2, "dead_lettered": 1, "dropped": 0, "refused": 0,
    }
    assert broker.queues["dead"].enqueued == 1


def test_drops_without_a_dead_letter_exchange_and_refusals_of_a_full_queue() -> None:
    broker = Broker()
    queue(broker, "capped", arguments={"x-max-length": 1})
    queue(broker, "strict", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    fill(broker, "capped", 1, 2, 3)
    fill(broker, "strict", 1, 2, 3)
    assert (broker.queues["capped"].dropped, broker.queues["capped"].refused) == (2, 0)
    assert (broker.queues["strict"].dropped, broker.queues["strict"].refused) == (0, 2)
    assert broker.queues["strict"].enqueued == 1


def test_expired_messages_count_as_dropped() -> None:
    broker = Broker()
    queue(broker, "short", arguments={"x-message-ttl": 1000})
    fill(broker, "short", "a", "b")
    broker.tick(now=2.0)
    assert broker.queues["short"].dropped == 2


def test_exchanges_count_their_publishes_and_the_unroutable_ones() -> None:
    broker = Broker()
    exchange(broker, "events", "topic")
    queue(broker, "orders")
    bind(broker, "events", "orders", "order.*")
    send(broker, "order.created", exchange="events")
    send(broker, "user.created", exchange="events")
    send(broker, "orders")
    send(broker, "nobody")
    assert (broker.exchanges["events"].published, broker.exchanges["events"].unroutable) == (2, 1)
    assert (broker.default_published, broker.default_unroutable) == (2, 1)
    assert broker.published == 4


def test_get_counts_redeliveries_too() -> None:
    broker = Broker()
    queue(broker, "q")
    fill(broker, "q", "a")
    broker.get("q", count=1, ack=False, now=0.0)  # looked at, left at the head, marked redelivered
    broker.get("q", count=1, ack=True, now=0.0)
    assert (broker.queues["q"].delivered, broker.queues["q"].redelivered) == (2, 1)
