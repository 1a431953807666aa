"""Live statistics for watchers (the web console): counts and rates, once a second.

`StatsSampler` turns the engine's running totals into rates by comparing each
sample with the previous one. It reads the engine on the router's loop and
does no I/O, so it is tested with a fake clock. The frame it builds is the
`stats` frame of the `watch` subscription (an addition to docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.engine.broker import Broker
from broker.engine.names import DEFAULT_EXCHANGE
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


class StatsSampler:
    def __init__(self) -> None:
        self._at: float | None = None
        self._published = 0
        self._queues: dict[str, _Totals] = {}
        self._rates: dict[str, tuple[float, float, float]] = {}
        self._published_rate = 0.0

    def sample(self, broker: Broker, *, now: float) -> None:
        """Take the totals now; rates are over the time since the previous sample."""
        queues = {name: (q.enqueued, q.delivered, q.acknowledged) for name, q in broker.queues.items()}
        if self._at is not None and now > self._at:
            span = now - self._at
            self._published_rate = max(0, broker.published - self._published) / span
            self._rates = {name: _rates(totals, self._queues.get(name, _NEW), span) for name, totals in queues.items()}
        self._at, self._published, self._queues = now, broker.published, queues

    def frame(
        self,
        broker: Broker,
        *,
        at: str,
        outbox: tuple[int, float | None] = (0, None),
        handlers: Sequence[StatsHandler] = (),
    ) -> StatsFrame:
        """The `stats` frame: counts as they are now, rates from the last two samples."""
        queues: list[StatsQueue] = []
        delivered = acknowledged = ready = unacked = consumers = 0.0
        for name, queue in broker.queues.items():
            publish_rate, deliver_rate, ack_rate = self._rates.get(name, (0.0, 0.0, 0.0))
            delivered += deliver_rate
            acknowledged += ack_rate
            ready += queue.depth
            unacked += queue.unacked
            consumers += len(queue.consumers)
            spec = queue.spec
            queues.append(StatsQueue(
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
            ))
        exchanges = [StatsExchange(name=DEFAULT_EXCHANGE, type="direct", durable=True, arguments={})] + [
            StatsExchange(name=name, type=str(x.spec.type), durable=x.spec.durable, arguments=dict(x.spec.arguments))
            for name, x in broker.exchanges.items()
        ]
        bindings = [
            StatsBinding(
                exchange=b.exchange,
                queue=None if b.to_exchange else b.destination,
                destination_exchange=b.destination if b.to_exchange else None,
                binding_key=b.binding_key,
                arguments=dict(b.arguments or {}),
            )
            for b in broker.bindings.values()
        ]
        return {
            "type": "stats",
            "at": at,
            "totals": {
                "published": round(self._published_rate, 2),
                "delivered": round(delivered, 2),
                "acknowledged": round(acknowledged, 2),
                "messages_ready": int(ready),
                "messages_unacknowledged": int(unacked),
                "consumers": int(consumers),
                "connections": len(broker.connections),
                "outbox_depth": outbox[0],
                "outbox_oldest_age": None if outbox[1] is None else round(outbox[1], 3),
            },
            "queues": sorted(queues, key=lambda q: q["name"]),
            "exchanges": sorted(exchanges, key=lambda x: x["name"]),
            "bindings": bindings,
            "handlers": sorted(handlers, key=lambda h: (h["queue"], h["process"])),
            "memory": _memory(),
        }


def _memory() -> StatsMemory:
    guard = memory.guard()
    if guard is None:  # no limit in this process (a test's runtime)
        return {"used": 0, "limit": 0, "alarm": False}
    return {"used": guard.used, "limit": guard.limit, "alarm": guard.local_alarm}


def _rates(now: _Totals, before: _Totals, span: float) -> tuple[float, float, float]:
    # A queue deleted and declared again starts from zero: never a negative rate.
    enqueued, delivered, acknowledged = (max(0, a - b) / span for a, b in zip(now, before, strict=True))
    return enqueued, delivered, acknowledged
