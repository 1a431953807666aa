"""Topology as it travels from the database to the router.

The database holds the definitions (exchanges, queues, bindings); the router
mirrors them. A change made anywhere (API, admin, ORM) becomes one of these
values and is applied by the router (DESIGN.md, "The engine"). No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .engine.broker import BindingSpec
from .engine.exchanges import ExchangeSpec
from .engine.queues import QueueSpec


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


@dataclass(frozen=True, slots=True)
class BindingSaved:
    spec: BindingSpec


@dataclass(frozen=True, slots=True)
class BindingDeleted:
    spec: BindingSpec


TopologyChange = ExchangeSaved | ExchangeDeleted | QueueSaved | QueueDeleted | BindingSaved | BindingDeleted
