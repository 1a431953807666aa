"""The calls that the HTTP API and the admin make on the router, as typed values.

Wherever the router runs (this process, or across the cluster link) a call is
one of these; the router carries it out in one place (broker/runtime/calls.py).
Over the link a call travels as its `op` and its fields in order, and its
result as plain values (numbers, strings, lists, dicts) that survive msgpack.

Pure: the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final

from broker.engine.errors import BrokerError


@dataclass(frozen=True, slots=True)
class QueueCountsCall:
    """name -> [ready, unacknowledged, consumers] of the named queues the router knows."""

    op: ClassVar[str] = "queue.counts"
    names: list[str]


@dataclass(frozen=True, slots=True)
class QueueSnapshotCall:
    """[the counts of `names` as QueueCountsCall gives them, every private queue as a dict]."""

    op: ClassVar[str] = "queue.snapshot"
    names: list[str]


@dataclass(frozen=True, slots=True)
class QueueNamesCall:
    """[how many private queues there are, the names of those whose name contains `contains`
    ignoring case (every one for ""), sorted]: a page of the queues' list is chosen by name."""

    op: ClassVar[str] = "queue.names"
    contains: str


@dataclass(frozen=True, slots=True)
class QueueInfosCall:
    """[the counts of `names` as QueueCountsCall gives them, the private queues among them as
    QueueSnapshotCall gives them]: one page of the queues' list, or one queue."""

    op: ClassVar[str] = "queue.infos"
    names: list[str]


@dataclass(frozen=True, slots=True)
class QueueListedCall:
    """The queues a `stats` frame lists (at most 500, declared ones before private ones, the
    fullest first), as the frame gives them: the console page's first drawing."""

    op: ClassVar[str] = "queue.listed"


@dataclass(frozen=True, slots=True)
class QueueIsPrivateCall:
    """Is `name` the private (exclusive) queue of a live connection?"""

    op: ClassVar[str] = "queue.is_private"
    name: str


@dataclass(frozen=True, slots=True)
class QueueRedeclaredCall:
    """A declaration found queue `name` stored in row `row_id`: is that a queue the router
    deleted by itself, whose row is still to be deleted? If not, a use of the queue."""

    op: ClassVar[str] = "queue.redeclared"
    name: str
    row_id: int


@dataclass(frozen=True, slots=True)
class QueuePurgeCall:
    """Drop the queue's ready messages; the number dropped."""

    op: ClassVar[str] = "queue.purge"
    name: str


@dataclass(frozen=True, slots=True)
class QueueGetCall:
    """Up to `count` ready messages, as message objects with `redelivered`."""

    op: ClassVar[str] = "queue.get"
    name: str
    count: int
    ack: bool


@dataclass(frozen=True, slots=True)
class QueueBrowseCall:
    """A page of the queue's messages, taken by nobody: {count, complete, offset, messages}."""

    op: ClassVar[str] = "queue.browse"
    name: str
    filter: dict[str, Any] | None
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class QueueOriginsCall:
    """The exchanges a replay of the selected messages would publish to."""

    op: ClassVar[str] = "queue.origins"
    name: str
    ids: list[str] | None
    filter: dict[str, Any] | None


BROWSER_ACTIONS: Final = ("delete", "move", "copy", "replay")


def check_browser_action(action: object) -> None:
    """A message browser action's name, or `invalid`."""
    if action not in BROWSER_ACTIONS:
        raise BrokerError(f"action must be one of {', '.join(BROWSER_ACTIONS)}",
                          fields={"action": [", ".join(BROWSER_ACTIONS)]})


@dataclass(frozen=True, slots=True)
class QueueActCall:
    """Delete, move, copy or replay the selected ready messages: {taken, skipped, routed}.
    `allowed`: the exchanges a replay may publish to (None: any)."""

    op: ClassVar[str] = "queue.act"
    name: str
    action: str
    ids: list[str] | None
    filter: dict[str, Any] | None
    exchange: str
    routing_key: str
    allowed: list[str] | None


@dataclass(frozen=True, slots=True)
class ExchangesMissingCall:
    """Which of the exchanges `names` the router does not know (a STOMP COMMIT checks its
    SENDs' before it carries any of them out), in the order given."""

    op: ClassVar[str] = "exchange.missing"
    names: list[str]


@dataclass(frozen=True, slots=True)
class TopologyCall:
    """Mirror a committed change of the stored topology (broker/protocol/topology.py's form)."""

    op: ClassVar[str] = "topology.apply"
    change: dict[str, Any]


RouterCall = (
    QueueCountsCall | QueueSnapshotCall | QueueNamesCall | QueueInfosCall | QueueListedCall | QueueIsPrivateCall
    | QueueRedeclaredCall | QueuePurgeCall | QueueGetCall | QueueBrowseCall | QueueOriginsCall | QueueActCall
    | ExchangesMissingCall | TopologyCall
)

CALLS: Final[dict[str, type[RouterCall]]] = {
    cls.op: cls
    for cls in (
        QueueCountsCall, QueueSnapshotCall, QueueNamesCall, QueueInfosCall, QueueListedCall, QueueIsPrivateCall,
        QueueRedeclaredCall, QueuePurgeCall, QueueGetCall, QueueBrowseCall, QueueOriginsCall, QueueActCall,
        ExchangesMissingCall, TopologyCall,
    )
}


def call_args(call: RouterCall) -> list[Any]:
    """The call's fields in order: its form over the link, after its `op`."""
    return [getattr(call, field.name) for field in fields(call)]


def decode_call(op: str, args: list[Any]) -> RouterCall:
    """The call named `op`; ValueError for an op or arguments this router does not know."""
    cls = CALLS.get(op)
    if cls is None:
        raise ValueError(f"unknown router call {op!r}")
    try:
        return cls(*args)
    except TypeError as error:
        raise ValueError(f"router call {op!r}: {error}") from None
