"""Topology as it travels from the database to the router.

The database holds the definitions (exchanges, queues, bindings); the router
mirrors them. A change made anywhere (API, admin, ORM) becomes one of these
values and is applied by the router. No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from broker.engine.exchanges import ExchangeSpec, ExchangeType
from broker.engine.queues import QueueSpec
from broker.engine.routing import BindingSpec, DestinationType

# The channel-layer group the router listens on for changes made in other processes.
TOPOLOGY_GROUP: Final = "broker.topology"
TOPOLOGY_EVENT: Final = "topology.change"


@dataclass(frozen=True, slots=True)
class Topology:
    exchanges: list[ExchangeSpec] = field(default_factory=list)
    queues: list[QueueSpec] = field(default_factory=list)
    bindings: list[BindingSpec] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExchangeSaved:
    spec: ExchangeSpec


@dataclass(frozen=True, slots=True)
class ExchangeDeleted:
    name: str


@dataclass(frozen=True, slots=True)
class QueueSaved:
    spec: QueueSpec


@dataclass(frozen=True, slots=True)
class QueueDeleted:
    name: str
    row_id: int | None = None


@dataclass(frozen=True, slots=True)
class BindingSaved:
    spec: BindingSpec


@dataclass(frozen=True, slots=True)
class BindingDeleted:
    spec: BindingSpec


TopologyChange = ExchangeSaved | ExchangeDeleted | QueueSaved | QueueDeleted | BindingSaved | BindingDeleted


# -- the wire form, for the channel layer between processes -------------------


def encode_change(change: TopologyChange) -> dict[str, Any]:
    match change:
        case ExchangeSaved(spec):
            return {"kind": "exchange_saved", "name": spec.name, "type": str(spec.type), "durable": spec.durable,
                    "auto_delete": spec.auto_delete, "arguments": dict(spec.arguments)}
        case QueueSaved(spec):
            return {"kind": "queue_saved", "name": spec.name, "durable": spec.durable,
                    "auto_delete": spec.auto_delete, "arguments": dict(spec.arguments), "row_id": spec.row_id}
        case ExchangeDeleted(name):
            return {"kind": "exchange_deleted", "name": name}
        case QueueDeleted(name, row_id):
            return {"kind": "queue_deleted", "name": name, "row_id": row_id}
        case BindingSaved(spec) | BindingDeleted(spec):
            kind = "binding_saved" if isinstance(change, BindingSaved) else "binding_deleted"
            return {"kind": kind, "exchange": spec.exchange, "destination": spec.destination,
                    "destination_type": str(spec.destination_type), "binding_key": spec.binding_key,
                    "arguments": dict(spec.arguments or {})}
    raise TypeError(f"not a topology change: {change!r}")


def decode_change(data: dict[str, Any]) -> TopologyChange:
    kind = data["kind"]
    if kind == "exchange_saved":
        return ExchangeSaved(ExchangeSpec(data["name"], ExchangeType(data["type"]), data["durable"],
                                          data["auto_delete"], data["arguments"]))
    if kind == "queue_saved":
        return QueueSaved(QueueSpec(data["name"], data["durable"], data["auto_delete"], data["arguments"],
                                    row_id=data.get("row_id")))
    if kind == "exchange_deleted":
        return ExchangeDeleted(data["name"])
    if kind == "queue_deleted":
        return QueueDeleted(data["name"], data.get("row_id"))
    if kind not in ("binding_saved", "binding_deleted"):
        raise ValueError(f"unknown topology change {kind!r}")
    binding = BindingSpec(data["exchange"], data["destination"], data["binding_key"], data["arguments"],
                          DestinationType(data["destination_type"]))
    return BindingSaved(binding) if kind == "binding_saved" else BindingDeleted(binding)
