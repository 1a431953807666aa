"""Dead-lettering with publisher-supplied headers, the retry-queue pattern, and
requeue order across consumers (found in review)."""

from __future__ import annotations

from broker.engine.broker import Broker, QueueCounts
from tests.engine.helpers import bind, bodies, exchange, fill, queue, ready, ready_flags, send, subscribe


def retry_topology(broker: Broker) -> None:
    """work --rejected--> retry-x -> retry --expired--> work-x -> work (RabbitMQ's delayed retry)."""
    exchange(broker, "retry-x", "fanout")
    exchange(broker, "work-x", "fanout")
    queue(broker, "work", arguments={"dead_letter_exchange": "retry-x"})
    queue(broker, "retry", arguments={"dead_letter_exchange": "work-x", "message_ttl": 1000})
    bind(broker, "retry-x", "retry")
    bind(broker, "work-x", "work")


def test_a_malformed_x_death_from_a_publisher_does_not_break_a_nack() -> None:
    broker = Broker()
    retry_topology(broker)
    send(broker, "work", "m", headers={"x-death": [{"queue": "work", "reason": "rejected", "count": None}, "junk"]})
    consumer = subscribe(broker, "work")
    broker.nack(consumer.connection, 1, multiple=False, requeue=False, now=0.0)
    (envelope,) = broker.queues["retry"].ready
    death = envelope.message.headers["x-death"][0]
    assert (death["queue"], death["reason"], death["count"]) == ("work", "rejected", 1)


def test_the_retry_queue_pattern_keeps_cycling_while_a_client_rejects() -> None:
    broker = Broker()
    retry_topology(broker)
    send(broker, "work", "job")
    consumer = subscribe(broker, "work", prefetch=1)
    tag, now = 1, 0.0
    for attempt in range(1, 4):
        broker.nack(consumer.connection, tag, multiple=False, requeue=False, now=now)
        assert ready(broker, "retry") == ["job"], f"dropped at attempt {attempt}"
        now += 2.0
        effects = broker.tick(now=now)  # expires back into work, straight to the consumer
        (delivery,) = effects.deliveries
        tag = delivery.delivery_tag
        counts = {(d["queue"], d["reason"]): d["count"] for d in delivery.message.headers["x-death"]}
        assert counts == {("work", "rejected"): attempt, ("retry", "expired"): attempt}


def test_a_loop_of_expiries_without_a_rejection_is_dropped() -> None:
    broker = Broker()
    exchange(broker, "to-b", "fanout")
    exchange(broker, "to-a", "fanout")
    queue(broker, "a", arguments={"dead_letter_exchange": "to-b", "message_ttl": 10})
    queue(broker, "b", arguments={"dead_letter_exchange": "to-a", "message_ttl": 10})
    bind(broker, "to-b", "b")
    bind(broker, "to-a", "a")
    send(broker, "a", "ping-pong")
    broker.tick(now=1.0)  # a -> b
    broker.tick(now=2.0)  # b -> a
    broker.tick(now=3.0)  # a again, no rejection since: dropped
    assert ready(broker, "a") == [] and ready(broker, "b") == []


def _dead_letters_to_itself(broker: Broker, **arguments: object) -> None:
    queue(broker, "q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q", **arguments})


def test_a_queue_dead_lettering_to_itself_drops_a_message_past_its_delivery_limit() -> None:
    """As RabbitMQ: only a rejection breaks a cycle; a delivery limit reached is no retry
    (it went round for ever, its `x-death` count growing)."""
    broker = Broker()
    _dead_letters_to_itself(broker, **{"x-delivery-limit": 1})
    send(broker, "q", "poison")
    consumer = subscribe(broker, "q", prefetch=1)
    deliveries = list(consumer.effects.deliveries)
    for _ in range(2):
        tag = deliveries[-1].delivery_tag
        deliveries.extend(broker.nack(consumer.connection, tag, multiple=False, requeue=True, now=0.0).deliveries)
    assert [d.returns for d in deliveries] == [0, 1]
    assert broker.queue_counts("q") == QueueCounts(0, 0, 1) and broker.queues["q"].dead_lettered == 1


def test_messages_a_delivery_limit_keeps_go_back_before_the_others_are_handed_out() -> None:
    broker = Broker()
    _dead_letters_to_itself(broker, **{"x-delivery-limit": 1})
    fill(broker, "q", 1, 2, 3, 4)
    consumer = subscribe(broker, "q", prefetch=2)
    assert bodies(consumer.effects.deliveries) == [1, 2]
    assert bodies(broker.nack(consumer.connection, 1, multiple=False, requeue=True, now=0.0).deliveries) == [1]
    effects = broker.nack(consumer.connection, 3, multiple=True, requeue=True, now=0.0)  # 2, and 1 past its limit
    assert bodies(effects.deliveries) == [2, 3] and ready(broker, "q") == [4]


def test_requeues_from_two_consumers_keep_the_queue_order_whoever_leaves_first() -> None:
    broker = Broker()
    queue(broker, "q")
    fill(broker, "q", 0, 1, 2, 3)
    first = subscribe(broker, "q", prefetch=1)
    second = subscribe(broker, "q", prefetch=1)
    assert bodies(first.effects.deliveries) == [0] and bodies(second.effects.deliveries) == [1]
    broker.close_connection(second.connection, now=0.0)  # 1 goes back first...
    assert ready(broker, "q") == [1, 2, 3]
    third = subscribe(broker, "q", prefetch=1)  # takes 1 again
    broker.close_connection(first.connection, now=0.0)  # ...then 0
    broker.close_connection(third.connection, now=0.0)
    assert ready_flags(broker, "q") == [(0, True), (1, True), (2, False), (3, False)]


def test_a_restart_restores_each_queues_order_as_redeliveries_and_ttls() -> None:
    from tests.engine.helpers import msg, restore

    broker = Broker()
    queue(broker, "a")
    queue(broker, "b", arguments={"message_ttl": 1000})
    rows = {3: ("a", msg("", "a", 1)), 5: ("b", msg("", "b", 2)), 9: ("a", msg("", "a", 3)), 11: ("b", msg("", "b", 4))}
    broker.restored_below = 12
    restore(broker, rows, now=10.0)
    assert ready_flags(broker, "a") == [(1, True), (3, True)]
    assert ready(broker, "b") == [2, 4]
    assert [e.expires_at for e in broker.queues["b"].ready] == [11.0, 11.0]


def test_a_zero_ttl_message_reaches_a_waiting_consumer_and_otherwise_expires() -> None:
    broker = Broker()
    queue(broker, "q", arguments={"message_ttl": 0})
    consumer = subscribe(broker, "q", prefetch=1, now=5.0)
    assert bodies(send(broker, "q", "now", now=5.0).deliveries) == ["now"]
    send(broker, "q", "later", now=5.0)  # the consumer is full: it waits, and its time is up
    broker.tick(now=5.1)
    broker.ack(consumer.connection, 1, multiple=False, now=5.2)
    assert ready(broker, "q") == []


def test_a_reloaded_messages_ttl_counts_from_its_publication_not_the_restart() -> None:
    from tests.engine.helpers import PUBLISHED_AT, msg, restore  # 2026-11-28T12:00:00Z

    published = 1_795_867_200.0  # PUBLISHED_AT as seconds since the epoch
    broker = Broker()
    queue(broker, "q", arguments={"message_ttl": 5000})
    restore(broker, {1: ("q", msg("", "q", "old"))}, now=100.0, wall_now=published + 2.0)
    assert PUBLISHED_AT.startswith("2026-11-28T12:00:00")
    assert broker.queues["q"].ready[0].expires_at == 103.0  # 5 s of TTL, 2 already spent


def test_a_ttl_given_later_by_the_stored_definition_is_honoured_and_taken_back() -> None:
    from broker.engine.queues import QueueSpec

    broker = Broker()
    queue(broker, "q")
    broker.sync_queue(QueueSpec("q", arguments={"message_ttl": 1000}), now=0.0)
    fill(broker, "q", "b", now=0.0)
    broker.tick(now=2.0)
    assert ready(broker, "q") == []  # the TTL the definition gained reached the timer
    broker.sync_queue(QueueSpec("q"), now=2.0)
    fill(broker, "q", "c", now=2.0)
    broker.tick(now=100.0)
    assert ready(broker, "q") == ["c"]


def test_a_dead_letter_s_origin_is_where_the_broker_saw_it_die_whatever_its_x_death_says() -> None:
    """A publisher's `x-death` naming the queue and reason of the death to come is merged
    into the new entry, which keeps its `exchange` (as RabbitMQ): the header says `secret`,
    but the origin a replay follows is the exchange and key the message died with."""
    broker = Broker()
    exchange(broker, "dlx", "fanout")
    queue(broker, "dead")
    bind(broker, "dlx", "dead")
    queue(broker, "inbox", arguments={"dead_letter_exchange": "dlx"})
    forged = {"queue": "inbox", "reason": "rejected", "exchange": "secret", "routing-keys": ["k"], "count": 1}
    send(broker, "inbox", "forged", headers={"x-death": [forged]})
    assert broker.queues["inbox"].ready[0].message.origin is None  # a publish records none
    consumer = subscribe(broker, "inbox")
    broker.nack(consumer.connection, 1, multiple=False, requeue=False, now=0.0)
    (envelope,) = broker.queues["dead"].ready
    assert envelope.message.headers["x-death"][0]["exchange"] == "secret"  # the client's header, kept
    assert envelope.message.origin == ("", "inbox")
