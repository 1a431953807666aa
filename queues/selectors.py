"""Read-only queries about queues that the admin and the API share.

Live counts come from the running router, not the database: only it knows
which messages are ready, unacknowledged, or held by which consumer. The
private `amq.gen-` queues of WebSocket subscriptions exist only there too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from broker.engine.broker import QueueCounts
from broker.engine.errors import NotFound, Unavailable
from broker.router.calls import (
    listed_queues,
    private_queue_names,
    queue_counts,
    queue_infos,
    queue_snapshot,
    router_reachable,
)
from common.paging import Page, PageRequest, page_of
from queues.models import Queue


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
        return queue_counts(names)
    except Unavailable:
        return {}


def _live_snapshot(names: list[str], *, every_private: bool = True) -> tuple[dict[str, QueueCounts], list[QueueInfo]]:
    """Counts of the named queues, and every private queue (or those among `names`)."""
    if not router_reachable():
        return {}, []
    try:
        counts, private = queue_snapshot(names) if every_private else queue_infos(names)
    except Unavailable:
        return {}, []
    return counts, [QueueInfo(**info) for info in private]


def _private_names(request: PageRequest) -> tuple[int, list[str]]:
    """How many private queues there are, and the names of those the page's filter may keep."""
    if not router_reachable():
        return 0, []
    try:
        return private_queue_names(request.name)
    except Unavailable:
        return 0, []


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


def queue_listed(limit: int) -> list[QueueInfo]:
    """The queues a `stats` frame lists now, by name, as the router chooses them without
    reading the others (its own LISTED of them, declared ones before private ones, the
    fullest first); without a router, the first `limit` stored queues by name, their counts
    unknown."""
    if router_reachable():
        try:
            return [QueueInfo(**{field: info[field] for field in _INFO_FIELDS}) for info in listed_queues()]
        except Unavailable:
            pass
    return [_info(row, None) for row in Queue.objects.order_by("name")[:limit]]


_INFO_FIELDS: Final = (
    "name", "durable", "auto_delete", "arguments", "exclusive", "messages_ready", "messages_unacknowledged", "consumers",
)


def queue_page(request: PageRequest, *, exclusive: bool | None = None) -> Page[QueueInfo]:
    """One page of `queue_list()`, of connections' private queues only (`exclusive`
    true) or of declared ones only (false): only its own queues are read in full and counted."""
    stored = list(Queue.objects.values_list("name", flat=True))  # sorted below, with the private ones
    private_total, private = _private_names(request)
    kept = [*([] if exclusive else stored), *([] if exclusive is False else private)]
    names = page_of(request, sorted(kept))
    rows = {row.name: row for row in Queue.objects.filter(name__in=names.items)}
    counts, private_infos = _live_snapshot(names.items, every_private=False)
    found = {info.name: info for info in private_infos}
    found.update((name, _info(row, counts.get(name))) for name, row in rows.items())
    # A queue deleted between the two reads is left out of its page.
    items = [found[name] for name in names.items if name in found]
    return Page(request, items, names.filtered_count, len(stored) + private_total)  # before any filter


def queue_detail(*, name: str) -> QueueInfo:
    row = Queue.objects.filter(name=name).first()
    if row is not None:
        return _info(row, queue_live_counts([name]).get(name))
    _, private = _live_snapshot([name], every_private=False)
    for info in private:
        if info.name == name:
            return info
    raise NotFound(f"queue {name!r} does not exist")
