"""The table and the last-line JSON: one row per scenario, ours against RabbitMQ."""

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
}


@dataclass
class Row:
    spec: Spec
    ours: Measurement | None = None
    rabbitmq: Measurement | None = None
    ceiling_ours: Measurement | None = None
    ceiling_rabbitmq: Measurement | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        a = self.ours.value if self.ours else None
        b = self.rabbitmq.value if self.rabbitmq else None
        if not a or not b:
            return None
        return a / b if self.spec.higher_is_better else b / a

    def capped(self, which: str) -> bool:
        """Within CAP_SHARE of what the generator reaches against the trivial server."""
        result = self.ours if which == "ours" else self.rabbitmq
        ceiling = self.ceiling_ours if which == "ours" else self.ceiling_rabbitmq
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
    for which, m in (("ours", row.ours), ("rabbitmq", row.rabbitmq)):
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


def table(rows: list[Row]) -> str:
    header = ("scenario", "ours", "rabbitmq", "ratio", "cpu s/1k ours", "cpu s/1k rabbitmq", "note")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row.spec.title,
                _fmt(row.ours.value if row.ours else None, row.spec.unit),
                _fmt(row.rabbitmq.value if row.rabbitmq else None, row.spec.unit),
                "n/a" if row.ratio is None else f"{row.ratio:.2f}x",
                _cpu(row.ours),
                _cpu(row.rabbitmq),
                note_for(row),
            )
        )
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines[1:]]
    return "\n".join(out)


def summary(rows: list[Row]) -> str:
    """The last line: {"scenario": {"ours": x, "rabbitmq": y, "ratio": r}, ...}."""

    def num(m: Measurement | None) -> float | None:
        return None if m is None or m.value is None else round(m.value, 4)

    data: dict[str, dict[str, float | None]] = {}
    for row in rows:
        data[row.spec.key] = {"ours": num(row.ours), "rabbitmq": num(row.rabbitmq), "ratio": None if row.ratio is None else round(row.ratio, 3)}
        if row.spec.key == "recovery" and row.ours is not None and "kib_per_message" in row.ours.extra:
            data["recovery_kib_per_message"] = {"ours": round(row.ours.extra["kib_per_message"], 4), "rabbitmq": None, "ratio": None}
    return json.dumps(data, separators=(",", ":"))
