"""A transaction-ack consumer's copies when it goes away: its own transaction may have
deleted their rows (handled) just before, so they wait until the shell has looked."""

from __future__ import annotations

from broker.engine.broker import Broker, QueueCounts
from broker.engine.messages import InDoubt
from tests.engine.helpers import fill, queue, ready, ready_flags, subscribe


def _held(broker: Broker, *, ack: str = "transaction") -> tuple[int, list[int]]:
    queue(broker, "q")
    fill(broker, "q", 1, 2, 3)  # persistent: each has a store id
    sub = subscribe(broker, "q", ack=ack)
    held = broker.connections[sub.connection].unacked.values()
    store_ids = [pending.envelope.store_id for pending in held]
    assert len(store_ids) == 3 and None not in store_ids
    return sub.connection, [store_id for store_id in store_ids if store_id is not None]


def test_on_close_they_wait_counted_as_unacknowledged() -> None:
    broker = Broker()
    connection, store_ids = _held(broker)

    effects = broker.close_connection(connection, now=1.0)

    assert effects.in_doubt == (InDoubt("q", tuple(store_ids)),)
    assert broker.queue_counts("q") == QueueCounts(0, 3, 0)


def test_those_still_stored_come_back_redelivered_in_order_the_others_are_done() -> None:
    broker = Broker()
    connection, store_ids = _held(broker)
    broker.close_connection(connection, now=1.0)

    effects = broker.settle_in_doubt("q", store_ids, {store_ids[0], store_ids[2]}, now=1.0)

    assert ready_flags(broker, "q") == [(1, True), (3, True)]
    assert broker.queue_counts("q") == QueueCounts(2, 0, 0)
    assert effects.to_delete == ()  # the handled one's row is gone already
    assert broker.queues["q"].acknowledged == 1


def test_a_cancelled_subscription_s_copies_wait_too() -> None:
    broker = Broker()
    connection, store_ids = _held(broker)

    _, effects = broker.cancel(connection, "s1", now=1.0)

    assert effects.in_doubt == (InDoubt("q", tuple(store_ids)),)
    broker.settle_in_doubt("q", store_ids, set(store_ids), now=1.0)
    assert ready(broker, "q") == [1, 2, 3]


def test_a_client_ack_consumer_s_copies_come_back_at_once() -> None:
    broker = Broker()
    connection, _ = _held(broker, ack="client")

    effects = broker.close_connection(connection, now=1.0)

    assert effects.in_doubt == ()
    assert ready(broker, "q") == [1, 2, 3]


def test_a_queue_deleted_meanwhile_takes_them_with_it() -> None:
    broker = Broker()
    connection, store_ids = _held(broker)
    broker.close_connection(connection, now=1.0)

    deleted = broker.delete_queue("q")
    queue(broker, "q")  # declared anew: not the copies' queue
    effects = broker.settle_in_doubt("q", store_ids, set(store_ids), now=1.0)

    assert sorted(deleted.to_delete) == sorted(store_ids)
    assert effects.deliveries == () and ready(broker, "q") == []
    assert broker.queue_counts("q") == QueueCounts(0, 0, 0)


def test_a_copy_the_database_refused_meanwhile_comes_back() -> None:
    """Refused, it never had a row: not finding one does not make it handled."""
    broker = Broker()
    connection, store_ids = _held(broker)
    broker.close_connection(connection, now=1.0)

    broker.unstore({store_ids[1]})
    broker.settle_in_doubt("q", store_ids, set(), now=1.0)

    assert ready(broker, "q") == [2]
