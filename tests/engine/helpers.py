"""Builders for engine tests: messages, topology and consumers in one line each.

Pure like the engine: no Django, no database, no event loop; times are floats.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.engine.broker import Broker
from broker.engine.exchanges import ExchangeSpec, ExchangeType
from broker.engine.jsoncodec import dumps, loads
from broker.engine.messages import Delivery, Effects, Message, make_message
from broker.engine.queues import AckMode, QueueSpec
from broker.engine.routing import BindingSpec

PUBLISHED_AT = "2026-11-28T12:00:00.000000Z"
_ids = itertools.count(1)


def msg(
    exchange: str,
    routing_key: str,
    body: Any = None,
    *,
    headers: Mapping[str, Any] | None = None,
    persistent: bool = True,
    message_id: str | None = None,
) -> Message:
    return make_message(
        message_id=message_id or f"m{next(_ids)}",
        exchange=exchange,
        routing_key=routing_key,
        body_json=dumps(body),
        headers=dict(headers or {}),
        persistent=persistent,
        published_at=PUBLISHED_AT,
    )


def body(message: Message) -> Any:
    return loads(message.body_json)


def bodies(deliveries: tuple[Delivery, ...] | list[Delivery]) -> list[Any]:
    return [body(d.message) for d in deliveries]


def exchange(broker: Broker, name: str, type: str = "direct", **kwargs: Any) -> None:
    broker.declare_exchange(ExchangeSpec(name, ExchangeType(type), **kwargs))


def queue(broker: Broker, name: str, *, now: float = 0.0, **kwargs: Any) -> None:
    broker.declare_queue(QueueSpec(name, **kwargs), now=now)


def bind(broker: Broker, exchange: str, queue: str, binding_key: str = "", arguments: Mapping[str, Any] | None = None) -> bool:
    return broker.bind(BindingSpec(exchange, queue, binding_key, arguments))


def send(broker: Broker, routing_key: str, body: Any = None, *, exchange: str = "", now: float = 0.0, **kwargs: Any) -> Effects:
    """Publish through `exchange` (the default one unless given)."""
    return broker.publish(msg(exchange, routing_key, body, **kwargs), now=now).effects


def fill(broker: Broker, queue: str, *bodies: Any, now: float = 0.0, persistent: bool = True) -> None:
    for value in bodies:
        send(broker, queue, value, now=now, persistent=persistent)


@dataclass(frozen=True, slots=True)
class Sub:
    connection: int
    subscription: str
    effects: Effects


def subscribe(
    broker: Broker,
    queue: str,
    *,
    connection: int | None = None,
    subscription: str = "s1",
    ack: str = "client",
    prefetch: int = 100,
    now: float = 0.0,
) -> Sub:
    """Consume `queue` on `connection` (a new one unless given)."""
    conn = broker.open_connection() if connection is None else connection
    effects = broker.consume(
        conn,
        subscription=subscription,
        subscription_json=dumps(subscription),
        queue=queue,
        ack_mode=AckMode(ack),
        prefetch=prefetch,
        now=now,
    )
    return Sub(conn, subscription, effects)


def ready(broker: Broker, queue: str) -> list[Any]:
    """The bodies waiting in `queue`, head first."""
    return [body(envelope.message) for envelope in broker.queues[queue].ready]


def ready_flags(broker: Broker, queue: str) -> list[tuple[Any, bool]]:
    return [(body(envelope.message), envelope.redelivered) for envelope in broker.queues[queue].ready]
