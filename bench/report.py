"""The table and the last-line JSON: one row per scenario, ours against RabbitMQ.

With `--cluster` a row also holds ours as a cluster (cross-node: publishers on
one edge, subscribers on another), with its own ratio against RabbitMQ. The
table's title and the JSON's "protocol" entry say what our side's WebSocket
clients spoke (`--protocol`); RabbitMQ's always speak STOMP 1.2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final

from .measure import Measurement

# A result at or beyond this share of the generator's own ceiling may be the generator's limit.
CAP_SHARE: Final = 0.8


@dataclass(frozen=True)
class Spec:
    key: str
    title: str
    unit: str
    higher_is_better: bool


SPECS: Final = {
    "publish": Spec("publish", "publish: 4 WS publishers, persistent, confirm window 256", "msg/s", True),
    "consume": Spec("consume", "consume: 1 WS consumer, client acks, prefetch 100", "msg/s", True),
    "latency": Spec("latency", "latency at 1,000 msg/s, p99", "ms", False),
    "fanout": Spec("fanout", "fanout to 100 WS subscribers, saturated", "deliveries/s", True),
    "fanout_latency": Spec("fanout_latency", "fanout to 100 subscribers at 10k deliveries/s, p99", "ms", False),
    "http": Spec("http", "HTTP publish: 8 keep-alive clients, persistent", "req/s", True),
    "recovery": Spec("recovery", "recovery: start-up with N stored messages", "s", False),
    "connections": Spec("connections", "RSS per idle subscribed WS connection", "KiB", False),
    "backlog_publish": Spec("backlog_publish", "backlog: publish N persistent to a durable queue, no consumer", "msg/s", True),
    "backlog_consume": Spec("backlog_consume", "backlog: then drain it, 1 consumer, client acks", "msg/s", True),
    "backlog_rss": Spec("backlog_rss", "backlog: broker's peak RSS over both", "MiB", False),
    # Django code publishing: ours (pubsub.publish, the outbox) against on_commit + pika to RabbitMQ.
    "outbox_latency": Spec("outbox_latency", "Django commit to WS delivery: 1 process, 1 message per tx, paced at 1,000 tx/s, p99", "ms", False),
    "outbox_publish": Spec("outbox_publish", "Django publish: 4 processes, 1 message per transaction", "msg/s", True),
    "outbox_publish_many": Spec("outbox_publish_many", "Django publish_many: 4 processes, 100 messages per transaction", "msg/s", True),
    # Django tasks (bench/task_scenarios.py): ours (runhandlers) against Celery 5 on RabbitMQ (in
    # the `rabbitmq` column), and, in the `_dtdb` rows, against django-tasks-db's db_worker.
    "tasks_noop": Spec("tasks_noop", "Django task, no-op: 1 worker process; vs Celery 5 (RabbitMQ)", "tasks/s", True),
    "tasks_noop_dtdb": Spec("tasks_noop_dtdb", "Django task, no-op: 1 worker process; vs django-tasks-db", "tasks/s", True),
    "tasks_insert": Spec("tasks_insert", "Django task, one ORM insert: 1 worker process; vs Celery 5", "tasks/s", True),
    "tasks_insert_dtdb": Spec("tasks_insert_dtdb", "Django task, one ORM insert: 1 worker process; vs django-tasks-db", "tasks/s", True),
    "tasks_latency": Spec("tasks_latency", "Django task enqueue to start at 200 tasks/s, p99; vs Celery 5", "ms", False),
    "tasks_latency_dtdb": Spec("tasks_latency_dtdb", "Django task enqueue to start at 200 tasks/s, p99; vs django-tasks-db", "ms", False),
    "metrics": Spec("metrics", "Prometheus scrape with N queues (ours /metrics, RabbitMQ rabbitmq_prometheus per-object)", "ms", False),
    "delayed": Spec("delayed", "delayed messages: N with delays spread over S s, lateness p99", "ms", False),
    "tasks_faults": Spec("tasks_faults", "Django task inserting a row per key, worker SIGKILLed: duplicate rows; vs Celery acks_late", "rows", False),
}


@dataclass
class Row:
    spec: Spec
    ours: Measurement | None = None
    rabbitmq: Measurement | None = None
    cluster: Measurement | None = None  # set (if only to a note) for the scenarios a cluster runs
    ceiling_ours: Measurement | None = None
    ceiling_rabbitmq: Measurement | None = None
    notes: list[str] = field(default_factory=list)
    # What ours' WebSocket clients spoke in this row: with "stomp" its generator
    # ceiling is the STOMP one (`ceiling_rabbitmq`), as for RabbitMQ.
    ours_protocol: str = "json"

    @property
    def ratio(self) -> float | None:
        return self.against_rabbitmq(self.ours)

    @property
    def cluster_ratio(self) -> float | None:
        return self.against_rabbitmq(self.cluster)

    def against_rabbitmq(self, ours: Measurement | None) -> float | None:
        """Higher is better: ours/RabbitMQ for rates, RabbitMQ/ours for latencies and sizes."""
        a = ours.value if ours else None
        b = self.rabbitmq.value if self.rabbitmq else None
        if not a or not b:
            return None
        return a / b if self.spec.higher_is_better else b / a

    def capped(self, which: str) -> bool:
        """Within CAP_SHARE of what the generator reaches against the trivial server."""
        result: Measurement | None = getattr(self, which)
        stomp = which == "rabbitmq" or self.ours_protocol == "stomp"
        ceiling = self.ceiling_rabbitmq if stomp else self.ceiling_ours
        if not result or not ceiling or result.value is None or not ceiling.value:
            return False
        if self.spec.higher_is_better:
            return result.value >= CAP_SHARE * ceiling.value
        return result.value <= ceiling.value / CAP_SHARE


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("ms", "s", "KiB") or abs(value) < 100:
        return f"{value:.2f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{value:,.0f} {unit}"


def _cpu(m: Measurement | None) -> str:
    return "n/a" if m is None or m.cpu_per_1k is None else f"{m.cpu_per_1k:.3f}"


def note_for(row: Row) -> str:
    parts = list(row.notes)
    for which, m in (("ours", row.ours), ("cluster", row.cluster), ("rabbitmq", row.rabbitmq)):
        if row.capped(which):
            parts.append(f"{which}: capped by the load generator")
        if m is not None and m.note:
            parts.append(f"{which}: {m.note}")
        if m is not None and "p50_ms" in m.extra:
            parts.append(f"{which} p50 {m.extra['p50_ms']:.2f} ms")
        if m is not None and "spread" in m.extra and m.extra["spread"] > 0.1:
            parts.append(f"{which}: runs spread {m.extra['spread']:.0%}")
    ceilings = [
        f"{name} {_fmt(c.value, row.spec.unit)}"
        for name, c in (("JSON", row.ceiling_ours), ("STOMP", row.ceiling_rabbitmq))
        if c is not None and c.value is not None
    ]
    if ceilings:
        parts.append("generator ceiling: " + ", ".join(ceilings))
    return "; ".join(parts)


def _ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}x" if value >= 0.01 else f"{value:.1g}x"  # not "0.00x"


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def title(protocol: str) -> str:
    """The table's title: what each side's WebSocket clients spoke."""
    if protocol == "stomp":
        ours = "STOMP 1.2 (subprotocol v12.stomp, the same frames and destinations as RabbitMQ's side)"
    else:
        ours = "our JSON frames"
    return f"Ours over {ours}; RabbitMQ over Web-STOMP, STOMP 1.2."


def table(rows: list[Row], protocol: str = "json") -> str:
    """A title line, then a Markdown table; the cluster's columns only when a cluster was run."""
    clustered = any(row.cluster is not None for row in rows)
    slots = ("ours", "cluster", "rabbitmq") if clustered else ("ours", "rabbitmq")
    header = ["scenario", *slots, "ratio", *(["cluster ratio"] if clustered else []), *(f"cpu s/1k {slot}" for slot in slots), "note"]
    out = [title(protocol), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        measured: list[Measurement | None] = [getattr(row, slot) for slot in slots]
        ratios = (row.ratio, row.cluster_ratio) if clustered else (row.ratio,)
        cells = [
            row.spec.title,
            *(_fmt(m.value if m else None, row.spec.unit) for m in measured),
            *(_ratio(r) for r in ratios),
            *(_cpu(m) for m in measured),
            note_for(row),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def summary(rows: list[Row], protocol: str = "json") -> str:
    """The last line: {"protocol": {"ours": "json"|"stomp", "rabbitmq": "stomp"},
    "scenario": {"ours": x, "rabbitmq": y, "ratio": r}, ...}, and "cluster_<scenario>" likewise."""

    def num(m: Measurement | None) -> float | None:
        return None if m is None else _rounded(m.value, 4)

    data: dict[str, dict[str, float | str | None]] = {"protocol": {"ours": protocol, "rabbitmq": "stomp"}}
    for row in rows:
        data[row.spec.key] = {"ours": num(row.ours), "rabbitmq": num(row.rabbitmq), "ratio": _rounded(row.ratio, 3)}
        if row.cluster is not None:
            data[f"cluster_{row.spec.key}"] = {"ours": num(row.cluster), "rabbitmq": num(row.rabbitmq), "ratio": _rounded(row.cluster_ratio, 3)}
        if row.spec.key == "recovery" and row.ours is not None and "kib_per_message" in row.ours.extra:
            data["recovery_kib_per_message"] = {"ours": round(row.ours.extra["kib_per_message"], 4), "rabbitmq": None, "ratio": None}
    return json.dumps(data, separators=(",", ":"))
