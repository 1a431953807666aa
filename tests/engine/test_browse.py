"""The message browser in the engine (broker/engine/browse.py, Broker.relocate): listing
without taking, filters, and delete, move and replay as one set of effects."""

from __future__ import annotations

from typing import Any

import pytest

from broker.engine.broker import Broker
from broker.engine.browse import BacklogSpan, backlog_of, merge_backlog, parse_filter, ready_of, unacked_of
from broker.engine.errors import BrokerError
from broker.engine.messages import Message
from broker.engine.routing import BindingSpec
from tests.engine.helpers import Backlogs, bind, body, exchange, fill, msg, queue, ready, send, subscribe


def origin(message: Message) -> tuple[str, str] | None:
    return message.origin  # as broker/runtime/browser.py's `origin_of`


def test_listing_takes_nothing_and_changes_no_flag() -> None:
    broker = Broker()
    queue(broker, "q")
    fill(broker, "q", 1, 2, 3)
    consumer = subscribe(broker, "q", prefetch=1)
    unacked, listed = unacked_of(broker.queues["q"]), ready_of(broker.queues["q"])
    assert [(body(i.message), i.unacked) for i in unacked + listed] == [(1, True), (2, False), (3, False)]
    assert [i.key for i in listed] == ["s2", "s3"]
    assert ready(broker, "q") == [2, 3] and not any(e.redelivered for e in broker.queues["q"].ready)
    assert consumer.effects.deliveries[0].delivery_tag == 1


@pytest.mark.parametrize(("raw", "bodies"), [
    ({}, [{"c": "fr", "n": 1}, {"c": "de", "n": 2}, [1, 2]]),
    ({"path": "c", "value": "fr"}, [{"c": "fr", "n": 1}]),
    ({"path": "n", "value": 2}, [{"c": "de", "n": 2}]),
    ({"path": "1", "value": 2}, [[1, 2]]),
    ({"path": "c"}, [{"c": "fr", "n": 1}, {"c": "de", "n": 2}]),
    ({"routing_key": "q", "header": {"name": "tenant", "value": "a"}}, [{"c": "fr", "n": 1}]),
    ({"header": {"name": "attempt", "value": 3}}, [{"c": "de", "n": 2}]),
])
def test_filters(raw: dict[str, Any], bodies: list[Any]) -> None:
    broker = Broker()
    queue(broker, "q")
    send(broker, "q", {"c": "fr", "n": 1}, headers={"tenant": "a"})
    send(broker, "q", {"c": "de", "n": 2}, headers={"attempt": 3})
    send(broker, "q", [1, 2])
    wanted = parse_filter(raw)
    assert [body(i.message) for i in ready_of(broker.queues["q"]) if wanted.matches(i.message)] == bodies


@pytest.mark.parametrize("raw", [
    {"path": ""}, {"path": "a..b"}, {"path": "a."}, {"path": ".a"}, {"path": "."}, {"value": 1}, {"nope": 1},
    {"header": {"value": "x"}}, {"routing_key": 5},
])
def test_a_bad_filter_is_invalid(raw: dict[str, Any]) -> None:
    with pytest.raises(BrokerError) as refused:
        parse_filter(raw)
    assert refused.value.code == "invalid"


def dead_letters(broker: Broker) -> None:
    """Three messages published to `orders` die in `work` (rejected) and wait in `dead`."""
    exchange(broker, "orders", "direct")
    exchange(broker, "dlx", "fanout")
    queue(broker, "dead")
    bind(broker, "dlx", "dead")
    queue(broker, "work", arguments={"x-dead-letter-exchange": "dlx"})
    bind(broker, "orders", "work", "new")
    for n in range(3):
        broker.publish(msg("orders", "new", n), now=0.0)
    consumer = subscribe(broker, "work")
    broker.nack(consumer.connection, 3, multiple=True, requeue=False, now=0.0)
    broker.close_connection(consumer.connection, now=0.0)


def test_replay_sends_each_message_back_to_its_origin_in_one_commit() -> None:
    broker = Broker()
    dead_letters(broker)
    keys = [i.key for i in ready_of(broker.queues["dead"])]
    selection: list[tuple[str, Message | None]] = [(key, None) for key in keys[:2]]
    done = broker.relocate("dead", selection, epoch=None, target=origin, now=0.0)
    assert (done.taken, done.skipped, done.routed) == (2, 0, 2)
    assert ready(broker, "work") == [0, 1] and ready(broker, "dead") == [2]
    # The copies' rows and the originals' deletes go together: one commit.
    assert len(done.effects.to_persist) == 2 and sorted(done.effects.to_delete) == sorted(int(k[1:]) for k in keys[:2])
    again = broker.relocate("dead", selection, epoch=None, target=origin, now=0.0)
    assert (again.taken, again.skipped) == (0, 2)  # gone from there: nothing twice


def test_a_copy_that_reaches_no_queue_leaves_its_original_in_place() -> None:
    broker = Broker()
    dead_letters(broker)
    broker.unbind(BindingSpec("orders", "work", "new"))
    keys = [(i.key, None) for i in ready_of(broker.queues["dead"])]
    done = broker.relocate("dead", keys, epoch=None, target=origin, now=0.0)
    assert (done.taken, done.skipped) == (0, 3) and ready(broker, "dead") == [0, 1, 2]


def test_move_copy_and_delete() -> None:
    broker = Broker()
    queue(broker, "a")
    queue(broker, "b")
    fill(broker, "a", 1, 2, 3)
    keys = [(i.key, None) for i in ready_of(broker.queues["a"])]
    broker.relocate("a", keys[:1], epoch=None, target=lambda m: ("", "b"), keep=True, now=0.0)
    assert ready(broker, "a") == [1, 2, 3] and ready(broker, "b") == [1]
    broker.relocate("a", keys[1:2], epoch=None, target=lambda m: ("", "b"), now=0.0)
    assert ready(broker, "a") == [1, 3] and ready(broker, "b") == [1, 2]
    deleted = broker.relocate("a", keys, epoch=None, target=None, now=0.0)
    assert (deleted.taken, deleted.skipped) == (2, 1) and ready(broker, "a") == []


def test_backlog_rows_are_taken_as_read_and_a_read_under_way_passes_over_them() -> None:
    broker = Broker()
    broker.window = 2
    store = Backlogs(broker)
    queue(broker, "q")
    queue(broker, "b")
    for n in range(6):
        store.take(send(broker, "q", n))
    state = broker.queues["q"]
    assert ready(broker, "q") == [0, 1] and state.depth == 6
    span = backlog_of(state, broker.next_store_id)
    assert span is not None
    rows = sorted((i, m) for i, (name, m) in store.rows.items() if name == "q" and span.after < i < span.below)
    listed = list(merge_backlog(span, rows))
    assert [body(i.message) for i in listed] == [2, 3, 4, 5]
    selection: list[tuple[str, Message | None]] = [(i.key, i.message) for i in listed if body(i.message) % 2]
    done = broker.relocate("q", selection, epoch=span.epoch, target=lambda m: ("", "b"), now=0.0)
    store.take(done.effects)
    assert (done.taken, state.depth) == (2, 4) and ready(broker, "b") == [3, 5]
    consumer = subscribe(broker, "q", prefetch=0)
    store.take(consumer.effects)
    delivered = [body(d.message) for d in consumer.effects.deliveries] + [body(d.message) for d in store.serve()]
    assert delivered == [0, 1, 2, 4]


def test_backlog_rows_taken_out_and_deleted_before_a_read_are_forgotten_once_reads_pass_them() -> None:
    broker = Broker()
    broker.window = 2
    store = Backlogs(broker)
    queue(broker, "q")
    for n in range(10):
        store.take(send(broker, "q", n))
    state = broker.queues["q"]
    span = backlog_of(state, broker.next_store_id)
    assert span is not None and state.backlog is not None
    rows = sorted((i, m) for i, (name, m) in store.rows.items() if name == "q" and span.after < i < span.below)
    taken = [(f"s{i}", m) for i, m in rows if body(m) in (3, 4)]
    store.take(broker.relocate("q", taken, epoch=span.epoch, target=None, now=0.0).effects)  # deleted at once
    assert len(state.backlog.skip) == 2

    consumer = subscribe(broker, "q", prefetch=4)
    store.take(consumer.effects)
    delivered = [body(d.message) for d in consumer.effects.deliveries] + [body(d.message) for d in store.serve()]

    assert delivered == [0, 1, 2, 5] and state.backlog.skip == set()  # the read passed them: nothing kept
    assert ready(broker, "q") == [6, 7] and state.backlog.count == 2  # 8 and 9 unread


def test_a_row_taken_out_stays_taken_for_an_older_listing_after_a_short_read() -> None:
    """A read that comes back short (the taken row's delete committed first) does not make
    the row available to a second action from the same, older listing."""
    broker = Broker()
    broker.window = 10
    store = Backlogs(broker)
    queue(broker, "q")
    queue(broker, "other")
    for n in range(12):
        store.take(send(broker, "q", n))
    state = broker.queues["q"]
    span = backlog_of(state, broker.next_store_id)
    assert span is not None
    rows = sorted((i, m) for i, (name, m) in store.rows.items() if name == "q" and span.after < i < span.below)
    listing = [(f"s{i}", m) for i, m in rows if body(m) == 11]
    first = broker.relocate("q", listing, epoch=span.epoch, target=lambda m: ("", "other"), now=0.0)
    store.take(first.effects)  # moved, its delete committed
    store.take(subscribe(broker, "q", prefetch=6).effects)  # the window drains: a read is asked
    store.take(send(broker, "q", 99))  # published while the read is under way
    request = store.pending.pop(0)
    found = sorted(
        (i, m) for i, (name, m) in store.rows.items() if name == request.queue and request.after < i < request.below
    )[: request.limit]
    store.take(broker.load_window(request.queue, request.epoch, found, now=0.0))  # short: 10, not 11

    second = broker.relocate("q", listing, epoch=span.epoch, target=lambda m: ("", "other"), now=0.0)
    store.take(second.effects)
    store.serve()

    assert (first.taken, second.taken) == (1, 0) and ready(broker, "other") == [11]
    assert 99 in [body(e.message) for e in state.ready]  # the message published meanwhile is read


def test_a_move_back_into_the_same_full_queue_neither_drops_nor_duplicates() -> None:
    broker = Broker()
    exchange(broker, "dlx", "fanout")
    queue(broker, "dead")
    bind(broker, "dlx", "dead")
    queue(broker, "q", arguments={"x-max-length": 3, "x-dead-letter-exchange": "dlx"})
    fill(broker, "q", "A", "B", "C")
    keys = [(i.key, None) for i in ready_of(broker.queues["q"])]
    done = broker.relocate("q", keys[:2], epoch=None, target=lambda m: ("", "q"), now=0.0)
    assert (done.taken, ready(broker, "q"), ready(broker, "dead")) == (2, ["C", "A", "B"], [])


def test_deleting_the_whole_backlog_while_it_is_read_ignores_the_late_answer() -> None:
    broker = Broker()
    broker.window = 2
    store = Backlogs(broker)
    queue(broker, "q")
    for n in range(5):
        store.take(send(broker, "q", n))
    consumer = subscribe(broker, "q", ack="auto", prefetch=0)
    store.take(consumer.effects)  # the window went out; a read of the backlog is asked
    state = broker.queues["q"]
    span = backlog_of(state, broker.next_store_id)
    assert span is not None and state.backlog is not None and state.backlog.loading
    rows = sorted((i, m) for i, (name, m) in store.rows.items() if name == "q" and i > span.after)
    deleted = broker.relocate("q", [(f"s{i}", m) for i, m in rows], epoch=span.epoch, target=None, now=0.0)
    assert deleted.taken == 3 and state.backlog is None
    store.take(deleted.effects)
    broker.close_connection(consumer.connection, now=0.0)
    for n in range(5, 9):
        store.take(send(broker, "q", n))
    store.serve()  # the old read's answer comes too late: ignored; the new backlog is whole
    assert state.depth == 4 and sorted(body(e.message) for e in state.ready) == [5, 6, 7, 8][: len(state.ready)]


def test_deleting_every_row_of_a_backlog_brings_forward_what_waits_in_memory_behind_them() -> None:
    broker = Broker()
    broker.window = 2
    store = Backlogs(broker)
    queue(broker, "q")
    for n in range(3):
        store.take(send(broker, "q", n))
    store.take(send(broker, "q", "in memory", persistent=False))  # waits behind row 3
    backlog = broker.queues["q"].backlog
    assert backlog is not None and (backlog.count, len(backlog.held)) == (1, 1)
    rows = [(f"s{store_id}", message) for store_id, (_, message) in store.rows.items() if store_id > backlog.after]
    store.take(broker.relocate("q", rows, epoch=broker.queues["q"].epoch, target=None, now=0.0).effects)
    assert ready(broker, "q") == [0, 1, "in memory"] and broker.queues["q"].backlog is None
    sub = subscribe(broker, "q", ack="auto")
    assert [body(d.message) for d in sub.effects.deliveries] == [0, 1, "in memory"]
    store.take(send(broker, "q", "later"))
    assert ready(broker, "q") == []  # delivered at once, not stuck behind an empty backlog


def test_what_a_max_length_dropped_from_the_backlog_is_neither_listed_nor_taken() -> None:
    """Drop-head past `max_length` while the head is in the database owes the drops until the
    rows are read. The browser listed those rows as ready, and moving one left its drop to a
    message that must stay: the dropped one came back, and a kept one was dead-lettered."""
    broker = Broker()
    broker.window = 2
    store = Backlogs(broker)
    exchange(broker, "dlx", "fanout")
    queue(broker, "dead", durable=False)
    bind(broker, "dlx", "dead")
    queue(broker, "q", arguments={"dead_letter_exchange": "dlx", "max_length": 5})
    queue(broker, "b")
    for n in range(5):
        store.take(send(broker, "q", n))
    consumer = subscribe(broker, "q", prefetch=1)  # takes 0 (unacked), then a get takes 1
    store.take(consumer.effects)
    store.take(broker.get("q", count=1, ack=True, now=0.0)[1])
    for n in range(5, 10):
        store.take(send(broker, "q", n))
    state = broker.queues["q"]
    assert state.backlog is not None and state.backlog.owed > 0
    span = backlog_of(state, broker.next_store_id)
    assert span is not None
    rows = sorted((i, m) for i, (name, m) in store.rows.items() if name == "q" and span.after < i < span.below)
    listed = [body(i.message) for i in ready_of(state) + list(merge_backlog(span, rows))]
    assert listed == [5, 6, 7, 8, 9] and state.depth == 5
    # Asked with a listing of before the drops (or of another read), nothing owed is taken.
    everything = list(merge_backlog(BacklogSpan(span.epoch, span.after, span.below, span.skip, span.held), rows))
    head = [(i.key, i.message) for i in everything if body(i.message) == 2]
    done = broker.relocate("q", head, epoch=span.epoch, target=lambda m: ("", "b"), now=0.0)
    store.take(done.effects)
    assert (done.taken, done.skipped) == (0, 1) and ready(broker, "b") == []
    store.serve()
    assert sorted(body(e.message) for e in broker.queues["dead"].ready) == [2, 3, 4]
    assert state.depth == 5
