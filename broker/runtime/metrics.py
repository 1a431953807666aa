"""Prometheus metrics of the router in this process: its engine's counts, its writer's commits.

The writer's histograms are `prometheus-client` metrics, observed once per
commit. The engine's families, one series per queue and per exchange, are
read from its running totals when `/metrics` is scraped (nothing is counted
twice on the way of a message): a snapshot on the router's loop, then written
in Prometheus' text format off the loop. The client library builds a sample
object per series and takes about 0.5 s for 10,000 queues; this takes a few
milliseconds of the loop and about 25 ms in all, so a scrape every second
stays cheap. The names and their meaning are in the README, "Metrics".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prometheus_client import Histogram

from broker.engine.broker import Broker
from broker.engine.names import DEFAULT_EXCHANGE_ALIAS

PREFIX: Final = "pubsub_"

COMMIT_SECONDS: Final = Histogram(
    f"{PREFIX}store_commit_seconds",
    "Time one commit of the message store's writer took (inserts and deletes in one transaction).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
COMMIT_MESSAGES: Final = Histogram(
    f"{PREFIX}store_commit_messages",
    "Copies of messages inserted by one commit of the writer (its group-commit batch).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
)

# (name, type, help): in the order of a `QueueRow`'s values
_QUEUE_FAMILIES: Final = (
    ("queue_messages_published_total", "counter", "Copies of messages enqueued."),
    ("queue_messages_delivered_total", "counter", "Messages delivered (to consumers, or by get)."),
    ("queue_messages_redelivered_total", "counter", "Of those, deliveries flagged redelivered."),
    ("queue_messages_acknowledged_total", "counter", "Messages acknowledged."),
    ("queue_messages_nacked_total", "counter", "Deliveries rejected by a consumer (nack), requeued or not."),
    ("queue_messages_dead_lettered_total", "counter", "Messages republished to the queue's dead-letter exchange."),
    ("queue_messages_dropped_total", "counter",
     "Messages dropped without a dead-letter exchange (expired, over max-length, rejected)."),
    ("queue_messages_refused_total", "counter", "Publishes refused by the full queue (overflow reject-publish)."),
    ("queue_messages_ready", "gauge", "Messages ready for delivery (in memory and in the database)."),
    ("queue_messages_unacknowledged", "gauge", "Messages delivered and not yet acknowledged."),
    ("queue_consumers", "gauge", "Subscriptions consuming the queue."),
)
_EXCHANGE_FAMILIES: Final = (
    ("exchange_messages_published_total", "Messages published to the exchange."),
    ("exchange_messages_unroutable_total", "Messages the exchange routed to no queue."),
)

# A queue's label text, then its values in the order of _QUEUE_FAMILIES.
QueueRow = tuple[str, int, int, int, int, int, int, int, int, int, int, int]
ExchangeRow = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    queues: list[QueueRow]
    exchanges: list[ExchangeRow]


class EngineMetrics:
    """The engine's families: `snapshot` reads the engine (on its loop; cheap), `text`
    writes them (anywhere, e.g. in a thread). Each name's label text is kept between
    scrapes."""

    def __init__(self) -> None:
        self._labels: dict[tuple[str, str], str] = {}

    def snapshot(self, broker: Broker) -> EngineSnapshot:
        label = self._label
        queues: list[QueueRow] = [
            (
                label("queue", name), q.enqueued, q.delivered, q.redelivered, q.acknowledged, q.nacked,
                q.dead_lettered, q.dropped, q.refused, q.depth, q.unacked, len(q.consumers),
            )
            for name, q in broker.queues.items()
        ]
        exchanges: list[ExchangeRow] = [
            (label("exchange", DEFAULT_EXCHANGE_ALIAS), broker.default_published, broker.default_unroutable)
        ] + [(label("exchange", name), x.published, x.unroutable) for name, x in broker.exchanges.items()]
        if len(self._labels) > 2 * (len(queues) + len(exchanges)) + 1000:
            self._labels.clear()  # names deleted since: keep the cache to the names there are
        return EngineSnapshot(queues, exchanges)

    @staticmethod
    def text(snapshot: EngineSnapshot) -> str:
        parts: list[str] = []
        queues = snapshot.queues
        for index, (family, kind, help_text) in enumerate(_QUEUE_FAMILIES, start=1):
            metric = PREFIX + family
            parts.append(f"# HELP {metric} {help_text}\n# TYPE {metric} {kind}\n")
            parts.extend([f"{metric}{row[0]} {row[index]}\n" for row in queues])
        exchanges = snapshot.exchanges
        for index, (family, help_text) in enumerate(_EXCHANGE_FAMILIES, start=1):
            metric = PREFIX + family
            parts.append(f"# HELP {metric} {help_text}\n# TYPE {metric} counter\n")
            parts.extend([f"{metric}{row[0]} {row[index]}\n" for row in exchanges])
        return "".join(parts)

    def _label(self, key: str, name: str) -> str:
        label = self._labels.get((key, name))
        if label is None:
            escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            label = self._labels[(key, name)] = f'{{{key}="{escaped}"}}'
        return label
