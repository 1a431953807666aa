"""Durable queues keep a window of their messages in memory; the rest, their backlog,
is read back from the store as consumers take messages (broker/engine/backlog.py).
Whatever the window, a queue behaves as if it held every message in memory."""

from __future__ import annotations

import random
from typing import Any

import pytest

from broker.engine.broker import Broker
from broker.engine.messages import Effects
from broker.engine.queues import AckMode
from tests.engine.helpers import Backlogs, bind, bodies, body, exchange, msg, queue, ready, send, subscribe


def windowed(window: int) -> tuple[Broker, Backlogs]:
    broker = Broker()
    broker.window = window
    return broker, Backlogs(broker)


def dead_lettering(broker: Broker, **arguments: Any) -> None:
    """Queue `q` dead-letters through `dlx` into `dead`, a queue held whole in memory."""
    exchange(broker, "dlx", "fanout")
    queue(broker, "dead", durable=False)
    bind(broker, "dlx", "dead")
    queue(broker, "q", arguments={"dead_letter_exchange": "dlx", **arguments})


def test_a_queue_past_its_window_keeps_the_rest_in_the_store_only() -> None:
    broker, store = windowed(4)
    queue(broker, "q")
    for n in range(10):
        store.take(send(broker, "q", n))
    assert ready(broker, "q") == [0, 1, 2, 3]
    assert broker.queue_counts("q").messages_ready == 10  # type: ignore[union-attr]
    assert len(store.rows) == 10  # every copy is stored, as before
    assert store.pending == []  # a full window asks for nothing


def test_a_consumer_gets_the_backlog_in_order_as_the_window_is_read_again() -> None:
    broker, store = windowed(4)
    queue(broker, "q")
    for n in range(10):
        store.take(send(broker, "q", n))
    sub = subscribe(broker, "q", ack="auto")
    got = [body(d.message) for d in store.take(sub.effects).deliveries]
    got += [body(d.message) for d in store.serve()]
    assert got == list(range(10))
    assert store.reads >= 2
    assert broker.queues["q"].backlog is None
    assert store.rows == {}


def test_messages_kept_in_memory_wait_behind_the_stored_ones_in_order() -> None:
    broker, store = windowed(2)
    queue(broker, "q")
    for n in range(8):
        store.take(send(broker, "q", n, persistent=n % 3 != 0))  # 0, 3 and 6 live in memory only
    assert broker.queue_counts("q").messages_ready == 8  # type: ignore[union-attr]
    sub = subscribe(broker, "q", ack="auto")
    got = [body(d.message) for d in store.take(sub.effects).deliveries] + [body(d.message) for d in store.serve()]
    assert got == list(range(8))


def test_a_purge_takes_the_backlog_too_and_a_late_read_changes_nothing() -> None:
    broker, store = windowed(2)
    queue(broker, "q")
    for n in range(6):
        store.take(send(broker, "q", n))
    sub = subscribe(broker, "q", prefetch=2)
    store.take(sub.effects)
    store.take(broker.ack(sub.connection, 2, multiple=True, now=0.0))
    assert len(store.pending) == 1  # a read of the backlog under way...
    purged, effects = broker.purge("q")
    store.take(effects)
    assert purged == 4
    assert store.serve() == []  # ...answered after the purge: ignored
    assert broker.queue_counts("q").messages_ready == 0  # type: ignore[union-attr]
    assert store.rows == {}
    after = store.take(send(broker, "q", "after")).deliveries  # the consumer has room again
    assert [body(d.message) for d in after] == ["after"]


def test_a_deleted_queue_deletes_its_backlog() -> None:
    broker, store = windowed(2)
    queue(broker, "q")
    for n in range(5):
        store.take(send(broker, "q", n))
    effects = store.take(broker.delete_queue("q"))
    assert effects.backlog_deleted and store.rows == {}


def test_a_requeued_message_goes_back_ahead_of_the_backlog() -> None:
    broker, store = windowed(2)
    queue(broker, "q")
    for n in range(6):
        store.take(send(broker, "q", n))
    sub = subscribe(broker, "q", prefetch=1)
    (first,) = store.take(sub.effects).deliveries
    (again,) = store.take(broker.nack(sub.connection, first.delivery_tag, multiple=False, requeue=True, now=0.0)).deliveries
    got = [(body(again.message), again.redelivered)]
    tag = again.delivery_tag
    for _ in range(5):
        effects = store.take(broker.ack(sub.connection, tag, multiple=False, now=0.0))
        (delivery,) = list(effects.deliveries) + store.serve()
        got.append((body(delivery.message), delivery.redelivered))
        tag = delivery.delivery_tag
    assert got == [(0, True), (1, False), (2, False), (3, False), (4, False), (5, False)]


def test_max_length_drops_the_head_even_when_it_is_still_in_the_store() -> None:
    broker, store = windowed(2)
    dead_lettering(broker, max_length=5)
    for n in range(5):
        store.take(send(broker, "q", n))
    sub = subscribe(broker, "q", prefetch=1)  # takes 0: the window is [1], the backlog 2, 3, 4
    store.take(sub.effects)
    store.take(broker.get("q", count=1, ack=True, now=0.0)[1])  # takes 1: the window is empty
    for n in range(5, 10):
        store.take(send(broker, "q", n))  # 3 over the limit: 2, 3, 4 must go
    assert broker.queue_counts("q").messages_ready == 5  # type: ignore[union-attr]
    store.serve()
    assert ready(broker, "q")[:1] == [5]
    assert sorted(body(e.message) for e in broker.queues["dead"].ready) == [2, 3, 4]


def test_a_queue_with_a_message_ttl_stays_whole_in_memory() -> None:
    """Its copies' expiry counts from their enqueueing, which their rows do not keep."""
    broker, store = windowed(2)
    dead_lettering(broker, message_ttl=1000)
    for n in range(5):
        store.take(send(broker, "q", n, now=0.0))
    assert ready(broker, "q") == [0, 1, 2, 3, 4] and broker.queues["q"].backlog is None


def test_restored_messages_past_their_ttl_are_dead_lettered_as_they_are_read() -> None:
    from tests.engine.helpers import restore

    broker = Broker()
    broker.window = 2
    dead_lettering(broker, message_ttl=1000)
    published = 1_795_867_200.0  # the messages' published_at, as seconds since the epoch
    rows = {n + 1: ("q", msg("", "q", n)) for n in range(5)}
    store = restore(broker, rows, now=5.0, wall_now=published + 5.0)
    store.take(broker.tick(now=5.0))
    store.serve(now=5.0, wall_now=published + 5.0)
    assert broker.queue_counts("q").messages_ready == 0  # type: ignore[union-attr]
    assert sorted(body(e.message) for e in broker.queues["dead"].ready) == [0, 1, 2, 3, 4]


def test_a_short_read_keeps_the_copies_put_behind_while_it_ran() -> None:
    broker, store = windowed(2)
    queue(broker, "q")
    for n in range(4):
        store.take(send(broker, "q", n))
    sub = subscribe(broker, "q", prefetch=1)
    store.take(sub.effects)
    store.take(broker.ack(sub.connection, 1, multiple=False, now=0.0))  # the window runs low: a read is asked
    (request,) = store.pending
    store.pending.clear()
    for n in range(4, 7):
        store.take(send(broker, "q", n))  # put behind while the read runs; their ids are past its bound
    found = sorted((i, m) for i, (name, m) in store.rows.items() if request.after < i < request.below)
    store.take(broker.load_window("q", request.epoch, found[: request.limit], now=0.0))
    assert broker.queue_counts("q").messages_ready == 5  # type: ignore[union-attr]
    got: list[int] = []
    for _ in range(6):
        store.serve()
        held = broker.connections[sub.connection].unacked
        tag = max(held)
        got.append(body(held[tag].envelope.message))
        store.take(broker.ack(sub.connection, tag, multiple=False, now=0.0))
    store.serve()
    assert got == [1, 2, 3, 4, 5, 6]  # 0 was acknowledged first; none lost, none twice
    assert broker.queue_counts("q").messages_ready == 0  # type: ignore[union-attr]


def test_a_short_read_means_the_rest_is_gone() -> None:
    broker, store = windowed(2)
    queue(broker, "q")
    for n in range(6):
        store.take(send(broker, "q", n))
    del store.rows[max(store.rows)]  # a copy the database refused
    sub = subscribe(broker, "q", ack="auto")
    got = [body(d.message) for d in store.take(sub.effects).deliveries] + [body(d.message) for d in store.serve()]
    assert got == [0, 1, 2, 3, 4]
    assert broker.queues["q"].backlog is None


def test_reject_publish_counts_the_backlog() -> None:
    broker, store = windowed(2)
    queue(broker, "q", arguments={"max_length": 4, "overflow": "reject-publish"})
    routed = [broker.publish(msg("", "q", n), now=0.0).routed for n in range(6)]
    assert routed == [1, 1, 1, 1, 0, 0]


# -- the same queue with a window and without ------------------------------------


def _run(broker: Broker, store: Backlogs | None, seed: int) -> list[Any]:
    """Random operations on queue `q`; what a client could see of them."""
    rng = random.Random(seed)
    seen: list[Any] = []
    connection: int | None = None

    def apply(effects: Effects) -> None:
        deliveries = list(effects.deliveries)
        if store is not None:
            store.take(effects)
            deliveries += store.serve(now=float(step))
        seen.extend((body(d.message), d.redelivered) for d in deliveries if d.subscription_json == '"s"')

    dead_lettering(broker, max_length=40)
    for step in range(400):
        roll = rng.random()
        if roll < 0.5:
            apply(send(broker, "q", step, now=float(step), persistent=rng.random() < 0.8))
        elif roll < 0.6 and connection is None:
            connection = broker.open_connection()
            apply(broker.consume(connection, subscription="s", subscription_json='"s"', queue="q",
                                 ack_mode=AckMode.CLIENT, prefetch=rng.randint(1, 5), now=float(step)))
        elif roll < 0.75 and connection is not None and broker.connections[connection].unacked:
            tags = list(broker.connections[connection].unacked)
            tag = rng.choice(tags)
            if rng.random() < 0.7:
                apply(broker.ack(connection, tag, multiple=rng.random() < 0.3, now=float(step)))
            else:
                apply(broker.nack(connection, tag, multiple=False, requeue=rng.random() < 0.5, now=float(step)))
        elif roll < 0.8 and connection is not None:
            apply(broker.close_connection(connection, now=float(step)))
            connection = None
        elif roll < 0.9:
            taken, effects = broker.get("q", count=1, ack=rng.random() < 0.5, now=float(step))
            seen.append(("get", [(body(m), r) for m, r in taken]))
            apply(effects)
        elif roll < 0.92:
            purged, effects = broker.purge("q")
            seen.append(("purged", purged))
            apply(effects)
        counts = broker.queue_counts("q")
        assert counts is not None
        seen.append((counts.messages_ready, counts.messages_unacknowledged))
    seen.append(("dead", sorted(body(e.message) for e in broker.queues["dead"].ready)))
    return seen


@pytest.mark.parametrize("window", [1, 3, 8])
@pytest.mark.parametrize("seed", range(10))
def test_a_windowed_queue_behaves_as_one_held_in_memory(seed: int, window: int) -> None:
    whole = _run(Broker(), None, seed)
    broker, store = windowed(window)
    assert _run(broker, store, seed) == whole


def test_restored_messages_past_their_own_expiration_are_dead_lettered_as_they_are_read() -> None:
    from tests.engine.helpers import restore

    broker = Broker()
    broker.window = 2
    dead_lettering(broker)
    published = 1_795_867_200.0  # the messages' published_at (helpers.PUBLISHED_AT), as seconds since the epoch
    rows = {n + 1: ("q", msg("", "q", n, headers={"expiration": "1000" if n % 2 else "60000"})) for n in range(5)}
    store = restore(broker, rows, now=5.0, wall_now=published + 5.0)
    store.serve(now=5.0, wall_now=published + 5.0)
    sub = subscribe(broker, "q", prefetch=0, now=5.0)
    store.take(sub.effects)
    store.serve(now=5.0, wall_now=published + 5.0)
    assert sorted(body(e.message) for e in broker.queues["dead"].ready) == [1, 3]


def test_a_full_reject_publish_queue_whose_head_is_in_the_database_refuses_a_publish() -> None:
    """A consumer with room takes a message a full queue would refuse only when it would
    get it now; with the head still to be read it would wait behind, and the oldest would
    be dropped to make room."""
    broker = Broker()
    broker.window = 2
    store = Backlogs(broker)
    queue(broker, "q", arguments={"x-max-length": 3, "x-overflow": "reject-publish"})
    for n in range(3):
        store.take(send(broker, "q", n))
    store.take(subscribe(broker, "q", prefetch=4).effects)  # gets 0 and 1; the read of row 2 is under way
    outcomes = [broker.publish(msg("", "q", n), now=0.0) for n in (3, 4, 5)]
    for outcome in outcomes:
        store.take(outcome.effects)
    assert [o.routed for o in outcomes] == [1, 1, 0]
    store.serve()
    assert ready(broker, "q") == [4] and broker.queues["q"].dropped == 0


def test_an_outbox_copy_committed_after_later_copies_does_not_bring_them_back() -> None:
    """The outbox's copies get their store ids when planned and are enqueued once committed:
    a direct publish in between takes a higher id. Past the window, the outbox copy started
    a backlog below it, whose read brought the direct copy back: delivered twice."""
    broker, store = windowed(2)
    queue(broker, "q")
    store.take(send(broker, "q", "first"))
    planned = broker.plan(msg("", "q", "outboxed"))
    for copy in planned.copies:  # committed with its outbox row's removal
        store.rows[copy.store_id] = (copy.queue, copy.message)
    store.take(send(broker, "q", "direct"))  # the window is full now
    store.take(broker.publish_planned(planned, now=0.0).effects)
    store.take(send(broker, "q", "last"))
    consumer = subscribe(broker, "q", prefetch=0)
    store.take(consumer.effects)
    delivered = bodies(list(consumer.effects.deliveries) + store.serve())
    assert sorted(delivered) == sorted(["first", "direct", "outboxed", "last"])
    assert delivered[:2] == ["first", "direct"] and delivered[-1] == "last"
    assert broker.queues["q"].depth == 0


def test_an_outbox_copy_planned_before_a_purge_is_purged_with_the_backlog() -> None:
    """The purge's delete of the backlog's rows takes the row its drain commits: enqueued
    after it, the copy was in memory only, lost at the next restart."""
    broker, store = windowed(2)
    queue(broker, "q")
    for n in range(4):
        store.take(send(broker, "q", n))  # 2 in the window, 2 in the backlog
    planned = broker.plan(msg("", "q", "outboxed"))
    store.take(broker.purge("q")[1])
    for copy in planned.copies:  # its drain commits after the purge
        store.rows[copy.store_id] = (copy.queue, copy.message)
    published = broker.publish_planned(planned, now=0.0)
    store.take(published.effects)
    state = broker.queues["q"]
    assert state.depth == 0 and not [i for i, (name, _) in store.rows.items() if name == "q"]
    store.take(send(broker, "q", "after"))  # a copy planned after the purge is kept
    assert state.depth == 1
