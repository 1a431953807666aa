"""The message browser on the router: pages of a queue's messages without taking them, and
the actions on its ready messages (delete, move, copy, replay to the origin the broker
recorded when it dead-lettered them).

The engine lists what is in memory and says where the backlog's rows are
(broker/engine/browse.py); the rows are read here on the writer's thread. An
action goes BATCH messages at a time: each batch's copies and deletes are one
set of effects, committed in one transaction before the next batch starts, so a
broker killed half way has moved some batches whole and the others not at all:
nothing lost, nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from broker.engine.browse import (
    Listed,
    backlog_of,
    merge_backlog,
    parse_filter,
    ready_of,
    refuse_unknown_keys,
    unacked_of,
)
from broker.engine.errors import BrokerError, NotFound, Unavailable
from broker.engine.messages import Message
from broker.protocol.calls import check_browser_action
from broker.protocol.server_frames import message_object

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("broker.browser")

# Messages looked at for one page or one action, at most: a page beyond says `complete: false`.
MAX_SCAN: Final = 200_000
READ_CHUNK: Final = 5_000
BATCH: Final = 500
MAX_PAGE: Final = 1_000


async def scan(runtime: Runtime, queue: str, wanted: Mapping[str, Any] | None) -> tuple[list[Listed], int | None, bool]:
    """The queue's messages that match, in its order; the backlog's epoch when it had one;
    and whether every message was looked at."""
    state = runtime.broker.queues.get(queue)
    if state is None:
        raise NotFound(f"queue {queue!r} does not exist")
    matches = parse_filter(wanted).matches
    found = [item for item in unacked_of(state) + ready_of(state) if matches(item.message)]
    span = backlog_of(state, runtime.broker.next_store_id)
    if span is None:
        return found, None, True
    assert runtime.writer is not None
    rows: list[tuple[int, Message]] = []
    after, complete = span.after, True
    looked = len(found)
    while True:
        chunk = await runtime.writer.in_thread(runtime.store.read_backlog, queue, after, span.below, READ_CHUNK)
        rows.extend(chunk)
        looked += len(chunk)
        if len(chunk) < READ_CHUNK:
            break
        after = chunk[-1][0]
        if looked >= MAX_SCAN:
            complete = False
            break
    found.extend(item for item in merge_backlog(span, rows) if matches(item.message))
    return found, span.epoch, complete


async def browse(runtime: Runtime, queue: str, wanted: Mapping[str, Any] | None, offset: int, limit: int) -> dict[str, Any]:
    if not 0 < limit <= MAX_PAGE or offset < 0:
        raise BrokerError(f"limit must be 1 to {MAX_PAGE} and offset at least 0",
                          fields={"limit": [f"1 to {MAX_PAGE}"]})
    found, _, complete = await scan(runtime, queue, wanted)
    page = found[offset : offset + limit]
    return {
        "count": len(found),
        "complete": complete,
        "offset": offset,
        "messages": [
            {"id": item.key, "state": "unacked" if item.unacked else "ready",
             **message_object(item.message, redelivered=item.redelivered)}
            for item in page
        ],
    }


def origin_of(message: Message) -> tuple[str, str] | None:
    """Where a dead-lettered message came from: the exchange and routing key the broker
    recorded when it dead-lettered it. Not its `x-death` header, which a publisher may have
    written to have a replay publish where it could not (docs/protocol.md, "Message browser")."""
    return message.origin


async def origins(runtime: Runtime, queue: str, ids: list[str] | None, wanted: Mapping[str, Any] | None) -> list[str]:
    """The exchanges a replay of these messages would publish to (for the caller's
    permission check)."""
    selection = await _selection(runtime, queue, ids, wanted)
    return sorted({where[0] for item in selection[0] if (where := origin_of(item.message)) is not None})


async def act(
    runtime: Runtime,
    queue: str,
    action: str,
    *,
    ids: list[str] | None,
    wanted: Mapping[str, Any] | None,
    exchange: str = "",
    routing_key: str = "",
    allowed: list[str] | None = None,
) -> dict[str, int | bool]:
    """Carry out `action` on the selected ready messages (`ids`, or every one that matches
    `wanted`); counts of what was done, and `complete`: false when the queue was longer
    than MAX_SCAN messages and only those looked at were selected."""
    check_browser_action(action)
    if action in ("move", "copy") and not runtime.broker.has_exchange(exchange):
        raise NotFound(f"exchange {exchange!r} does not exist")
    target: Callable[[Message], tuple[str, str] | None] | None = None
    if action in ("move", "copy"):
        target = lambda message: (exchange, routing_key)  # noqa: E731
    elif action == "replay":
        permitted = None if allowed is None else set(allowed)

        def target(message: Message) -> tuple[str, str] | None:
            where = origin_of(message)
            return where if where is not None and (permitted is None or where[0] in permitted) else None

    selection, epoch, unacked, complete = await _selection(runtime, queue, ids, wanted)
    totals = {"taken": 0, "skipped": unacked, "routed": 0}
    assert runtime.writer is not None
    for start in range(0, len(selection), BATCH):
        batch = [(item.key, item.message) for item in selection[start : start + BATCH]]
        if queue not in runtime.broker.queues:
            totals["skipped"] += len(selection) - start
            break
        done = runtime.relocate(queue, batch, epoch=epoch, target=target, keep=action == "copy")
        if not await runtime.writer.flush():  # this batch's copies and deletes: one commit
            raise Unavailable(f"the message store is unavailable; {totals['taken']} message(s) were done first")
        totals["taken"] += done.taken
        totals["skipped"] += done.skipped
        totals["routed"] += done.routed
    log.info("%s on queue %r: %d message(s) taken, %d skipped, %d queue(s) reached%s",
             action, queue, totals["taken"], totals["skipped"], totals["routed"],
             "" if complete else f" (the first {MAX_SCAN:,} messages looked at)")
    return {**totals, "complete": complete}


async def _selection(
    runtime: Runtime, queue: str, ids: list[str] | None, wanted: Mapping[str, Any] | None
) -> tuple[list[Listed], int | None, int, bool]:
    """The ready messages an action takes, the backlog's epoch, how many selected ones are
    unacknowledged (left to their subscriber), and whether the whole queue was looked at."""
    if ids is None and wanted is None:
        raise BrokerError("give `ids` (the messages selected) or `filter` with `all: true`",
                          fields={"ids": ["ids or all matching"]})
    keys = None if ids is None else set(refuse_unknown_keys(ids))
    found, epoch, complete = await scan(runtime, queue, wanted if keys is None else None)
    chosen = [item for item in found if keys is None or item.key in keys]
    unacked = sum(1 for item in chosen if item.unacked)
    missing = 0 if keys is None else len(keys) - len(chosen)
    return [item for item in chosen if not item.unacked], epoch, unacked + missing, complete
