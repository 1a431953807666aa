"""A connection's credit: subscriptions to named queues are sent no more than their
transport has written, plus the credit (broker/engine/queues.py, `Connection`)."""

from __future__ import annotations

from broker.engine.broker import Broker
from broker.engine.jsoncodec import dumps
from broker.engine.messages import Delivery
from broker.engine.queues import AckMode, delivery_cost
from broker.protocol.server_frames import message_frame
from tests.engine.helpers import bodies, exchange, fill, msg, queue, ready, send, subscribe

BODY = "x" * 1000
COST = delivery_cost(msg("", "q", BODY)) + len(dumps("s1"))  # one delivery of BODY to "q", subscription "s1"


def new_broker(credit: int | None) -> Broker:
    broker = Broker()
    broker.credit = credit
    queue(broker, "q")
    return broker


def test_an_auto_ack_subscription_gets_its_credit_s_worth_and_the_rest_waits_in_the_queue() -> None:
    broker = new_broker(3 * COST)
    fill(broker, "q", *[BODY] * 10)
    sub = subscribe(broker, "q", ack="auto")
    assert len(sub.effects.deliveries) == 3
    assert [d.cost for d in sub.effects.deliveries] == [delivery_cost(d.message) + len(dumps("s1")) for d in sub.effects.deliveries]
    assert len(ready(broker, "q")) == 7
    assert send(broker, "q", BODY).deliveries == ()  # a publish waits too
    assert len(ready(broker, "q")) == 8


def test_what_is_written_comes_back_as_credit_and_the_queue_drains_on() -> None:
    broker = new_broker(3 * COST)
    fill(broker, "q", *[f"{n}" + BODY for n in range(10)])
    sub = subscribe(broker, "q", ack="auto")
    got = bodies(sub.effects.deliveries)
    for _ in range(5):
        got += bodies(broker.written(sub.connection, 2 * COST, now=0.0).deliveries)
    assert [int(b[0]) for b in got] == list(range(10))  # in queue order, nothing lost
    assert ready(broker, "q") == []
    assert broker.written(sub.connection, 2 * COST, now=0.0).deliveries == ()


def test_one_delivery_goes_while_any_credit_is_left_whatever_its_size() -> None:
    broker = new_broker(10)
    fill(broker, "q", BODY, BODY)
    sub = subscribe(broker, "q", ack="auto")
    assert len(sub.effects.deliveries) == 1  # bigger than the credit: it still goes
    assert broker.written(sub.connection, 5, now=0.0).deliveries == ()  # still not above 0
    assert len(broker.written(sub.connection, COST, now=0.0).deliveries) == 1


def test_a_client_ack_subscription_is_held_by_credit_and_by_prefetch() -> None:
    broker = new_broker(2 * COST)
    fill(broker, "q", *[BODY] * 5)
    sub = subscribe(broker, "q", ack="client", prefetch=10)
    assert len(sub.effects.deliveries) == 2
    acked = broker.ack(sub.connection, 2, multiple=True, now=0.0)
    assert acked.deliveries == ()  # an ack frees prefetch, not credit
    assert len(broker.written(sub.connection, 2 * COST, now=0.0).deliveries) == 2


def test_another_subscription_with_credit_takes_what_a_blocked_one_cannot() -> None:
    broker = new_broker(2 * COST)
    slow = subscribe(broker, "q", ack="auto")
    fast = subscribe(broker, "q", ack="auto", subscription="s2")
    broker.written(fast.connection, 100 * COST, now=0.0)  # its client reads on
    effects = [send(broker, "q", f"{n}" + BODY) for n in range(6)]
    to_slow = [d for fx in effects for d in fx.deliveries if d.connection == slow.connection]
    to_fast = [d for fx in effects for d in fx.deliveries if d.connection == fast.connection]
    assert [b[0] for b in bodies(to_slow)] == ["0", "2"]  # then out of credit
    assert [b[0] for b in bodies(to_fast)] == ["1", "3", "4", "5"]
    assert ready(broker, "q") == []


def test_an_exchange_subscription_s_private_queue_is_not_held_back() -> None:
    broker = new_broker(COST)
    exchange(broker, "fan", "fanout")
    conn = broker.open_connection()
    broker.consume_exchange(
        conn, subscription="s", subscription_json=dumps("s"), exchange="fan", binding_key="", arguments=None,
        queue="amq.gen-s", ack_mode=AckMode.AUTO, prefetch=0, now=0.0,
    )
    delivered = [send(broker, "", BODY, exchange="fan").deliveries for _ in range(5)]
    assert [len(d) for d in delivered] == [1] * 5
    assert {d.cost for ds in delivered for d in ds} == {0}  # its slow client is closed instead


def test_a_transaction_ack_subscription_is_not_held_back() -> None:
    broker = new_broker(COST)
    fill(broker, "q", *[BODY] * 4)
    sub = subscribe(broker, "q", ack="transaction", prefetch=10)
    assert len(sub.effects.deliveries) == 4  # its prefetch bounds it; its frames wait for commits


def test_without_credit_nothing_is_held_back() -> None:
    broker = new_broker(None)
    fill(broker, "q", *[BODY] * 50)
    assert len(subscribe(broker, "q", ack="auto").effects.deliveries) == 50


def test_credit_for_a_closed_connection_is_ignored() -> None:
    broker = new_broker(COST)
    sub = subscribe(broker, "q", ack="auto")
    broker.close_connection(sub.connection, now=0.0)
    assert broker.written(sub.connection, COST, now=0.0).deliveries == ()


def test_subscriptions_of_one_connection_take_turns_at_the_credit_given_back() -> None:
    broker = new_broker(2 * COST)
    queue(broker, "deep")
    fill(broker, "deep", *[BODY] * 50)
    first = subscribe(broker, "deep", ack="auto")
    fill(broker, "q", *[BODY] * 5)
    second = subscribe(broker, "q", ack="auto", connection=first.connection, subscription="s2")
    assert second.effects.deliveries == ()  # the first took the credit
    to_second = 0
    for _ in range(6):
        written = broker.written(first.connection, 2 * COST, now=0.0)
        to_second += sum(d.subscription_json == dumps("s2") for d in written.deliveries)
    assert to_second >= 4  # half the turns, not none while "deep" holds more


def test_a_delivery_costs_its_headers_and_its_bytes_in_utf_8() -> None:
    plain = msg("", "q", "a" * 100)
    wide = msg("", "q", "é" * 100)  # two bytes each
    headed = msg("", "q", "a" * 100, headers={"h": "v" * 5000})
    assert delivery_cost(wide) == delivery_cost(plain) + 100
    assert delivery_cost(headed) >= delivery_cost(plain) + 5000
    assert headed.cost == delivery_cost(headed)  # made once, kept with the message


def test_a_delivery_costs_its_subscription_s_id_too_which_the_client_chose() -> None:
    broker = new_broker(10 * COST)
    fill(broker, "q", *[BODY] * 10)
    conn = broker.open_connection()
    long_id = "i" * 2000
    effects = broker.consume(
        conn, subscription=long_id, subscription_json=dumps(long_id), queue="q", ack_mode=AckMode.AUTO,
        prefetch=0, now=0.0,
    )
    assert len(effects.deliveries) < 10
    assert all(d.cost == delivery_cost(d.message) + len(dumps(long_id)) for d in effects.deliveries)


def test_a_json_delivery_frame_is_not_bigger_than_its_cost() -> None:
    message = msg("ex", "some.routing.key", {"text": "é" * 50, "n": 1}, headers={"h": "v", "n": 2},
                  message_id="m" * 64)
    frame = message_frame(Delivery(1, dumps("sub"), 123456, message, True, returns=3, cost=0))
    assert len(frame.encode()) <= delivery_cost(message) + len(dumps("sub"))


def test_a_single_active_consumer_queue_waits_for_its_active_subscriber_s_socket() -> None:
    """As in RabbitMQ: the next subscriber takes over when the active one leaves, not while
    it is slow."""
    broker = Broker()
    broker.credit = COST
    queue(broker, "sac", arguments={"x-single-active-consumer": True})
    active = subscribe(broker, "sac", ack="auto")
    standby = subscribe(broker, "sac", ack="auto", subscription="s2")
    fill(broker, "sac", BODY, BODY, BODY)
    assert ready(broker, "sac") == [BODY, BODY]  # one went to the active one
    closed = broker.close_connection(active.connection, now=0.0)
    assert [d.connection for d in closed.deliveries] == [standby.connection]


def test_a_subscription_id_costs_its_bytes_in_utf_8() -> None:
    broker = new_broker(100 * COST)
    fill(broker, "q", BODY)
    conn = broker.open_connection()
    wide = "😀" * 100  # four bytes each
    effects = broker.consume(
        conn, subscription=wide, subscription_json=dumps(wide), queue="q", ack_mode=AckMode.AUTO, prefetch=0, now=0.0,
    )
    [delivery] = effects.deliveries
    assert delivery.cost == delivery_cost(delivery.message) + len(dumps(wide).encode())
