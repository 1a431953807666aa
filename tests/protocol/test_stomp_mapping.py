"""STOMP's pure parts: the handshake's negotiations, destinations, the message mapping
and the cumulative ack's bookkeeping."""

from __future__ import annotations

import pytest

from broker.engine.errors import BrokerError, Conflict, Forbidden, NotFound, TooLarge
from broker.protocol.stomp_connect import negotiate_heartbeats, negotiate_version
from broker.protocol.stomp_destinations import Kind, destination_of, parse_destination
from broker.protocol.stomp_frames import StompFrame
from broker.protocol.stomp_messages import (
    durable_subscription_queue,
    message_frame,
    queue_properties,
    send_request,
)
from broker.transport.stomp_subscriptions import Subscriptions
from broker.transport.stomp_transactions import HELD_FRAME_COST, MAX_OPEN, Transactions


@pytest.mark.parametrize(
    ("accept", "version"),
    [("1.0,1.1,1.2", "1.2"), ("1.1, 1.0", "1.1"), (None, "1.0"), ("1.3", None), ("", None)],
)
def test_the_best_common_version(accept: str | None, version: str | None) -> None:
    assert negotiate_version(accept) == version


@pytest.mark.parametrize(
    ("client", "offer", "agreed"),
    [
        ("0,0", 10_000, (0, 0)),
        ("5000,5000", 10_000, (5000, 10_000)),
        ("20000,1", 10_000, (100, 20_000)),  # a wish for 1 ms is slowed to 100
        ("1000,1000", 0, (0, 0)),  # the server offers none
        ("0,3000", 10_000, (3000, 0)),
    ],
)
def test_heart_beats_take_the_slower_side(client: str, offer: int, agreed: tuple[int, int]) -> None:
    assert negotiate_heartbeats(client, offer) == agreed


@pytest.mark.parametrize("bad", ["1000", "a,b", "-1,0", "1,2,3"])
def test_a_bad_heart_beat_header_is_invalid(bad: str) -> None:
    with pytest.raises(BrokerError):
        negotiate_heartbeats(bad, 1000)


def test_destinations() -> None:
    exchange = parse_destination("/exchange/orders/eu.created/x")
    assert (exchange.kind, exchange.name, exchange.key) == (Kind.EXCHANGE, "orders", "eu.created/x")
    assert (exchange.publish_exchange, exchange.publish_key) == ("orders", "eu.created/x")
    assert parse_destination("/exchange/amq.default/q").publish_exchange == ""
    topic = parse_destination("/topic/a.#")
    assert (topic.publish_exchange, topic.publish_key) == ("amq.topic", "a.#")
    queue = parse_destination("/queue/my%3Aq")  # percent-encoded, as RabbitMQ allows
    assert (queue.kind, queue.publish_exchange, queue.publish_key) == (Kind.QUEUE, "", "my:q")
    assert parse_destination("/amq/queue/q").kind is Kind.AMQ_QUEUE
    assert parse_destination("/reply-queue/amq.gen-1").publish_key == "amq.gen-1"
    assert parse_destination("/temp-queue/r").kind is Kind.TEMP_QUEUE
    for bad in ("/queue/", "queue/x", "/nowhere/x", "/temp-queue/a/b", "/exchange/bad name/k", "/exchange//q", "/exchange/"):
        with pytest.raises(BrokerError):
            parse_destination(bad)
    assert destination_of("", "q") == "/queue/q"
    assert destination_of("amq.topic", "a.b") == "/topic/a.b"
    assert destination_of("x", "k") == "/exchange/x/k"
    assert destination_of("amq.fanout", "") == "/exchange/amq.fanout"  # as RabbitMQ shows it


def test_send_keeps_json_as_json_and_other_bodies_as_sent() -> None:
    where = parse_destination("/exchange/x/k")
    json_body = send_request({"destination": "/exchange/x/k", "h": "v"}, b'{"a": 1}', where, max_bytes=100)
    assert (json_body.body_json, json_body.headers, json_body.persistent) == ('{"a": 1}', {"h": "v"}, False)
    text = send_request({"content-type": "text/plain", "persistent": "true"}, "é".encode(), where, max_bytes=100)
    assert (text.body_json, text.headers, text.persistent) == ('"é"', {"content-type": "text/plain", "body-encoding": "text"}, True)
    not_json = send_request({}, b"hello", where, max_bytes=100)
    assert (not_json.body_json, not_json.headers) == ('"hello"', {"body-encoding": "text"})
    binary = send_request({"message-id": "m1"}, b"\xff\x00", where, max_bytes=100)
    assert (binary.body_json, binary.headers, binary.message_id) == ('"/wA="', {"body-encoding": "base64"}, "m1")
    with pytest.raises(BrokerError):
        send_request({"persistent": "yes"}, b"1", where, max_bytes=100)
    with pytest.raises(BrokerError):
        send_request({}, b"1" * 200, where, max_bytes=100)


def test_message_frames_give_each_body_back() -> None:
    common = dict(subscription="s:1", tag=7, redelivered=True, exchange="x", routing_key="k", message_id="m",
                  persistent=True)
    frame = message_frame(**common, headers={"n": 5, "a:b": "c\nd"}, body_json='{"a": 1}', version="1.2")
    assert isinstance(frame, str)
    assert frame.startswith("MESSAGE\nsubscription:s\\c1\nmessage-id:7\nack:7\nredelivered:true\n")
    assert "\ndestination:/exchange/x/k\npersistent:true\namqp-message-id:m\ncontent-type:application/json\n" in frame
    assert "n:5\na\\cb:c\\nd\ncontent-length:8\n\n{\"a\": 1}\x00" in frame
    binary = message_frame(**common, headers={"body-encoding": "base64"}, body_json='"/wA="', version="1.2")
    assert isinstance(binary, bytes) and binary.endswith(b"content-length:2\n\n\xff\x00\x00")
    assert b"body-encoding" not in binary and b"content-type" not in binary
    old = message_frame(**common, headers={"h": "x\ny"}, body_json='"t"', version="1.0")
    assert isinstance(old, str) and "h:x y\n" in old and "\nack:" not in old


def test_queue_properties_and_durable_subscriptions() -> None:
    assert queue_properties({}).given is False
    given = queue_properties({"durable": "false", "x-max-length": "5", "x-dead-letter-exchange": "dlx"})
    assert (given.durable, given.arguments, given.given) == (False, {"x-max-length": 5, "x-dead-letter-exchange": "dlx"}, True)
    with pytest.raises(BrokerError):
        queue_properties({"x-message-ttl": "soon"})
    rabbit = queue_properties({"x-delivery-limit": "3", "x-single-active-consumer": "true"})
    assert rabbit.arguments == {"x-delivery-limit": 3, "x-single-active-consumer": True}
    with pytest.raises(BrokerError):
        queue_properties({"x-single-active-consumer": "yes"})
    assert durable_subscription_queue({"durable": "true"}, "s1") == "stomp-subscription-s1"
    assert durable_subscription_queue({"persistent": "true", "x-queue-name": "mine"}, "s1") == "mine"
    assert durable_subscription_queue({"durable": "true", "auto-delete": "true"}, "s1") is None
    # A Python client's bool header (stomp.py writes `True`, `False`), as RabbitMQ reads it.
    assert durable_subscription_queue({"durable": "True", "auto-delete": "False"}, "s1") == "stomp-subscription-s1"
    assert durable_subscription_queue({"durable": "True", "auto-delete": "True"}, "s1") is None
    assert queue_properties({"durable": "False", "x-single-active-consumer": "True"}).durable is False
    with pytest.raises(BrokerError):
        durable_subscription_queue({"durable": "TRUE"}, "s1")
    assert durable_subscription_queue({}, "s1") is None
    with pytest.raises(Forbidden):
        durable_subscription_queue({"durable": "true", "x-queue-name": "amq.mine"}, "s1")


def test_a_client_ack_settles_its_own_subscriptions_earlier_deliveries_only() -> None:
    subscriptions = Subscriptions()
    client = subscriptions.add("c", '"c"', cumulative=True, manual=True)
    individual = subscriptions.add("i", '"i"', cumulative=False, manual=True)
    for tag, owner in ((1, client), (2, individual), (3, client), (4, client)):
        subscriptions.delivered(owner, tag)
    assert subscriptions.to_settle(3) == [1, 3]
    assert subscriptions.to_settle(2) == [2]
    assert subscriptions.to_settle(4) == [4]
    assert subscriptions.to_settle(3) == [3]  # settled already: the router will say so
    subscriptions.delivered(client, 5)
    subscriptions.remove("c")
    assert subscriptions.to_settle(5) == [5] and "c" not in subscriptions
    assert subscriptions.by_json('"i"') is individual


def test_a_commit_s_acks_are_checked_against_the_deliveries_not_settled_yet() -> None:
    subscriptions = Subscriptions()
    client = subscriptions.add("c", '"c"', cumulative=True, manual=True)
    individual = subscriptions.add("i", '"i"', cumulative=False, manual=True)
    auto = subscriptions.add("a", '"a"', cumulative=False, manual=False)
    for tag, owner in ((1, client), (2, individual), (3, client), (4, auto)):
        subscriptions.delivered(owner, tag)
    assert subscriptions.first_unknown([2, 3]) is None
    assert subscriptions.first_unknown([3, 1]) == 1  # the ACK of 3 settles 1 too
    assert subscriptions.first_unknown([2, 2]) == 2
    assert subscriptions.first_unknown([4]) == 4  # an auto delivery is settled as it goes
    assert subscriptions.first_unknown([9]) == 9
    assert subscriptions.first_unknown([1, 3]) is None  # nothing changed by asking
    subscriptions.to_settle(2)
    assert subscriptions.first_unknown([2]) == 2


def test_only_deliveries_the_client_may_still_settle_are_kept() -> None:
    """A subscription's deliveries go when it ends (the router requeues them), at its
    UNSUBSCRIBE or when the router cancels it; `auto` and a gone subscription's keep none:
    what the connection keeps stays within its subscriptions' prefetch."""
    subscriptions = Subscriptions()
    individual = subscriptions.add("i", '"i"', cumulative=False, manual=True)
    client = subscriptions.add("c", '"c"', cumulative=True, manual=True)
    auto = subscriptions.add("a", '"a"', cumulative=False, manual=False)
    for tag, owner in ((1, individual), (2, client), (3, auto), (4, None), (5, individual), (6, client)):
        subscriptions.delivered(owner, tag)
    assert subscriptions.first_unknown([1, 2, 5, 6]) is None
    assert subscriptions.first_unknown([3]) == 3 and subscriptions.first_unknown([4]) == 4
    subscriptions.ending("i")  # its UNSUBSCRIBE sent, the router's answer not come yet
    subscriptions.delivered(individual, 7)  # on its way before the router ended it: requeued too
    assert subscriptions.first_unknown([1]) == 1 and subscriptions.first_unknown([7]) == 7
    assert subscriptions.first_unknown([2, 6]) is None
    subscriptions.remove("i")
    subscriptions.remove("c")  # as when the router cancels it
    subscriptions.delivered(client, 8)
    assert subscriptions.first_unknown([2]) == 2 and subscriptions.first_unknown([8]) == 8
    assert subscriptions._owners == {} and client.tags == set() and not client.order
    for cycle in range(100):  # subscribe, receive, unsubscribe: nothing left behind
        again = subscriptions.add("r", '"r"', cumulative=cycle % 2 == 0, manual=True)
        subscriptions.delivered(again, 100 + cycle)
        subscriptions.ending("r")
        subscriptions.remove("r")
    assert subscriptions._owners == {}


def test_a_client_ack_settles_the_earlier_deliveries_of_its_subscription_for_a_commit_too() -> None:
    subscriptions = Subscriptions()
    client = subscriptions.add("c", '"c"', cumulative=True, manual=True)
    other = subscriptions.add("o", '"o"', cumulative=True, manual=True)
    for tag, owner in ((1, client), (2, other), (3, client), (4, client)):
        subscriptions.delivered(owner, tag)
    assert subscriptions.first_unknown([3, 1]) == 1
    assert subscriptions.first_unknown([3, 3]) == 3
    assert subscriptions.first_unknown([3, 2, 4]) is None  # another subscription's earlier one stays
    assert subscriptions.first_unknown([4, 2]) is None
    assert subscriptions.to_settle(3) == [1, 3]
    assert subscriptions.first_unknown([1]) == 1 and subscriptions.first_unknown([3]) == 3
    assert subscriptions.first_unknown([2, 4]) is None
    assert subscriptions.to_settle(4) == [4] and subscriptions.first_unknown([4]) == 4
    assert subscriptions.first_unknown([2]) is None


def test_transactions_hold_their_frames_in_order_within_bounds() -> None:
    transactions = Transactions(max_bytes=2 * HELD_FRAME_COST + 100)
    transactions.begin("t")
    with pytest.raises(Conflict):
        transactions.begin("t")
    first, second = StompFrame("SEND", {"d": "x"}, b"a" * 40), StompFrame("ACK", {"id": "1"}, b"")
    transactions.hold("t", first)
    transactions.hold("t", second)
    with pytest.raises(TooLarge):
        transactions.hold("t", StompFrame("SEND", {}, b""))  # a third frame's own cost passes the limit
    assert transactions.end("t") == [first, second]
    transactions.begin("u")
    transactions.hold("u", StompFrame("SEND", {}, b"b" * 600))  # the bytes of "t" were given back
    with pytest.raises(NotFound):
        transactions.end("t")
    with pytest.raises(NotFound):
        transactions.hold("nope", first)


def test_small_held_frames_count_what_they_cost_not_only_their_characters() -> None:
    """`ACK id:N transaction:tN` is some 20 characters, and some 500 bytes held: spread over
    MAX_OPEN transactions, the limit stops them at what they cost."""
    limit = 4 << 20
    transactions = Transactions(max_bytes=limit)
    for n in range(MAX_OPEN):
        transactions.begin(f"t{n}")
    held = 0
    with pytest.raises(TooLarge):
        while True:
            frame = StompFrame("ACK", {"id": str(held), "transaction": f"t{held % MAX_OPEN}"})
            transactions.hold(f"t{held % MAX_OPEN}", frame)
            held += 1
    assert limit // (HELD_FRAME_COST + 30) <= held <= limit // HELD_FRAME_COST
