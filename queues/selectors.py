"""Read-only queries about queues that the admin and the API share.

Live counts come from the running router, not the database: only it knows
which messages are ready, unacknowledged, or held by which consumer. The
private `amq.gen-` queues of WebSocket subscriptions exist only there too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broker.engine.broker import QueueCounts
from broker.engine.errors import NotFound, Unavailable
from broker.router.calls import call_router, router_op, router_reachable
from queues.models import Queue

if TYPE_CHECKING:
    from broker.runtime.runtime import Runtime


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue as the API shows it; counts are None when no router runs here."""

    name: str
    durable: bool
    auto_delete: bool
    arguments: Mapping[str, Any] = field(default_factory=dict)
    exclusive: bool = False
    messages_ready: int | None = None
    messages_unacknowledged: int | None = None
    consumers: int | None = None

    @property
    def messages(self) -> int | None:
        if self.messages_ready is None or self.messages_unacknowledged is None:
            return None
        return self.messages_ready + self.messages_unacknowledged


def queue_live_counts(names: list[str]) -> dict[str, QueueCounts]:
    """Counts of the named queues, from a worker thread (sync views, admin).

    Empty when no router is reachable (e.g. a management command, or a cluster
    during failover): callers show the counts as unknown, not as zero.
    Queues the router does not know are absent from the result.
    """
    if not router_reachable():
        return {}
    try:
        found = call_router("queue.counts", names)
    except Unavailable:
        return {}
    return {name: QueueCounts(*counts) for name, counts in found.items()}


@router_op("queue.counts")
def _counts(rt: Runtime, names: list[str]) -> dict[str, list[int]]:
    """On the router's loop: name -> [ready, unacknowledged, consumers]."""
    return {
        name: [counts.messages_ready, counts.messages_unacknowledged, counts.consumers]
        for name, counts in rt.queue_counts(names).items()
    }


@router_op("queue.snapshot")
def _snapshot(rt: Runtime, names: list[str]) -> list[Any]:
    """On the router's loop: counts of `names`, and every private queue, in one visit."""
    private = []
    for state in rt.broker.queues.values():
        spec = state.spec
        if spec.exclusive_to is None:
            continue
        private.append(
            {
                "name": spec.name,
                "durable": spec.durable,
                "auto_delete": spec.auto_delete,
                "arguments": dict(spec.arguments),
                "exclusive": True,
                "messages_ready": len(state.ready),
                "messages_unacknowledged": state.unacked,
                "consumers": len(state.consumers),
            }
        )
    return [_counts(rt, names), private]


def _live_snapshot(names: list[str]) -> tuple[dict[str, QueueCounts], list[QueueInfo]]:
    if not router_reachable():
        return {}, []
    try:
        counts, private = call_router("queue.snapshot", names)
    except Unavailable:
        return {}, []
    return (
        {name: QueueCounts(*found) for name, found in counts.items()},
        [QueueInfo(**info) for info in private],
    )


def _info(row: Queue, counts: Any) -> QueueInfo:
    return QueueInfo(
        name=row.name,
        durable=row.durable,
        auto_delete=row.auto_delete,
        arguments=row.arguments or {},
        messages_ready=None if counts is None else counts.messages_ready,
        messages_unacknowledged=None if counts is None else counts.messages_unacknowledged,
        consumers=None if counts is None else counts.consumers,
    )


def queue_list() -> list[QueueInfo]:
    """Stored queues and live private ones, by name, with live counts."""
    rows = list(Queue.objects.order_by("name"))
    counts, private = _live_snapshot([row.name for row in rows])
    stored = {row.name for row in rows}
    infos = [_info(row, counts.get(row.name)) for row in rows]
    infos.extend(info for info in private if info.name not in stored)
    return sorted(infos, key=lambda info: info.name)


def queue_detail(*, name: str) -> QueueInfo:
    row = Queue.objects.filter(name=name).first()
    if row is not None:
        return _info(row, queue_live_counts([name]).get(name))
    _, private = _live_snapshot([])
    for info in private:
        if info.name == name:
            return info
    raise NotFound(f"queue {name!r} does not exist")
