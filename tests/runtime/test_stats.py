"""Rates and counts for watchers: the sampler over the pure engine, with a fake clock."""

from __future__ import annotations

import pytest

from broker.engine.broker import Broker
from broker.engine.queues import AckMode
from broker.runtime import stats
from broker.runtime.stats import StatsSampler
from tests.engine.helpers import bind, exchange, msg, queue


def test_rates_are_per_second_between_samples_and_counts_are_live() -> None:
    broker = Broker()
    exchange(broker, "orders", "fanout")
    queue(broker, "a")
    queue(broker, "b")
    bind(broker, "orders", "a")
    bind(broker, "orders", "b")
    connection = broker.open_connection()
    broker.consume(connection, subscription="s", subscription_json='"s"', queue="a",
                   ack_mode=AckMode.CLIENT, prefetch=0, now=0.0)
    sampler = StatsSampler()
    sampler.sample(broker, now=10.0)
    for _ in range(6):
        broker.publish(msg("orders", ""), now=10.5)
    broker.ack(connection, 3, multiple=True, now=11.0)
    sampler.sample(broker, now=12.0)  # two seconds later

    frame = sampler.frame(broker, at="2026-11-28T12:00:00.000000Z")
    rows = {q["name"]: q for q in frame["queues"]}
    assert (rows["a"]["publish_rate"], rows["a"]["deliver_rate"], rows["a"]["ack_rate"]) == (3.0, 3.0, 1.5)
    assert (rows["b"]["publish_rate"], rows["b"]["deliver_rate"], rows["b"]["messages_ready"]) == (3.0, 0.0, 6)
    assert rows["a"]["messages_unacknowledged"] == 3 and rows["a"]["consumers"] == 1
    totals = frame["totals"]
    assert (totals["published"], totals["delivered"], totals["acknowledged"]) == (3.0, 3.0, 1.5)
    assert (totals["messages_ready"], totals["messages_unacknowledged"], totals["connections"]) == (6, 3, 1)
    assert {"name": "", "type": "direct", "durable": True, "arguments": {}} in frame["exchanges"]
    assert {b["queue"] for b in frame["bindings"]} == {"a", "b"}


def test_a_queue_declared_again_never_shows_a_negative_rate() -> None:
    broker = Broker()
    queue(broker, "q")
    for _ in range(4):
        broker.publish(msg("", "q"), now=0.0)
    sampler = StatsSampler()
    sampler.sample(broker, now=1.0)
    broker.delete_queue("q")
    queue(broker, "q")
    sampler.sample(broker, now=2.0)
    (row,) = sampler.frame(broker, at="t")["queues"]
    assert row["publish_rate"] == 0.0


def test_a_frame_lists_the_queues_holding_the_most_messages_and_counts_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A watcher's frame stays the same size however many queues there are: the totals
    count every queue, exchange and binding, the lists hold at most LISTED of each."""
    monkeypatch.setattr(stats, "LISTED", 3)
    broker = Broker()
    for name in ("e1", "e2", "e3", "e4"):
        exchange(broker, name, "fanout")
    for n, name in enumerate(["a", "b", "c", "d", "e"]):
        queue(broker, name)
        bind(broker, "e1", name)
        for _ in range(n if name != "a" else 10):  # a: 10 messages, b: 1, c: 2, d: 3, e: 4
            broker.publish(msg("", name), now=1.0)
    sampler = StatsSampler()
    sampler.sample(broker, now=1.0)

    frame = sampler.frame(broker, at="2026-11-28T12:00:00.000000Z")
    assert [q["name"] for q in frame["queues"]] == ["a", "d", "e"]  # the deepest three, by name
    assert [x["name"] for x in frame["exchanges"]] == ["", "e1", "e2"]
    assert [(b["exchange"], b["queue"]) for b in frame["bindings"]] == [("e1", "a"), ("e1", "d"), ("e1", "e")]
    totals = frame["totals"]
    assert (totals["queues"], totals["exchanges"], totals["bindings"]) == (5, 5, 5)
    assert totals["messages_ready"] == 10 + 1 + 2 + 3 + 4  # every queue's


def test_declared_queues_are_listed_before_private_ones_and_bindings_match_by_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stats, "LISTED", 3)
    broker = Broker()
    for name in ("a", "b", "y"):
        exchange(broker, name, "fanout")
    connection = broker.open_connection()
    for n in range(3):  # private queues, deeper than every declared one
        queue(broker, f"private-{n}", durable=False, exclusive_to=connection)
        broker.publish(msg("", f"private-{n}"), now=1.0)
    for name in ("old", "y", "new"):  # a queue may share its name with an exchange
        queue(broker, name)
    bind(broker, "y", "old")  # from exchange y, which is not listed (the first three: "", a, b)
    bind(broker, "a", "old")
    sampler = StatsSampler()
    sampler.sample(broker, now=1.0)
    sampler.sample(broker, now=1.0)  # no time between them: the first stands

    frame = sampler.frame(broker, at="2026-11-28T12:00:00.000000Z")
    assert [q["name"] for q in frame["queues"]] == ["new", "old", "y"]
    assert [x["name"] for x in frame["exchanges"]] == ["", "a", "b"]
    assert [(b["exchange"], b["queue"]) for b in frame["bindings"]] == [("a", "old")]
