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


class Backlogs:
    """The shell's side of durable queues' backlogs (broker/engine/backlog.py), in memory:
    the stored rows, committed at once, and the reads the engine asks for, answered when
    `serve` is called."""

    def __init__(self, broker: Broker, rows: dict[int, tuple[str, Message]] | None = None) -> None:
        self.broker = broker
        self.rows: dict[int, tuple[str, Message]] = dict(rows or {})
        self.pending: list[Any] = []
        self.reads = 0

    def take(self, effects: Effects) -> Effects:
        """Store an engine call's copies, delete its rows, remember its reads."""
        for copy in effects.to_persist:
            self.rows[copy.store_id] = (copy.queue, copy.message)
        for store_id in effects.to_delete:
            self.rows.pop(store_id, None)
        for gone in effects.backlog_deleted:
            for store_id in [i for i, (name, _) in self.rows.items() if name == gone.queue and gone.after < i < gone.below]:
                del self.rows[store_id]
        self.pending.extend(effects.to_load)
        return effects

    def serve(self, *, now: float = 0.0, wall_now: float | None = None) -> list[Delivery]:
        """Answer every read asked for, and those they ask for in turn; the deliveries made."""
        deliveries: list[Delivery] = []
        while self.pending:
            request = self.pending.pop(0)
            found = sorted(
                (store_id, message) for store_id, (name, message) in self.rows.items()
                if name == request.queue and request.after < store_id < request.below
            )[: request.limit]
            self.reads += 1
            effects = self.take(self.broker.load_window(request.queue, request.epoch, found, now=now, wall_now=wall_now))
            deliveries.extend(effects.deliveries)
        return deliveries


def restore(broker: Broker, rows: dict[int, tuple[str, Message]], *, now: float = 0.0, wall_now: float | None = None) -> Backlogs:
    """A start-up: the stored rows counted by queue, and their windows read."""
    backlogs = Backlogs(broker, rows)
    counts: dict[str, int] = {}
    for name, _ in rows.values():
        counts[name] = counts.get(name, 0) + 1
    broker.next_store_id = max(broker.next_store_id, max(rows, default=0) + 1)
    for name, count in counts.items():
        if name in broker.queues:
            backlogs.take(broker.restore(name, count))
    backlogs.serve(now=now, wall_now=wall_now)
    return backlogs
