"""Consumers and deliveries: round-robin, prefetch, ack/nack, cancel, close, get."""

from __future__ import annotations

import pytest

from broker.engine.broker import Broker, QueueCounts
from broker.engine.errors import (
    BrokerError,
    Conflict,
    Forbidden,
    LimitExceeded,
    NotFound,
    PreconditionFailed,
)
from broker.engine.jsoncodec import dumps, loads
from broker.engine.messages import Delivery
from broker.engine.queues import AckMode, QueueSpec
from tests.engine.helpers import (
    bind,
    bodies,
    exchange,
    fill,
    msg,
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


def tags(deliveries: tuple[Delivery, ...]) -> list[int]:
    return [d.delivery_tag for d in deliveries]


# -- dispatch ----------------------------------------------------------------


def test_messages_wait_until_a_consumer_comes(broker: Broker) -> None:
    fill(broker, "q", 1, 2)
    sub = subscribe(broker, "q")
    assert bodies(sub.effects.deliveries) == [1, 2]
    assert tags(sub.effects.deliveries) == [1, 2]
    assert broker.queue_counts("q") == QueueCounts(0, 2, 1)


def test_round_robin_among_consumers(broker: Broker) -> None:
    a = subscribe(broker, "q", subscription="a")
    b = subscribe(broker, "q", subscription="b")
    deliveries = [d for value in range(6) for d in send(broker, "q", value).deliveries]
    assert [(d.connection, loads(d.subscription_json)) for d in deliveries] == [
        (a.connection, "a"), (b.connection, "b")
    ] * 3


def test_prefetch_bounds_unacknowledged_deliveries(broker: Broker) -> None:
    full = subscribe(broker, "q", subscription="full", prefetch=1)
    roomy = subscribe(broker, "q", subscription="roomy", prefetch=2)
    deliveries = [d for value in range(5) for d in send(broker, "q", value).deliveries]
    assert [(loads(d.subscription_json), d.delivery_tag) for d in deliveries] == [
        ("full", 1), ("roomy", 1), ("roomy", 2)
    ]
    assert ready(broker, "q") == [3, 4]
    effects = broker.ack(full.connection, 1, multiple=False, now=0.0)
    assert [(loads(d.subscription_json), d.delivery_tag, d.message.body_json) for d in effects.deliveries] == [
        ("full", 2, "3")
    ]
    assert broker.queue_counts("q") == QueueCounts(1, 3, 2)
    assert roomy.effects.deliveries == ()


def test_prefetch_zero_is_unbounded(broker: Broker) -> None:
    fill(broker, "q", *range(300))
    sub = subscribe(broker, "q", prefetch=0)
    assert len(sub.effects.deliveries) == 300


def test_auto_ack_deliveries_forget_the_stored_copies(broker: Broker) -> None:
    fill(broker, "q", 1)
    fill(broker, "q", 2, persistent=False)
    stored = broker.queues["q"].ready[0].store_id
    sub = subscribe(broker, "q", ack="auto", prefetch=1)
    assert bodies(sub.effects.deliveries) == [1, 2]  # auto ack ignores prefetch
    assert sub.effects.to_delete == (stored,)
    assert broker.queue_counts("q") == QueueCounts(0, 0, 1)
    effects = send(broker, "q", 3)
    assert effects.to_delete == tuple(copy.store_id for copy in effects.to_persist)
    assert broker.connections[sub.connection].unacked == {}


def test_delivery_tags_are_per_connection(broker: Broker) -> None:
    queue(broker, "other")
    sub = subscribe(broker, "q")
    subscribe(broker, "other", connection=sub.connection, subscription="s2")
    other = subscribe(broker, "q", subscription="s3")
    assert tags(send(broker, "q", 1).deliveries) == [1]
    assert tags(send(broker, "other", 2).deliveries) == [2]
    assert tags(send(broker, "q", 3).deliveries) == [1]  # to `other` connection
    assert other.connection != sub.connection


def test_duplicate_subscription_id_is_a_conflict(broker: Broker) -> None:
    sub = subscribe(broker, "q")
    with pytest.raises(Conflict):
        subscribe(broker, "q", connection=sub.connection)
    subscribe(broker, "q", subscription="s1")  # the same id on another connection is fine
    assert broker.queue_counts("q") == QueueCounts(0, 0, 2)


@pytest.mark.parametrize("prefetch", [-1, 65536, True])
def test_bad_prefetch_is_invalid(broker: Broker, prefetch: int) -> None:
    with pytest.raises(BrokerError) as caught:
        subscribe(broker, "q", prefetch=prefetch)
    assert caught.value.code == "invalid" and caught.value.fields is not None and "prefetch" in caught.value.fields


def test_consume_missing_queue_or_connection_is_not_found(broker: Broker) -> None:
    with pytest.raises(NotFound):
        subscribe(broker, "nope")
    with pytest.raises(NotFound):
        subscribe(broker, "q", connection=999)


# -- ack and nack ---------------------------------------------------------------


def test_ack_single_and_multiple(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3, 4)
    stored = [e.store_id for e in broker.queues["q"].ready]
    sub = subscribe(broker, "q")
    assert broker.ack(sub.connection, 2, multiple=False, now=0.0).to_delete == (stored[1],)
    assert broker.ack(sub.connection, 3, multiple=True, now=0.0).to_delete == (stored[0], stored[2])
    assert list(broker.connections[sub.connection].unacked) == [4]
    assert broker.queue_counts("q") == QueueCounts(0, 1, 1)


@pytest.mark.parametrize(("tag", "multiple"), [(9, False), (0, True), (2, False)])
def test_unknown_delivery_tag_is_a_precondition_failure_and_changes_nothing(
    broker: Broker, tag: int, multiple: bool
) -> None:
    fill(broker, "q", 1, 2)
    sub = subscribe(broker, "q")
    broker.ack(sub.connection, 2, multiple=False, now=0.0)
    with pytest.raises(PreconditionFailed):
        broker.ack(sub.connection, tag, multiple=multiple, now=0.0)
    with pytest.raises(PreconditionFailed):
        broker.nack(sub.connection, tag, multiple=multiple, requeue=True, now=0.0)
    assert list(broker.connections[sub.connection].unacked) == [1]
    assert broker.queue_counts("q") == QueueCounts(0, 1, 1)


def test_nack_with_requeue_puts_them_back_at_the_head_in_order(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3, 4, 5)
    sub = subscribe(broker, "q", prefetch=3)
    effects = broker.nack(sub.connection, 2, multiple=True, requeue=True, now=0.0)
    # 1 and 2 come back first, redelivered, to the same consumer that now has room again.
    assert [(d.message.body_json, d.redelivered, d.delivery_tag) for d in effects.deliveries] == [
        ("1", True, 4), ("2", True, 5)
    ]
    assert ready_flags(broker, "q") == [(4, False), (5, False)]


def test_returned_messages_wait_at_the_head_while_no_consumer_has_room(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3)
    first = subscribe(broker, "q", subscription="a", prefetch=1)
    second = subscribe(broker, "q", subscription="b", prefetch=1)
    assert (bodies(first.effects.deliveries), bodies(second.effects.deliveries)) == ([1], [2])
    _, effects = broker.cancel(first.connection, "a", now=0.0)
    assert effects.deliveries == ()
    assert ready_flags(broker, "q") == [(1, True), (3, False)]
    effects = broker.ack(second.connection, 1, multiple=False, now=0.0)
    assert [(d.message.body_json, d.redelivered) for d in effects.deliveries] == [("1", True)]


def test_nack_without_requeue_drops_the_message(broker: Broker) -> None:
    fill(broker, "q", 1, 2)
    stored = broker.queues["q"].ready[0].store_id
    sub = subscribe(broker, "q", prefetch=1)
    effects = broker.nack(sub.connection, 1, multiple=False, requeue=False, now=0.0)
    assert effects.to_delete == (stored,)
    assert bodies(effects.deliveries) == [2]
    assert broker.queue_counts("q") == QueueCounts(0, 1, 1)


def test_nack_without_requeue_dead_letters_with_x_death() -> None:
    broker = Broker()
    exchange(broker, "dlx", "direct")
    queue(broker, "dead")
    bind(broker, "dlx", "dead", "rejected-orders")
    queue(broker, "q", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "rejected-orders"})
    send(broker, "q", "order", headers={"x-trace": "t1"})
    sub = subscribe(broker, "q")
    broker.wall_offset = 1_795_867_200.0 - 10.0  # the engine's clock at 10.0 is this noon, UTC
    effects = broker.nack(sub.connection, 1, multiple=False, requeue=False, now=15.25)
    (copy,) = effects.to_persist
    assert copy.queue == "dead"
    (envelope,) = broker.queues["dead"].ready
    headers = envelope.message.headers
    assert headers["x-trace"] == "t1"
    assert headers["x-death"] == [{
        "queue": "q", "reason": "rejected", "time": "2026-11-28T12:00:05.250000Z",
        "exchange": "", "routing-keys": ["q"], "count": 1,
    }]
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"]) == ("q", "rejected")
    assert envelope.message.routing_key == "rejected-orders"
    assert envelope.redelivered is False


def test_rejecting_the_same_message_twice_counts_the_deaths() -> None:
    broker = Broker()
    queue(broker, "q", arguments={"dead_letter_exchange": ""})  # back to itself by its routing key
    send(broker, "q", "boomerang")
    sub = subscribe(broker, "q")
    broker.nack(sub.connection, 1, multiple=False, requeue=False, now=1.0)
    broker.nack(sub.connection, 2, multiple=False, requeue=False, now=2.0)
    (pending,) = broker.connections[sub.connection].unacked.values()
    assert pending.envelope.message.headers["x-death"] == [  # the time of the first, as RabbitMQ 3.10
        {"queue": "q", "reason": "rejected", "time": "1970-01-01T00:00:01.000000Z", "exchange": "",
         "routing-keys": ["q"], "count": 2}
    ]


# -- cancel and close ----------------------------------------------------------------


def test_cancel_requeues_unacked_in_order_and_hands_them_to_the_others(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3, 4)
    leaving = subscribe(broker, "q", subscription="leaving", prefetch=3)
    staying = subscribe(broker, "q", subscription="staying", prefetch=2)
    assert bodies(staying.effects.deliveries) == [4]
    name, effects = broker.cancel(leaving.connection, "leaving", now=0.0)
    assert name == "q"
    assert [(d.connection, d.message.body_json, d.redelivered) for d in effects.deliveries] == [
        (staying.connection, "1", True)
    ]
    assert ready_flags(broker, "q") == [(2, True), (3, True)]
    assert broker.queue_counts("q") == QueueCounts(2, 2, 1)
    with pytest.raises(NotFound):
        broker.cancel(leaving.connection, "leaving", now=0.0)


def test_close_connection_requeues_in_order_and_keeps_shared_queues(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3)
    sub = subscribe(broker, "q")
    broker.ack(sub.connection, 2, multiple=False, now=0.0)
    effects = broker.close_connection(sub.connection, now=0.0)
    assert effects.deliveries == () and effects.deleted_queues == ()
    assert ready_flags(broker, "q") == [(1, True), (3, True)]
    assert broker.queue_counts("q") == QueueCounts(2, 0, 0)
    assert sub.connection not in broker.connections
    assert broker.close_connection(sub.connection, now=0.0) == broker.close_connection(12345, now=0.0)


def test_close_connection_hands_messages_to_other_connections_only(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3, 4)
    closing = subscribe(broker, "q", subscription="client", prefetch=0)
    subscribe(broker, "q", connection=closing.connection, subscription="auto", ack="auto")
    assert bodies(closing.effects.deliveries) == [1, 2, 3, 4]
    other = subscribe(broker, "q", subscription="other", prefetch=3)
    effects = broker.close_connection(closing.connection, now=0.0)
    assert {d.connection for d in effects.deliveries} == {other.connection}
    assert [(d.message.body_json, d.redelivered) for d in effects.deliveries] == [
        ("1", True), ("2", True), ("3", True)
    ]
    assert ready_flags(broker, "q") == [(4, True)]
    assert effects.to_delete == ()  # nothing was auto-acknowledged on the way out


def test_close_connection_requeues_two_subscriptions_in_delivery_order(broker: Broker) -> None:
    conn = broker.open_connection()
    subscribe(broker, "q", connection=conn, subscription="a")
    subscribe(broker, "q", connection=conn, subscription="b")
    fill(broker, "q", 1, 2, 3, 4)
    broker.close_connection(conn, now=0.0)
    assert ready_flags(broker, "q") == [(1, True), (2, True), (3, True), (4, True)]


def test_auto_delete_queue_goes_when_its_last_consumer_leaves() -> None:
    broker = Broker()
    queue(broker, "temp", auto_delete=True)
    fill(broker, "temp", 1)
    first = subscribe(broker, "temp", subscription="a")
    second = subscribe(broker, "temp", subscription="b")
    _, effects = broker.cancel(second.connection, "b", now=0.0)
    assert effects.deleted_queues == () and "temp" in broker.queues
    effects = broker.close_connection(first.connection, now=0.0)
    assert effects.deleted_queues == ("temp",)
    assert len(effects.to_delete) == 1
    assert "temp" not in broker.queues


def test_an_auto_delete_queue_that_never_had_a_consumer_stays() -> None:
    broker = Broker()
    queue(broker, "temp", auto_delete=True)
    assert broker.tick(now=100.0).deleted_queues == ()
    assert "temp" in broker.queues


def test_close_connection_deletes_its_exclusive_queues_without_deleted_queues_effect() -> None:
    broker = Broker()
    conn = broker.open_connection()
    broker.declare_queue(QueueSpec("private", durable=False, exclusive_to=conn), now=0.0)
    other = broker.open_connection()
    with pytest.raises(Forbidden):
        subscribe(broker, "private", connection=other)
    fill(broker, "private", 1)
    effects = broker.close_connection(conn, now=0.0)
    assert effects.deleted_queues == ()
    assert "private" not in broker.queues


def test_exclusive_queue_needs_a_live_connection() -> None:
    broker = Broker()
    with pytest.raises(NotFound):
        broker.declare_queue(QueueSpec("private", exclusive_to=42), now=0.0)
    assert broker.queues == {}


# -- exchange subscriptions --------------------------------------------------------


def consume_exchange(broker: Broker, connection: int, subscription: str, queue_name: str, binding_key: str) -> None:
    broker.consume_exchange(
        connection,
        subscription=subscription,
        subscription_json=dumps(subscription),
        exchange="news",
        binding_key=binding_key,
        arguments=None,
        queue=queue_name,
        ack_mode=AckMode.AUTO,
        prefetch=100,
        now=0.0,
    )


def test_consume_exchange_creates_a_private_bound_queue() -> None:
    broker = Broker()
    exchange(broker, "news", "topic")
    conn = broker.open_connection()
    consume_exchange(broker, conn, "s1", "amq.gen-1", "sports.#")
    spec = broker.queues["amq.gen-1"].spec
    assert (spec.durable, spec.auto_delete, spec.exclusive_to) == (False, True, conn)
    assert [(b.exchange, b.binding_key) for b in broker.bindings.values()] == [("news", "sports.#")]
    published = broker.publish(msg("news", "sports.tennis", "ace"), now=0.0)
    assert published.routed == 1 and published.effects.to_persist == ()
    assert bodies(published.effects.deliveries) == ["ace"]
    other = broker.open_connection()
    with pytest.raises(Forbidden):
        subscribe(broker, "amq.gen-1", connection=other)
    with pytest.raises(Conflict):
        consume_exchange(broker, other, "s1", "amq.gen-1", "#")
    _, effects = broker.cancel(conn, "s1", now=0.0)
    assert effects.deleted_queues == ()
    assert broker.queues == {} and broker.bindings == {}


def test_consuming_the_default_exchange_makes_a_reply_queue_reached_by_its_name() -> None:
    broker = Broker()
    conn = broker.open_connection()
    broker.consume_exchange(
        conn, subscription="r", subscription_json='"r"', exchange="", binding_key="ignored", arguments=None,
        queue="amq.gen-r", ack_mode=AckMode.AUTO, prefetch=0, now=0.0,
    )
    assert broker.bindings == {}
    assert broker.queues["amq.gen-r"].spec.exclusive_to == conn
    published = broker.publish(msg("", "amq.gen-r", "reply"), now=0.0)
    assert published.routed == 1 and bodies(published.effects.deliveries) == ["reply"]
    broker.close_connection(conn, now=0.0)
    assert broker.queues == {}


def test_consume_exchange_checks_before_creating_anything() -> None:
    broker = Broker()
    exchange(broker, "news", "headers")
    conn = broker.open_connection()
    with pytest.raises(NotFound):
        broker.consume_exchange(
            conn, subscription="s", subscription_json='"s"', exchange="missing", binding_key="", arguments=None,
            queue="amq.gen-1", ack_mode=AckMode.AUTO, prefetch=1, now=0.0,
        )
    for arguments in ({"x-match": "most"}, ["not", "an", "object"]):
        with pytest.raises(BrokerError) as caught:
            broker.consume_exchange(
                conn, subscription="s", subscription_json='"s"', exchange="news", binding_key="",
                arguments=arguments,  # type: ignore[arg-type]
                queue="amq.gen-1", ack_mode=AckMode.AUTO, prefetch=1, now=0.0,
            )
        assert caught.value.code == "invalid"
    assert broker.queues == {} and broker.bindings == {}
    assert broker.connections[conn].exclusive_queues == set()


def test_a_connection_holds_at_most_max_private_queues() -> None:
    """Private queues count against MAX_QUEUES: without a share per connection, one
    client could take them all and refuse everyone else's declarations."""
    broker = Broker()
    broker.max_private_queues = 2
    exchange(broker, "news", "topic")
    conn, other = broker.open_connection(), broker.open_connection()
    consume_exchange(broker, conn, "a", "amq.gen-a", "#")
    consume_exchange(broker, conn, "b", "amq.gen-b", "#")
    with pytest.raises(LimitExceeded) as caught:
        consume_exchange(broker, conn, "c", "amq.gen-c", "#")
    assert "MAX_PRIVATE_QUEUES_PER_CONNECTION" in caught.value.message
    assert set(broker.queues) == {"amq.gen-a", "amq.gen-b"} and len(broker.bindings) == 2  # nothing changed
    consume_exchange(broker, other, "c", "amq.gen-c", "#")  # another connection's share is its own
    broker.cancel(conn, "a", now=0.0)  # a private queue given up makes room
    consume_exchange(broker, conn, "d", "amq.gen-d", "#")
    assert broker.connections[conn].exclusive_queues == {"amq.gen-b", "amq.gen-d"}


# -- get -----------------------------------------------------------------------


def test_get_with_ack_removes_the_messages(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3)
    stored = [e.store_id for e in broker.queues["q"].ready]
    taken, effects = broker.get("q", count=2, ack=True, now=0.0)
    assert [(m.body_json, redelivered) for m, redelivered in taken] == [("1", False), ("2", False)]
    assert effects.to_delete == tuple(stored[:2])
    assert ready(broker, "q") == [3]


def test_get_with_ack_and_a_holder_holds_the_messages_until_it_acks_them(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3)
    stored = [e.store_id for e in broker.queues["q"].ready]
    holder = broker.open_connection()
    taken, effects = broker.get("q", count=2, ack=True, now=0.0, holder=holder)
    assert [m.body_json for m, _ in taken] == ["1", "2"]
    assert effects.to_delete == ()  # not yet: the answer is on its way
    assert broker.queue_counts("q") == QueueCounts(1, 2, 0)

    effects = broker.ack(holder, 2, multiple=True, now=0.0)

    assert effects.to_delete == tuple(stored[:2])
    assert broker.queue_counts("q") == QueueCounts(1, 0, 0)


def test_what_a_holder_did_not_ack_goes_back_redelivered_when_it_closes(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3)
    holder = broker.open_connection()
    broker.get("q", count=2, ack=True, now=0.0, holder=holder)

    effects = broker.close_connection(holder, now=0.0)

    assert effects.to_delete == ()
    assert ready_flags(broker, "q") == [(1, True), (2, True), (3, False)]
    assert broker.queue_counts("q") == QueueCounts(3, 0, 0)


def test_what_a_holder_held_of_a_deleted_queue_goes_with_the_queue() -> None:
    """Neither given back into the deleted queue when the holder closes, nor dead-lettered
    from it (a delivery limit of 0 would at the first return), nor counted on it."""
    broker = Broker()
    exchange(broker, "dlx", "fanout")
    queue(broker, "dead")
    bind(broker, "dlx", "dead")
    queue(broker, "q", arguments={"x-dead-letter-exchange": "dlx", "x-delivery-limit": 0})
    fill(broker, "q", 1, 2, 3)
    stored = [e.store_id for e in broker.queues["q"].ready]
    holder = broker.open_connection()
    broker.get("q", count=2, ack=True, now=0.0, holder=holder)

    effects = broker.delete_queue("q")

    assert sorted(effects.to_delete) == sorted(stored)
    assert broker.connections[holder].unacked == {}
    assert broker.close_connection(holder, now=0.0).to_delete == ()  # nothing given back
    assert ready(broker, "dead") == []
    queue(broker, "q")
    assert broker.queue_counts("q") == QueueCounts(0, 0, 0)


def test_get_without_ack_leaves_them_at_the_head_marked_redelivered(broker: Broker) -> None:
    fill(broker, "q", 1, 2, 3)
    taken, effects = broker.get("q", count=2, ack=False, now=0.0)
    assert [(m.body_json, redelivered) for m, redelivered in taken] == [("1", False), ("2", False)]
    assert effects.to_delete == ()
    taken, _ = broker.get("q", count=5, ack=True, now=0.0)
    assert [(m.body_json, redelivered) for m, redelivered in taken] == [("1", True), ("2", True), ("3", False)]


@pytest.mark.parametrize("count", [0, -1, True, 1.5])
def test_get_count_must_be_positive(broker: Broker, count: int) -> None:
    fill(broker, "q", 1)
    with pytest.raises(BrokerError) as caught:
        broker.get("q", count=count, ack=True, now=0.0)
    assert caught.value.fields == {"count": ["must be a positive integer"]}
    assert ready_flags(broker, "q") == [(1, False)]


def test_an_ack_deletes_the_stored_copy_unless_the_consumers_transaction_did() -> None:
    broker = Broker()
    queue(broker, "q", durable=True)
    fill(broker, "q", 1, 2)
    client = subscribe(broker, "q", subscription="client", prefetch=1)
    handler = subscribe(broker, "q", subscription="handler", ack="transaction", prefetch=1)
    (to_client,), (to_handler,) = client.effects.deliveries, handler.effects.deliveries
    assert to_handler.store_id is not None
    client_ack = broker.ack(client.connection, to_client.delivery_tag, multiple=False, now=0.0)
    handler_ack = broker.ack(handler.connection, to_handler.delivery_tag, multiple=False, now=0.0)
    # The client's copy is deleted by the broker; the handler's row was deleted by the
    # handler's own transaction before its ack (docs/protocol.md, `"transaction"`).
    assert len(client_ack.to_delete) == 1 and handler_ack.to_delete == ()
    assert broker.queue_counts("q") == QueueCounts(0, 0, 2)


def test_copies_the_database_refused_name_no_row_once_unstored(broker: Broker) -> None:
    queue(broker, "ranked", arguments={"x-max-priority": 3})
    refused = [send(broker, name, name).to_persist[0].store_id for name in ("q", "ranked", "q")]
    kept = send(broker, "q", "kept").to_persist[0].store_id
    out = subscribe(broker, "q", prefetch=1)  # the first copy is out with a consumer
    broker.unstore(refused)
    waiting = subscribe(broker, "ranked", ack="transaction")
    assert [d.store_id for d in waiting.effects.deliveries] == [None]  # a transaction delivery names no row
    assert broker.cancel(out.connection, "s1", now=0.0)[1].to_delete == ()  # given back, unacknowledged
    assert [e.store_id for e in broker.queues["q"].ready] == [None, None, kept]
    handler = subscribe(broker, "q", ack="transaction")
    assert [d.store_id for d in handler.effects.deliveries] == [None, None, kept]
