"""Live statistics for watchers (the web console): counts and rates, once a second.

`StatsSampler` turns the engine's running totals into rates by comparing each
sample with the previous one. It reads the engine on the router's loop and
does no I/O, so it is tested with a fake clock. The frame it builds is the
`stats` frame of the `watch` subscription (an addition to docs/protocol.md).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Collection, Sequence
from typing import Final, TypeVar

from broker.engine.broker import Broker
from broker.engine.names import DEFAULT_EXCHANGE
from broker.engine.queues import QueueState
from broker.protocol.server_frames import (
    StatsBinding,
    StatsExchange,
    StatsFrame,
    StatsHandler,
    StatsMemory,
    StatsQueue,
)

from . import memory

_Totals = tuple[int, int, int]  # enqueued, delivered, acknowledged
_NEW: _Totals = (0, 0, 0)  # a queue declared since the last sample started from nothing
# Queues, exchanges and bindings listed in a frame, at most, each (the totals count them all).
LISTED: Final = 500
T = TypeVar("T")


class StatsSampler:
    def __init__(self) -> None:
        self._at: float | None = None
        self._published = 0
        self._queues: dict[str, _Totals] = {}  # each queue's totals at the last sample
        self._before: dict[str, _Totals] = {}  # ... and at the one before, `_span` seconds earlier
        self._span = 0.0
        self._published_rate = self._delivered_rate = self._acknowledged_rate = 0.0

    def sample(self, broker: Broker, *, now: float) -> None:
        """Take the totals now; rates are over the time since the previous sample (a queue's
        own worked out when it is listed)."""
        if self._at is not None and now <= self._at:
            return  # no time between them: the last sample stands
        queues = {name: (q.enqueued, q.delivered, q.acknowledged) for name, q in broker.queues.items()}
        if self._at is not None:
            span = now - self._at
            before = self._queues
            delivered = acknowledged = 0
            for name, (_, delivered_now, acknowledged_now) in queues.items():
                # A queue deleted and declared again starts from zero: never a negative rate.
                _, delivered_then, acknowledged_then = before.get(name, _NEW)
                delivered += max(0, delivered_now - delivered_then)
                acknowledged += max(0, acknowledged_now - acknowledged_then)
            self._published_rate = max(0, broker.published - self._published) / span
            self._delivered_rate, self._acknowledged_rate = delivered / span, acknowledged / span
            self._before, self._span = before, span
        self._at, self._published, self._queues = now, broker.published, queues

    def frame(
        self,
        broker: Broker,
        *,
        at: str,
        outbox: tuple[int, float | None] = (0, None),
        handlers: Sequence[StatsHandler] = (),
    ) -> StatsFrame:
        """The `stats` frame: counts as they are now, rates from the last two samples. The
        totals cover every queue; the lists hold at most LISTED queues (declared ones before
        connections' private ones, each by the messages it holds),
        LISTED exchanges and the bindings between those, so that a broker
        of a hundred thousand queues costs a watcher a frame of the same size as one of a
        thousand, and the router's loop a pass over its queues, not a frame of each."""
        ready = unacked = consumers = 0
        for queue in broker.queues.values():
            ready += queue.depth
            unacked += queue.unacked
            consumers += len(queue.consumers)
        queues = self.listed_queues(broker)
        exchanges = [StatsExchange(name=DEFAULT_EXCHANGE, type="direct", durable=True, arguments={})] + [
            StatsExchange(name=name, type=str(x.spec.type), durable=x.spec.durable, arguments=dict(x.spec.arguments))
            for name, x in itertools.islice(sorted(broker.exchanges.items()), LISTED - 1)
        ]
        listed_queues = {q["name"] for q in queues}
        listed_exchanges = {x["name"] for x in exchanges}
        bindings = [
            StatsBinding(
                exchange=b.exchange,
                queue=None if b.to_exchange else b.destination,
                destination_exchange=b.destination if b.to_exchange else None,
                binding_key=b.binding_key,
                arguments=dict(b.arguments or {}),
            )
            for b in itertools.islice(
                (
                    b for b in broker.bindings.values()
                    if b.exchange in listed_exchanges
                    and b.destination in (listed_exchanges if b.to_exchange else listed_queues)
                ),
                LISTED,
            )
        ]
        return {
            "type": "stats",
            "at": at,
            "totals": {
                "published": round(self._published_rate, 2),
                "delivered": round(self._delivered_rate, 2),
                "acknowledged": round(self._acknowledged_rate, 2),
                "messages_ready": ready,
                "messages_unacknowledged": unacked,
                "consumers": consumers,
                "connections": len(broker.connections),
                "outbox_depth": outbox[0],
                "outbox_oldest_age": None if outbox[1] is None else round(outbox[1], 3),
                "queues": len(broker.queues),
                "exchanges": len(broker.exchanges) + 1,  # the default exchange's too
                "bindings": len(broker.bindings),
            },
            "queues": queues,
            "exchanges": sorted(exchanges, key=lambda x: x["name"]),
            "bindings": bindings,
            "handlers": sorted(handlers, key=lambda h: (h["queue"], h["process"])),
            "memory": _memory(),
        }

    def listed_queues(self, broker: Broker) -> list[StatsQueue]:
        """The queues a frame lists, by name: at most LISTED, declared ones before
        connections' private ones, each by the messages it holds."""
        chosen = fullest(broker.queues.items(), LISTED, private=_private, held=_held)
        return sorted((self._queue(name, queue) for name, queue in chosen), key=lambda q: q["name"])

    def _queue(self, name: str, queue: QueueState) -> StatsQueue:
        publish_rate = deliver_rate = ack_rate = 0.0
        if self._span and name in self._queues:
            publish_rate, deliver_rate, ack_rate = _rates(self._queues[name], self._before.get(name, _NEW), self._span)
        spec = queue.spec
        return StatsQueue(
            name=name,
            durable=spec.durable,
            auto_delete=spec.auto_delete,
            exclusive=spec.exclusive_to is not None,
            arguments=dict(spec.arguments),
            messages_ready=queue.depth,
            messages_unacknowledged=queue.unacked,
            consumers=len(queue.consumers),
            publish_rate=round(publish_rate, 2),
            deliver_rate=round(deliver_rate, 2),
            ack_rate=round(ack_rate, 2),
        )


def fullest(items: Collection[T], limit: int, *, private: Callable[[T], bool], held: Callable[[T], int]) -> list[T]:
    """At most `limit` of the queues `items`: declared ones before connections' private ones
    (the console's forms offer them), each kind by the messages it `held`. The stats frame's
    choice, and through it the console page's first drawing."""
    if len(items) <= limit:
        return list(items)
    chosen = heapq.nlargest(limit, (item for item in items if not private(item)), key=held)
    if len(chosen) < limit:
        chosen += heapq.nlargest(limit - len(chosen), (item for item in items if private(item)), key=held)
    return chosen


def _private(item: tuple[str, QueueState]) -> bool:
    return item[1].spec.exclusive_to is not None


def _held(item: tuple[str, QueueState]) -> int:
    return item[1].depth + item[1].unacked


def _memory() -> StatsMemory:
    guard = memory.guard()
    if guard is None:  # no limit in this process (a test's runtime)
        return {"used": 0, "limit": 0, "alarm": False}
    return {"used": guard.used, "limit": guard.limit, "alarm": guard.local_alarm}


def _rates(now: _Totals, before: _Totals, span: float) -> tuple[float, float, float]:
    enqueued, delivered, acknowledged = (max(0, a - b) / span for a, b in zip(now, before, strict=True))
    return enqueued, delivered, acknowledged
