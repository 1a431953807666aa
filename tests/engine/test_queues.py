"""Queues: arguments, persistence, TTL, length limits, expiry, dead letters, loading, purge."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from broker.engine.broker import Broker, QueueCounts
from broker.engine.errors import BrokerError, PreconditionFailed
from broker.engine.messages import StoredCopy
from broker.engine.queues import (
    Overflow,
    QueueArguments,
    QueueSpec,
    parse_queue_arguments,
    refuse_two_spellings,
)
from tests.engine.helpers import (
    bind,
    bodies,
    body,
    exchange,
    fill,
    msg,
    queue,
    ready,
    send,
    subscribe,
)

# -- arguments -----------------------------------------------------------


def test_both_spellings_of_every_argument_parse_alike() -> None:
    plain = {
        "message_ttl": 1000,
        "max_length": 0,
        "overflow": "reject-publish",
        "dead_letter_exchange": "dlx",
        "dead_letter_routing_key": "dead",
        "expires": 1,
    }
    rabbit = {
        "x-message-ttl": 1000,
        "x-max-length": 0,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "dlx",
        "x-dead-letter-routing-key": "dead",
        "x-expires": 1,
    }
    expected = QueueArguments(1000, 0, Overflow.REJECT_PUBLISH, "dlx", "dead", 1)
    assert parse_queue_arguments(plain) == expected
    assert parse_queue_arguments(rabbit) == expected
    assert parse_queue_arguments(None) == parse_queue_arguments({}) == QueueArguments()


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"message_ttl": -1}, "message_ttl"),
        ({"x-message-ttl": "10"}, "x-message-ttl"),
        ({"max_length": True}, "max_length"),
        ({"max_length": 1.5}, "max_length"),
        ({"expires": 0}, "expires"),
        ({"overflow": "drop-tail"}, "overflow"),
        ({"overflow": None}, "overflow"),
        ({"dead_letter_exchange": 5}, "dead_letter_exchange"),
        ({"x-dead-letter-routing-key": ["k"]}, "x-dead-letter-routing-key"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_arguments_are_invalid_and_declare_nothing(arguments: dict[str, Any], field: str) -> None:
    broker = Broker()
    with pytest.raises(BrokerError) as caught:
        broker.declare_queue(QueueSpec("q", arguments=arguments), now=0.0)
    assert caught.value.code == "invalid"
    assert caught.value.fields is not None
    assert [entry.split(":")[0] for entry in caught.value.fields["arguments"]] == [field]
    assert broker.queues == {} and broker.queue_counts("q") is None


def test_a_stored_queue_with_both_spellings_still_loads() -> None:
    """Refused as input only: a queue declared so before is not left out at start-up."""
    broker = Broker()
    broker.sync_queue(QueueSpec("q", arguments={"message_ttl": 1000, "x-message-ttl": 2000}), now=0.0)
    assert broker.queues["q"].args.message_ttl == 2000


def test_every_bad_argument_is_reported() -> None:
    with pytest.raises(BrokerError) as caught:
        parse_queue_arguments({"max_length": -1, "message_ttl": 5, "nope": 1})
    assert caught.value.fields == {"arguments": ["max_length: must be an integer >= 0", "nope: unknown queue argument"]}


def test_arguments_must_be_an_object() -> None:
    with pytest.raises(BrokerError) as caught:
        parse_queue_arguments(["message_ttl"])  # type: ignore[arg-type]
    assert caught.value.fields == {"arguments": ["must be an object"]}


def test_queue_declare_is_idempotent_and_refuses_other_properties() -> None:
    broker = Broker()
    assert broker.declare_queue(QueueSpec("q", arguments={"max_length": 5}), now=0.0) is True
    assert broker.declare_queue(QueueSpec("q", arguments={"max_length": 5}), now=1.0) is False
    for other in (
        QueueSpec("q", durable=False, arguments={"max_length": 5}),
        QueueSpec("q", auto_delete=True, arguments={"max_length": 5}),
        QueueSpec("q", arguments={"max_length": 6}),
        QueueSpec("q"),
    ):
        with pytest.raises(PreconditionFailed):
            broker.declare_queue(other, now=2.0)
    assert broker.queues["q"].args.max_length == 5
    assert broker.queues["q"].last_used == 1.0


# -- persistence -----------------------------------------------------------


@pytest.mark.parametrize(
    ("persistent", "durable", "exclusive", "stored"),
    [
        (True, True, False, True),
        (False, True, False, False),
        (True, False, False, False),
        (True, True, True, False),
    ],
)
def test_only_persistent_messages_in_durable_shared_queues_are_stored(
    persistent: bool, durable: bool, exclusive: bool, stored: bool
) -> None:
    broker = Broker()
    owner = broker.open_connection() if exclusive else None
    broker.declare_queue(QueueSpec("q", durable=durable, exclusive_to=owner), now=0.0)
    first_id = broker.next_store_id
    effects = send(broker, "q", "hello", persistent=persistent)
    if stored:
        (copy,) = effects.to_persist
        assert copy == StoredCopy(first_id, "q", copy.message)
        assert body(copy.message) == "hello"
        assert broker.queues["q"].ready[0].store_id == first_id
        assert broker.next_store_id == first_id + 1
    else:
        assert effects.to_persist == ()
        assert broker.queues["q"].ready[0].store_id is None


def test_a_message_routed_to_several_queues_has_one_stored_copy_per_durable_queue() -> None:
    broker = Broker()
    exchange(broker, "x", "fanout")
    for name, durable in (("a", True), ("b", False), ("c", True)):
        queue(broker, name, durable=durable)
        bind(broker, "x", name)
    published = broker.publish(msg("x", "", "m"), now=0.0)
    assert published.routed == 3
    assert sorted(copy.queue for copy in published.effects.to_persist) == ["a", "c"]
    assert len({copy.store_id for copy in published.effects.to_persist}) == 2


# -- message TTL -------------------------------------------------------------


def dead_letter_setup(broker: Broker, **arguments: Any) -> None:
    """Queue `q` dead-letters into exchange `dlx`, which routes everything to `dead`."""
    exchange(broker, "dlx", "fanout")
    queue(broker, "dead")
    bind(broker, "dlx", "dead")
    queue(broker, "q", arguments={"dead_letter_exchange": "dlx", **arguments})


def test_tick_expires_messages_past_their_ttl_and_dead_letters_them() -> None:
    broker = Broker()
    dead_letter_setup(broker, message_ttl=1000)
    send(broker, "q", "old", now=0.0)
    send(broker, "q", "new", now=0.5)
    assert broker.tick(now=0.99).to_delete == ()
    effects = broker.tick(now=1.0)
    assert ready(broker, "q") == ["new"]
    assert ready(broker, "dead") == ["old"]
    (dead,) = broker.queues["dead"].ready
    (death,) = dead.message.headers["x-death"]
    assert death == {
        "queue": "q", "reason": "expired", "time": "1970-01-01T00:00:01.000000Z",  # `now`: no wall_offset
        "exchange": "", "routing-keys": ["q"], "count": 1,
    }
    assert dead.message.headers["x-first-death-reason"] == "expired"
    assert dead.message.exchange == "dlx" and dead.message.routing_key == "q"
    stored = [copy.store_id for copy in effects.to_persist]
    assert len(stored) == 1 and len(effects.to_delete) == 1  # the old copy goes, the dead letter is kept
    broker.tick(now=1.5)
    assert ready(broker, "q") == []


def test_expired_messages_are_dropped_lazily_on_delivery() -> None:
    broker = Broker()
    dead_letter_setup(broker, message_ttl=1000)
    send(broker, "q", "stale", now=0.0)
    send(broker, "q", "fresh", now=5.0)
    sub = subscribe(broker, "q", now=5.5)
    assert bodies(sub.effects.deliveries) == ["fresh"]
    assert ready(broker, "dead") == ["stale"]
    assert broker.queues["dead"].ready[0].message.headers["x-death"][0]["reason"] == "expired"


def test_get_skips_expired_messages() -> None:
    broker = Broker()
    queue(broker, "q", arguments={"x-message-ttl": 0})
    send(broker, "q", "gone", now=0.0)
    taken, effects = broker.get("q", count=5, ack=True, now=0.0)
    assert taken == [] and len(effects.to_delete) == 1


# -- max_length --------------------------------------------------------------


def test_drop_head_dead_letters_the_oldest() -> None:
    broker = Broker()
    dead_letter_setup(broker, max_length=2, dead_letter_routing_key="overflowed")
    for value in (1, 2, 3, 4):
        assert broker.publish(msg("", "q", value), now=0.0).routed == 1
    assert ready(broker, "q") == [3, 4]
    assert ready(broker, "dead") == [1, 2]
    first = broker.queues["dead"].ready[0].message
    assert first.routing_key == "overflowed"
    assert first.headers["x-death"][0]["reason"] == "maxlen"
    assert first.headers["x-death"][0]["routing-keys"] == ["q"]


def test_reject_publish_refuses_the_new_message() -> None:
    broker = Broker()
    exchange(broker, "x", "fanout")
    queue(broker, "limited", arguments={"max_length": 1, "overflow": "reject-publish"})
    queue(broker, "other")
    bind(broker, "x", "limited")
    bind(broker, "x", "other")
    assert broker.publish(msg("x", "", "a"), now=0.0).routed == 2
    published = broker.publish(msg("x", "", "b"), now=0.0)
    assert published.routed == 1
    assert [copy.queue for copy in published.effects.to_persist] == ["other"]
    assert ready(broker, "limited") == ["a"]


@pytest.mark.parametrize("overflow", ["reject-publish", "reject-publish-dlx"])
@pytest.mark.parametrize("limit", [{"max_length": 0}, {"max_length_bytes": 2}])
def test_reject_publish_refuses_even_what_a_consumer_has_room_for(overflow: str, limit: dict[str, int]) -> None:
    """As RabbitMQ, which checks the limit before it delivers (it was delivered, routed)."""
    broker = Broker()
    dead_letter_setup(broker, overflow=overflow, **limit)
    subscribe(broker, "q", ack="auto")
    published = broker.publish(msg("", "q", "refused"), now=0.0)
    assert (published.routed, published.refused_by, published.effects.deliveries) == (0, "q", ())
    assert ready(broker, "dead") == (["refused"] if overflow == "reject-publish-dlx" else [])


@pytest.mark.parametrize("limit", [{"max_length": 0}, {"max_length_bytes": 2}])
def test_drop_head_hands_a_consumer_with_room_what_the_queue_could_not_hold(limit: dict[str, int]) -> None:
    """As RabbitMQ: a consumer with room takes a message before the queue's length counts."""
    broker = Broker()
    dead_letter_setup(broker, **limit)
    subscribe(broker, "q", prefetch=1)
    assert bodies(send(broker, "q", "delivered").deliveries) == ["delivered"]
    assert send(broker, "q", "dropped").deliveries == ()
    assert ready(broker, "q") == [] and ready(broker, "dead") == ["dropped"]
    assert broker.queue_counts("q") == QueueCounts(0, 1, 1)


# -- expires and dead-letter cycles --------------------------------------------


def test_expires_deletes_an_unused_queue_on_tick() -> None:
    broker = Broker()
    queue(broker, "q", now=0.0, arguments={"expires": 1000})
    queue(broker, "kept", now=0.0, arguments={"expires": 1000})
    fill(broker, "q", "m")
    assert broker.tick(now=0.5).deleted_queues == ()
    broker.declare_queue(QueueSpec("kept", arguments={"expires": 1000}), now=0.5)  # a redeclare is a use
    effects = broker.tick(now=1.0)
    assert effects.deleted_queues == ("q",)
    assert len(effects.to_delete) == 1
    assert "q" not in broker.queues and "kept" in broker.queues
    assert broker.tick(now=1.5).deleted_queues == ("kept",)


def test_a_stored_queue_found_by_a_declaration_is_used_when_the_router_holds_that_row() -> None:
    broker = Broker()
    queue(broker, "q", now=0.0, arguments={"expires": 1000}, row_id=7)
    broker.redeclare_queue("q", 8, now=0.5)  # another row of that name: not this queue
    assert broker.tick(now=1.0).deleted_queues == ("q",)
    queue(broker, "q", now=1.0, arguments={"expires": 1000}, row_id=9)
    broker.redeclare_queue("q", 9, now=1.5)
    assert broker.tick(now=2.0).deleted_queues == ()
    assert broker.tick(now=2.5).deleted_queues == ("q",)


def test_a_queue_with_a_consumer_does_not_expire() -> None:
    broker = Broker()
    queue(broker, "q", arguments={"expires": 1000})
    sub = subscribe(broker, "q", now=0.0)
    assert broker.tick(now=10.0).deleted_queues == ()
    broker.cancel(sub.connection, sub.subscription, now=10.0)
    assert broker.tick(now=10.5).deleted_queues == ()
    assert broker.tick(now=11.0).deleted_queues == ("q",)


def test_queues_dead_lettering_into_each_other_by_ttl_do_not_loop_forever() -> None:
    broker = Broker()
    queue(broker, "a", arguments={"message_ttl": 1000, "dead_letter_exchange": "", "dead_letter_routing_key": "b"})
    queue(broker, "b", arguments={"message_ttl": 1000, "dead_letter_exchange": "", "dead_letter_routing_key": "a"})
    send(broker, "a", "ping", now=0.0)
    broker.tick(now=1.0)
    assert (ready(broker, "a"), ready(broker, "b")) == ([], ["ping"])
    broker.tick(now=2.0)  # it died in `a` before, no client rejecting it since: not back into `a`
    assert (ready(broker, "a"), ready(broker, "b")) == ([], [])


def test_a_queue_dead_lettering_into_itself_on_overflow_terminates() -> None:
    broker = Broker()
    queue(broker, "q", arguments={"max_length": 1, "dead_letter_exchange": ""})
    fill(broker, "q", 1, 2, 3)
    assert len(ready(broker, "q")) == 1


def test_dead_letter_to_a_deleted_exchange_drops_the_message() -> None:
    broker = Broker()
    dead_letter_setup(broker, message_ttl=0)
    broker.delete_exchange("dlx")
    send(broker, "q", "m")
    broker.tick(now=0.0)
    assert (ready(broker, "q"), ready(broker, "dead")) == ([], [])


# -- loading, counts, sync, purge --------------------------------------------------


def test_queue_counts() -> None:
    broker = Broker()
    queue(broker, "q")
    assert broker.queue_counts("q") == QueueCounts(0, 0, 0)
    assert broker.queue_counts("missing") is None
    fill(broker, "q", 1, 2, 3)
    sub = subscribe(broker, "q", prefetch=2)
    subscribe(broker, "q", connection=sub.connection, subscription="s2", prefetch=0, ack="auto")
    assert broker.queue_counts("q") == QueueCounts(messages_ready=0, messages_unacknowledged=2, consumers=2)


def test_sync_queue_keeps_messages_when_arguments_change() -> None:
    broker = Broker()
    queue(broker, "q")
    fill(broker, "q", 1, 2, 3)
    effects = broker.sync_queue(QueueSpec("q", arguments={"max_length": 2}), now=0.0)
    assert ready(broker, "q") == [2, 3]
    assert len(effects.to_delete) == 1
    assert broker.queues["q"].args.max_length == 2
    broker.sync_queue(QueueSpec("q", durable=False), now=0.0)
    assert ready(broker, "q") == [2, 3]
    assert broker.queues["q"].spec.durable is False
    broker.sync_queue(QueueSpec("new"), now=0.0)
    assert "new" in broker.queues


def test_sync_queue_with_bad_arguments_changes_nothing() -> None:
    broker = Broker()
    queue(broker, "q", arguments={"max_length": 5})
    fill(broker, "q", 1)
    with pytest.raises(BrokerError):
        broker.sync_queue(QueueSpec("q", arguments={"max_length": -5}), now=0.0)
    assert broker.queues["q"].args.max_length == 5 and ready(broker, "q") == [1]


def test_purge_counts_ready_messages_only_and_forgets_stored_copies() -> None:
    broker = Broker()
    queue(broker, "q")
    fill(broker, "q", 1, 2)
    fill(broker, "q", 3, persistent=False)
    fill(broker, "q", 4)
    subscribe(broker, "q", prefetch=1)  # holds 1 unacknowledged
    stored = [e.store_id for e in broker.queues["q"].ready]
    purged, effects = broker.purge("q")
    assert purged == 3
    assert effects.to_delete == tuple(s for s in stored if s is not None)
    assert len(effects.to_delete) == 2
    assert broker.queue_counts("q") == QueueCounts(0, 1, 1)
    assert broker.purge("q")[0] == 0


def test_delete_queue_forgets_every_copy_and_cancels_its_consumers() -> None:
    broker = Broker()
    queue(broker, "q")
    fill(broker, "q", 1, 2, 3)
    sub = subscribe(broker, "q", prefetch=1)
    effects = broker.delete_queue("q")
    assert len(effects.to_delete) == 3
    assert [(c.connection, c.subscription) for c in effects.cancelled] == [(sub.connection, "s1")]
    assert effects.deleted_queues == ("q",)
    assert broker.connections[sub.connection].consumers == {}
    assert broker.connections[sub.connection].unacked == {}


def test_a_stored_queue_loads_whatever_its_name_input_rules_are_the_services() -> None:
    # A row made in a shell skips the model's validators: it must still load.
    broker = Broker()
    broker.sync_queue(QueueSpec("made in a shell"), now=0.0)
    assert "made in a shell" in broker.queues


def test_sync_queue_delivers_to_a_consumer_its_new_arguments_give_room() -> None:
    broker = Broker()
    broker.credit = 1  # one delivery each, then held back until written
    queue(broker, "sac", arguments={"x-single-active-consumer": True})
    active = subscribe(broker, "sac", ack="auto")
    standby = subscribe(broker, "sac", ack="auto", subscription="s2")
    fill(broker, "sac", "x", "y", "z")
    assert ready(broker, "sac") == ["y", "z"]  # the active one is out of credit
    synced = broker.sync_queue(QueueSpec("sac"), now=0.0)  # no single active consumer any more
    assert [(d.connection, body(d.message)) for d in synced.deliveries] == [(standby.connection, "y")]
    assert active.connection != standby.connection


def test_an_argument_in_both_spellings_is_refused() -> None:
    with pytest.raises(BrokerError) as caught:
        refuse_two_spellings({"message_ttl": 1000, "x-message-ttl": 2000})
    assert caught.value.fields == {"arguments": ["x-message-ttl: given twice, as 'message_ttl' too"]}
    refuse_two_spellings({"message_ttl": 1000, "x-max-length": 2})


def test_a_dead_letter_goes_on_to_a_queue_it_never_died_in() -> None:
    """The loop is judged per queue reached (as RabbitMQ): a message that expired in `work`
    and is replayed there dies again, and its dead-letter queue takes it again. Judged by the
    queue it left, it was dropped: lost."""
    broker = Broker()
    queue(broker, "dlq")
    queue(broker, "work", arguments={"message_ttl": 1000, "dead_letter_exchange": "", "dead_letter_routing_key": "dlq"})
    send(broker, "work", "order-1", now=0.0)
    broker.tick(now=1.0)
    (dead,) = broker.queues["dlq"].ready
    broker.get("dlq", count=1, ack=True, now=1.0)
    broker.publish(replace(dead.message, exchange="", routing_key="work"), now=1.0)  # a retry, its headers kept
    broker.tick(now=2.5)
    assert ready(broker, "dlq") == ["order-1"]
    (death,) = broker.queues["dlq"].ready[0].message.headers["x-death"]
    assert (death["queue"], death["reason"], death["count"]) == ("work", "expired", 2)


def test_a_repeated_death_keeps_the_first_exchange_and_routing_keys() -> None:
    broker = Broker()
    exchange(broker, "orders", "topic")
    queue(broker, "dlq")
    queue(broker, "work", arguments={"message_ttl": 1000, "dead_letter_exchange": "", "dead_letter_routing_key": "dlq"})
    bind(broker, "orders", "work", "orders.*")
    send(broker, "orders.created", 1, exchange="orders", now=0.0)
    broker.tick(now=1.0)
    dead = broker.queues["dlq"].ready[0].message
    broker.get("dlq", count=1, ack=True, now=1.0)
    broker.publish(replace(dead, exchange="", routing_key="work"), now=1.0)
    broker.tick(now=2.5)
    (death,) = broker.queues["dlq"].ready[0].message.headers["x-death"]
    assert (death["exchange"], death["routing-keys"], death["count"]) == ("orders", ["orders.created"], 2)


def test_get_does_not_return_a_message_past_its_ttl_behind_the_head() -> None:
    broker = Broker()
    queue(broker, "dlq")
    queue(broker, "q", arguments={"max_priority": 9, "message_ttl": 1000, "dead_letter_exchange": "",
                                  "dead_letter_routing_key": "dlq"})
    send(broker, "q", "old-low", now=0.0)
    send(broker, "q", "fresh-high", headers={"priority": 5}, now=1.5)
    peeked, _ = broker.get("q", count=2, ack=False, now=1.5)
    assert [body(m) for m, _ in peeked] == ["fresh-high"]
    taken, _ = broker.get("q", count=2, ack=True, now=1.5)
    assert [body(m) for m, _ in taken] == ["fresh-high"]
    assert ready(broker, "dlq") == ["old-low"]
