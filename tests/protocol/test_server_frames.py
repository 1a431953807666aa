"""Server frames (broker/protocol/server_frames.py): the `message` frame and the message object."""

from __future__ import annotations

from broker.engine.broker import Broker
from broker.engine.jsoncodec import dumps, loads
from broker.engine.messages import Delivery
from broker.protocol.server_frames import message_frame, message_object
from tests.engine.helpers import PUBLISHED_AT, msg, queue, send, subscribe


def test_delivery_frame_has_the_protocol_fields() -> None:
    broker = Broker()
    queue(broker, "q")
    send(broker, "q", {"n": [1, "é"]}, headers={"x-trace": "abc"}, persistent=False, message_id="id-1")
    sub = subscribe(broker, "q", subscription="s-9")
    (delivery,) = sub.effects.deliveries
    assert loads(message_frame(delivery)) == {
        "type": "message",
        "subscription": "s-9",
        "delivery_tag": 1,
        "redelivered": False,
        "message_id": "id-1",
        "unique_id": "id-1",
        "exchange": "",
        "routing_key": "q",
        "body": {"n": [1, "é"]},
        "headers": {"x-trace": "abc"},
        "persistent": False,
        "published_at": PUBLISHED_AT,
    }
    (again,) = broker.nack(sub.connection, 1, multiple=False, requeue=True, now=0.0).deliveries
    assert (loads(message_frame(again))["redelivered"], loads(message_frame(again))["delivery_tag"]) == (True, 2)


def test_a_transaction_ack_delivery_names_its_stored_copy() -> None:
    broker = Broker()
    queue(broker, "q")
    send(broker, "q", 1)
    send(broker, "q", 2, persistent=False)
    stored, in_memory = subscribe(broker, "q", ack="transaction").effects.deliveries
    assert stored.store_id is not None and (stored.transaction, in_memory.transaction) == (True, True)
    assert [loads(message_frame(d))["store_id"] for d in (stored, in_memory)] == [stored.store_id, None]
    assert loads(message_frame(stored))["body"] == 1
    assert broker.connections[1].unacked.keys() == {1, 2}  # acknowledged as client ones are


def test_frame_of_a_redelivery_and_of_a_numeric_subscription() -> None:
    message = msg("x", "k", None, persistent=True, message_id="m")
    frame = loads(message_frame(Delivery(1, dumps(7), 3, message, True)))
    assert (frame["subscription"], frame["delivery_tag"], frame["redelivered"], frame["body"]) == (7, 3, True, None)
    assert message_object(message, redelivered=True) == {
        "message_id": "m",
        "exchange": "x",
        "routing_key": "k",
        "body": None,
        "headers": {},
        "persistent": True,
        "published_at": PUBLISHED_AT,
        "redelivered": True,
    }
