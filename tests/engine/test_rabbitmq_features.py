"""RabbitMQ's queue and exchange arguments in the engine: `x-delivery-limit`,
`x-single-active-consumer`, `alternate-exchange`, `x-overflow: reject-publish(-dlx)`
with the publisher told. tests/parity runs the same against the real RabbitMQ."""

from __future__ import annotations

import pytest

from broker.engine.broker import Broker
from broker.engine.errors import BrokerError
from broker.engine.exchanges import ExchangeSpec, ExchangeType
from broker.engine.queues import QueueSpec
from tests.engine.helpers import bind, bodies, exchange, fill, msg, queue, ready, send, subscribe


def dead_letter_topology(broker: Broker, **arguments: object) -> None:
    exchange(broker, "dlx", "fanout")
    queue(broker, "dead")
    bind(broker, "dlx", "dead")
    queue(broker, "work", arguments={"x-dead-letter-exchange": "dlx", **arguments})


def test_a_poison_message_is_dead_lettered_after_its_third_redelivery() -> None:
    broker = Broker()
    dead_letter_topology(broker, **{"x-delivery-limit": 3})
    send(broker, "work", "poison")
    consumer = subscribe(broker, "work", prefetch=1)
    deliveries = list(consumer.effects.deliveries)
    for _ in range(4):
        tag = deliveries[-1].delivery_tag
        deliveries.extend(broker.nack(consumer.connection, tag, multiple=False, requeue=True, now=0.0).deliveries)
    assert [d.redelivered for d in deliveries] == [False, True, True, True]  # three redeliveries, then no more
    assert ready(broker, "work") == [] and ready(broker, "dead") == ["poison"]
    (death,) = broker.queues["dead"].ready[0].message.headers["x-death"]
    assert (death["queue"], death["reason"], death["count"]) == ("work", "delivery_limit", 1)
    assert broker.queues["work"].dead_lettered == 1


def test_each_delivery_counts_the_returns_before_it_with_or_without_a_limit() -> None:
    """RabbitMQ's quorum queues' `x-delivery-count`: nacks with requeue and closed consumers
    both count; the first delivery has none."""
    broker = Broker()
    queue(broker, "work")
    send(broker, "work", "m")
    consumer = subscribe(broker, "work")
    (first,) = consumer.effects.deliveries
    (second,) = broker.nack(consumer.connection, first.delivery_tag, multiple=False, requeue=True, now=0.0).deliveries
    broker.close_connection(consumer.connection, now=0.0)
    (third,) = subscribe(broker, "work").effects.deliveries
    assert [(d.redelivered, d.returns) for d in (first, second, third)] == [(False, 0), (True, 1), (True, 2)]
    assert "x-delivery-count" not in third.message.headers  # the message's own: shared, unchanged
    broker.close_connection(third.connection, now=0.0)
    send(broker, "work", "never given back")
    taken, _ = broker.get("work", count=2, ack=True, now=0.0)
    assert [dict(m.headers) for m, _ in taken] == [{"x-delivery-count": 3}, {}]


def test_returns_by_a_closing_connection_count_toward_the_delivery_limit() -> None:
    broker = Broker()
    dead_letter_topology(broker, **{"x-delivery-limit": 1})
    send(broker, "work", "m")
    for _ in range(2):
        consumer = subscribe(broker, "work")
        assert bodies(consumer.effects.deliveries) == ["m"]
        broker.close_connection(consumer.connection, now=0.0)
    assert ready(broker, "dead") == ["m"] and ready(broker, "work") == []


def test_a_delivery_limit_of_zero_dead_letters_at_the_first_return() -> None:
    broker = Broker()
    dead_letter_topology(broker, **{"x-delivery-limit": 0})
    send(broker, "work", "m")
    consumer = subscribe(broker, "work")
    broker.nack(consumer.connection, 1, multiple=False, requeue=True, now=0.0)
    assert ready(broker, "dead") == ["m"]


def test_only_the_oldest_consumer_of_a_single_active_consumer_queue_gets_messages() -> None:
    broker = Broker()
    queue(broker, "sac", arguments={"x-single-active-consumer": True})
    first = subscribe(broker, "sac", prefetch=2)
    second = subscribe(broker, "sac", subscription="s2", prefetch=2)
    effects = send(broker, "sac", 1)
    effects2 = send(broker, "sac", 2)
    send(broker, "sac", 3)  # over the active one's prefetch: waits, the other gets nothing
    assert [d.connection for d in effects.deliveries + effects2.deliveries] == [first.connection] * 2
    assert ready(broker, "sac") == [3]
    # The active one leaves: the next takes over, from its unacknowledged messages on, in order.
    effects = broker.close_connection(first.connection, now=0.0)
    assert [(d.connection, d.redelivered) for d in effects.deliveries] == [(second.connection, True)] * 2
    assert bodies(effects.deliveries) == [1, 2]
    broker.ack(second.connection, effects.deliveries[-1].delivery_tag, multiple=True, now=0.0)
    assert ready(broker, "sac") == []


def test_unroutable_messages_go_to_the_alternate_exchange() -> None:
    broker = Broker()
    exchange(broker, "unrouted", "fanout")
    queue(broker, "lost-and-found")
    bind(broker, "unrouted", "lost-and-found")
    exchange(broker, "orders", "direct", arguments={"alternate-exchange": "unrouted"})
    queue(broker, "eu")
    bind(broker, "orders", "eu", "eu")
    routed = broker.publish(msg("orders", "eu", 1), now=0.0).routed
    routed_elsewhere = broker.publish(msg("orders", "us", 2), now=0.0).routed
    assert (routed, routed_elsewhere) == (1, 1)
    assert ready(broker, "eu") == [1] and ready(broker, "lost-and-found") == [2]
    assert (broker.exchanges["orders"].published, broker.exchanges["orders"].unroutable) == (2, 0)


def test_alternate_exchanges_chain_and_a_cycle_ends() -> None:
    broker = Broker()
    exchange(broker, "a", "direct", arguments={"alternate-exchange": "b"})
    exchange(broker, "b", "direct", arguments={"alternate-exchange": "a"})
    assert broker.publish(msg("a", "k", 1), now=0.0).routed == 0  # round the cycle once, then dropped
    exchange(broker, "c", "direct", arguments={"alternate-exchange": "d"})
    exchange(broker, "d", "direct", arguments={"alternate-exchange": "e"})
    exchange(broker, "e", "fanout")
    queue(broker, "end")
    bind(broker, "e", "end")
    assert broker.publish(msg("c", "k", 1), now=0.0).routed == 1
    assert broker.exchanges["a"].unroutable == 1


def test_an_alternate_exchange_named_by_a_non_string_is_refused_and_nothing_changes() -> None:
    broker = Broker()
    with pytest.raises(BrokerError) as refused:
        broker.declare_exchange(ExchangeSpec("x", ExchangeType.DIRECT, arguments={"alternate-exchange": 5}))
    assert refused.value.code == "invalid" and "alternate-exchange" in refused.value.message
    assert "x" not in broker.exchanges


@pytest.mark.parametrize("overflow", ["reject-publish", "reject-publish-dlx"])
def test_a_full_reject_publish_queue_refuses_and_the_publisher_is_told(overflow: str) -> None:
    broker = Broker()
    dead_letter_topology(broker, **{"x-max-length": 1, "x-overflow": overflow})
    queue(broker, "audit")
    exchange(broker, "fan", "fanout")
    bind(broker, "fan", "work")
    bind(broker, "fan", "audit")
    first = broker.publish(msg("fan", "", 1), now=0.0)
    second = broker.publish(msg("fan", "", 2), now=0.0)
    assert (first.routed, first.refused_by) == (2, None)
    assert (second.routed, second.refused_by) == (1, "work")  # the other queue took it
    assert ready(broker, "work") == [1] and ready(broker, "audit") == [1, 2]
    assert ready(broker, "dead") == ([2] if overflow == "reject-publish-dlx" else [])


def test_queue_arguments_are_checked_with_rabbitmq_s_names() -> None:
    broker = Broker()
    for arguments, problem in (
        ({"x-delivery-limit": -1}, "integer >= 0"),
        ({"x-single-active-consumer": "yes"}, "true or false"),
        ({"x-overflow": "drop-tail"}, "reject-publish-dlx"),
    ):
        with pytest.raises(BrokerError) as refused:
            broker.declare_queue(QueueSpec("q", arguments=arguments), now=0.0)
        assert problem in refused.value.message
    assert broker.queues == {}



def test_a_message_s_own_expiration_drops_it_or_dead_letters_it_with_its_original_expiration() -> None:
    broker = Broker()
    dead_letter_topology(broker)
    send(broker, "work", "short", headers={"expiration": "1000"})
    send(broker, "work", "forever")
    broker.tick(now=0.9)
    assert ready(broker, "work") == ["short", "forever"]
    broker.tick(now=1.1)
    assert ready(broker, "work") == ["forever"] and ready(broker, "dead") == ["short"]
    headers = broker.queues["dead"].ready[0].message.headers
    # As RabbitMQ: in the death's entry, not a header of its own.
    assert "expiration" not in headers and "original-expiration" not in headers
    assert headers["x-death"][0]["original-expiration"] == "1000"
    assert headers["x-first-death-reason"] == "expired"
    broker.tick(now=100.0)
    assert ready(broker, "dead") == ["short"]  # it does not expire again there


def test_the_shorter_of_the_queue_s_ttl_and_the_message_s_own_counts() -> None:
    broker = Broker()
    queue(broker, "q", arguments={"x-message-ttl": 5000})
    send(broker, "q", "own is shorter", headers={"expiration": 1000})
    send(broker, "q", "queue's is shorter", headers={"expiration": "60000"})
    broker.tick(now=1.5)
    assert ready(broker, "q") == ["queue's is shorter"]
    broker.tick(now=5.5)
    assert ready(broker, "q") == []


def test_an_expired_message_behind_the_head_is_never_delivered() -> None:
    broker = Broker()
    queue(broker, "q")
    send(broker, "q", "head")
    send(broker, "q", "stale", headers={"expiration": "10"})
    consumer = subscribe(broker, "q", now=1.0)  # the head is not expiring: "stale" waited behind it
    assert bodies(consumer.effects.deliveries) == ["head"]
    assert broker.queues["q"].dropped == 1


def test_an_expiration_that_is_not_a_number_is_refused() -> None:
    from broker.protocol.publish import prepare_publish

    for bad in ("soon", "-5", True, 1.5):
        with pytest.raises(BrokerError) as refused:
            prepare_publish({"body": 1, "headers": {"expiration": bad}}, max_bytes=1000)
        assert "expiration" in refused.value.message


def test_a_priority_queue_serves_the_highest_priority_first_each_in_order() -> None:
    broker = Broker()
    queue(broker, "p", arguments={"x-max-priority": 5})
    for body, priority in (("low-1", None), ("high-1", 5), ("mid", "3"), ("high-2", 9), ("low-2", 0)):
        send(broker, "p", body, headers={} if priority is None else {"priority": priority})
    assert ready(broker, "p") == ["high-1", "high-2", "mid", "low-1", "low-2"]  # 9 counts as the highest, 5
    consumer = subscribe(broker, "p", prefetch=2)
    assert bodies(consumer.effects.deliveries) == ["high-1", "high-2"]
    # Given back, they return to the head of their priority, before the others.
    effects = broker.close_connection(consumer.connection, now=0.0)
    assert effects.deliveries == ()
    send(broker, "p", "urgent", headers={"priority": 4})
    assert ready(broker, "p") == ["high-1", "high-2", "urgent", "mid", "low-1", "low-2"]
    assert broker.queues["p"].depth == 6


def test_a_priority_queue_stays_whole_in_memory_and_restores_in_priority_order() -> None:
    from tests.engine.helpers import restore

    broker = Broker()
    broker.window = 2
    queue(broker, "p", arguments={"x-max-priority": 2})
    rows = {n + 1: ("p", msg("", "p", n, headers={"priority": n % 3})) for n in range(6)}
    store = restore(broker, rows, now=0.0)
    store.serve(now=0.0)
    assert ready(broker, "p") == [2, 5, 1, 4, 0, 3]
    for n in range(6, 10):
        store.take(send(broker, "p", n))
    assert broker.queues["p"].backlog is None and len(broker.queues["p"].ready) == 10


def test_x_max_priority_is_checked() -> None:
    broker = Broker()
    for bad in (0, 256, "5", True):
        with pytest.raises(BrokerError):
            broker.declare_queue(QueueSpec("p", arguments={"x-max-priority": bad}), now=0.0)
    assert broker.queues == {}


def test_max_length_bytes_drops_from_the_head_until_the_bodies_fit() -> None:
    broker = Broker()
    dead_letter_topology(broker, **{"x-max-length-bytes": 10})
    send(broker, "work", "aaa")  # 5 bytes as kept: "aaa" with its quotes
    send(broker, "work", "bbb")
    assert ready(broker, "work") == ["aaa", "bbb"]
    send(broker, "work", "ccc")  # 15 bytes: the head goes
    assert ready(broker, "work") == ["bbb", "ccc"] and ready(broker, "dead") == ["aaa"]
    send(broker, "work", "x" * 20)  # bigger than the limit alone: everything goes, itself too
    assert ready(broker, "work") == [] and ready(broker, "dead") == ["aaa", "bbb", "ccc", "x" * 20]


def test_max_length_bytes_with_reject_publish_refuses_what_would_go_over() -> None:
    broker = Broker()
    queue(broker, "q", arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"})
    assert broker.publish(msg("", "q", "aaa"), now=0.0).refused_by is None  # 5 bytes (a JSON body's text)
    assert broker.publish(msg("", "q", "bbb"), now=0.0).refused_by is None  # 10: at the limit
    assert broker.publish(msg("", "q", "c"), now=0.0).refused_by == "q"  # 13: over
    text = msg("", "q", "c", headers={"body-encoding": "text"})  # a text body counts its bytes: 1
    assert broker.publish(text, now=0.0).refused_by == "q"
    consumer = subscribe(broker, "q", ack="auto")
    assert bodies(consumer.effects.deliveries) == ["aaa", "bbb"]
    assert broker.publish(msg("", "q", "c"), now=0.0).refused_by is None


def test_bytes_are_counted_through_requeues_and_removals() -> None:
    broker = Broker()
    queue(broker, "q", arguments={"x-max-length-bytes": 1000, "x-max-priority": 3})
    send(broker, "q", "aaa", headers={"priority": 1})
    send(broker, "q", "bbb")
    consumer = subscribe(broker, "q", prefetch=1)
    assert broker.queues["q"].ready.bytes == 5  # type: ignore[union-attr]
    broker.close_connection(consumer.connection, now=0.0)
    assert broker.queues["q"].ready.bytes == 10  # type: ignore[union-attr]
    broker.purge("q")
    assert broker.queues["q"].ready.bytes == 0  # type: ignore[union-attr]


def _give_back(broker: Broker, how: str, connection: int, held: int) -> list[object]:
    """Give back the `held` messages a subscriber holds (tags 1 to `held`), as `how` says;
    returns what is delivered there and then."""
    if how == "nack":
        return bodies(broker.nack(connection, held, multiple=True, requeue=True, now=0.0).deliveries)
    if how == "cancel":
        return bodies(broker.cancel(connection, "s1", now=0.0)[1].deliveries)
    if how == "close":
        return bodies(broker.close_connection(connection, now=0.0).deliveries)
    # A transaction-ack subscriber's copies, in doubt until the shell finds their rows still there.
    effects = broker.close_connection(connection, now=0.0)
    ((name, store_ids),) = [(doubt.queue, doubt.store_ids) for doubt in effects.in_doubt]
    return bodies(broker.settle_in_doubt(name, store_ids, set(store_ids), now=0.0).deliveries)


@pytest.mark.parametrize("how", ["nack", "cancel", "close", "in doubt"])
def test_messages_given_back_past_max_length_push_out_the_head_at_once(how: str) -> None:
    """As RabbitMQ after a requeue: the oldest go there and then (dead-lettered, `maxlen`),
    not at the next publish, which took messages never given back with them."""
    broker = Broker()
    dead_letter_topology(broker, **{"x-max-length": 2})
    consumer = subscribe(broker, "work", prefetch=3, ack="transaction" if how == "in doubt" else "client")
    fill(broker, "work", 1, 2, 3, 4, 5)
    delivered = _give_back(broker, how, consumer.connection, 3)
    assert ready(broker, "dead") == [1, 2, 3]
    assert {m.message.headers["x-death"][0]["reason"] for m in broker.queues["dead"].ready} == {"maxlen"}
    if how == "nack":  # still subscribed, with room: it takes what is left
        assert delivered == [4, 5] and ready(broker, "work") == []
    else:
        assert delivered == [] and ready(broker, "work") == [4, 5]
        send(broker, "work", 6)
        assert ready(broker, "work") == [5, 6] and ready(broker, "dead") == [1, 2, 3, 4]


def test_messages_given_back_past_max_length_bytes_push_out_the_head_at_once() -> None:
    broker = Broker()
    dead_letter_topology(broker, **{"x-max-length-bytes": 10})
    consumer = subscribe(broker, "work", prefetch=2)
    fill(broker, "work", "aaa", "bbb", "ccc", "ddd")  # 5 bytes each as kept
    broker.close_connection(consumer.connection, now=0.0)
    assert ready(broker, "work") == ["ccc", "ddd"] and ready(broker, "dead") == ["aaa", "bbb"]


@pytest.mark.parametrize("overflow", ["reject-publish", "reject-publish-dlx"])
def test_a_reject_publish_queue_keeps_what_is_given_back_past_its_length(overflow: str) -> None:
    """RabbitMQ drops from the head after a requeue only with `drop-head`."""
    broker = Broker()
    dead_letter_topology(broker, **{"x-max-length": 2, "x-overflow": overflow})
    consumer = subscribe(broker, "work", prefetch=3)
    fill(broker, "work", 1, 2, 3, 4, 5)
    broker.close_connection(consumer.connection, now=0.0)
    assert ready(broker, "work") == [1, 2, 3, 4, 5] and ready(broker, "dead") == []


def test_an_auto_delete_queue_its_last_subscriber_left_drops_nothing_on_the_way_out() -> None:
    """RabbitMQ deletes it without requeueing: nothing pushed out is dead-lettered."""
    broker = Broker()
    exchange(broker, "dlx", "fanout")
    queue(broker, "dead")
    bind(broker, "dlx", "dead")
    queue(broker, "work", auto_delete=True, arguments={"x-max-length": 2, "x-dead-letter-exchange": "dlx"})
    consumer = subscribe(broker, "work", prefetch=3)
    fill(broker, "work", 1, 2, 3, 4, 5)
    broker.close_connection(consumer.connection, now=0.0)
    assert "work" not in broker.queues and ready(broker, "dead") == []


def test_each_death_says_when_it_was_and_a_later_one_keeps_the_first_s_entry_as_rabbitmq() -> None:
    """x-death's `time` (RabbitMQ's AMQP timestamp) in `published_at`'s form, from the
    engine's clock and the shell's `wall_offset`; `original-expiration` in the entry the
    death made, whatever its reason."""
    broker = Broker()
    exchange(broker, "retry", "fanout")
    queue(broker, "work", arguments={"x-dead-letter-exchange": "retry"})
    queue(broker, "later", arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "work"})
    bind(broker, "retry", "later")
    broker.wall_offset = 1_795_867_200.0  # the engine's clock at 0.0 is this noon, UTC
    send(broker, "work", "job", headers={"expiration": "60000"})
    consumer = subscribe(broker, "work", prefetch=1)
    broker.nack(consumer.connection, 1, multiple=False, requeue=False, now=0.5)  # to `later`, then back
    (back,) = broker.tick(now=2.0).deliveries
    deaths = back.message.headers["x-death"]
    assert [(d["queue"], d["reason"], d["time"], d.get("original-expiration")) for d in deaths] == [
        ("later", "expired", "2026-11-28T12:00:02.000000Z", None),
        ("work", "rejected", "2026-11-28T12:00:00.500000Z", "60000"),
    ]
    broker.nack(consumer.connection, back.delivery_tag, multiple=False, requeue=False, now=3.0)
    (again,) = broker.queues["later"].ready
    first = again.message.headers["x-death"][0]
    assert (first["queue"], first["count"], first["time"]) == ("work", 2, "2026-11-28T12:00:00.500000Z")
