"""The outbox reader: the router's side of publishing from Django code (docs/outbox.md).

Django code writes a message to the outbox table in its own transaction. The
reader, woken when such a transaction commits (the store's `OutboxSignal`:
PostgreSQL's NOTIFY, SQLite's data version; in the router's own process, a
call from the committing thread), takes the rows in order (from the table, or
from the notification when it carries them), routes each in the engine without
enqueuing it (`Broker.plan`), removes the rows still there and stores their
durable copies in one transaction of its own, and only then enqueues and
delivers the rows it removed. A router that dies before that commit leaves the
rows for the next one, and no subscriber saw them; a row read and notified too
is removed once: each row is routed exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from broker.engine.broker import Planned
from broker.engine.messages import Message, StoredCopy

from . import memory

log = logging.getLogger("broker.outbox")

# Rows routed per transaction: a burst of commits drains in few round trips.
BATCH_ROWS: Final = 1000
# Without a signal (a lost notification, a database restarted) the reader still looks this often.
POLL_SECONDS: Final = 1.0
# After a failed drain (the database is away) the reader tries again this soon.
RETRY_SECONDS: Final = 0.5
# Rows routed lately from reads of the table that the reader remembers, to tell after a drain
# whose answer was lost whether it removed a row without durable copies (`_removed_unheard`).
RECENT_ROWS: Final = 20 * BATCH_ROWS


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox row: its message, or why it cannot be routed (a row of a program that
    broke the table's contract); such a row is removed and logged, never delivered."""

    row_id: int
    message: Message | None
    problem: str = ""


# An outbox row to remove, by id, and the durable copies to store if it is still there.
OutboxDrain = tuple[int, Sequence[StoredCopy]]


class OutboxSignal(Protocol):
    # Does the signal hear every commit of outbox rows, the router's own process's too?
    # Then the calls from the committing thread (`poke`) add nothing.
    hears_every_commit: bool

    async def wait(self, timeout: float) -> list[OutboxEntry] | None:
        """Return once a transaction may have committed outbox rows, or after `timeout`:
        the rows those transactions wrote when the signal carried them all (they may have
        been routed already), None when the table is to be read."""

    async def close(self) -> None: ...


class OutboxStore(Protocol):
    def read_outbox(self, limit: int) -> list[OutboxEntry]:
        """The first `limit` rows, in order."""

    def drain_outbox(self, rows: Sequence[OutboxDrain]) -> list[int]:
        """Remove those of the rows still there and store their copies, in one transaction;
        the ids removed."""

    def refused(self, error: BaseException) -> bool:
        """Did the database refuse the data itself (it would again), rather than fail to answer?"""

    async def outbox_signal(self) -> OutboxSignal: ...

    def outbox_state(self) -> tuple[int, float | None]:
        """(rows waiting, how long the oldest has waited in seconds or None)."""

    def stored_copies(self, store_ids: Sequence[int]) -> list[int]:
        """Those of these store ids that are stored."""


class OutboxReader:
    def __init__(
        self,
        store: OutboxStore,
        *,
        in_thread: Callable[..., Awaitable[Any]],
        plan: Callable[[Message], Planned],
        publish: Callable[[Planned], None],
        has_exchange: Callable[[str], bool],
    ) -> None:
        """`in_thread` runs the store's calls on the writer's database thread; `plan` and
        `publish` are the engine's two steps of a publish (Broker.plan, publish_planned).

        The drain must go through that thread, not a connection of the loop's own: the
        thread answers in order, so a backlog read that sees a drained copy is answered
        after its publish (the engine has counted it), and a queue's deletion or purge
        never commits beside a drain that stores into it. (Draining on the notification's
        connection was tried: it saved a tenth of the router's CPU per message at 1,000
        a second, and delivered a copy twice when a backlog read overtook its publish.)"""
        self._store = store
        self._in_thread = in_thread
        self._plan = plan
        self._publish = publish
        self._has_exchange = has_exchange
        self._poked = asyncio.Event()
        self.drained = 0  # rows routed so far, a running total
        self._recent = _RecentIds(RECENT_ROWS)

    def poke(self) -> None:
        """Rows were committed in this process: look now (on the router's loop)."""
        self._poked.set()

    async def run(self) -> None:
        signal = await self._store.outbox_signal()
        try:
            notified: list[OutboxEntry] | None = None  # None: read the table
            while True:
                try:
                    if notified is None:
                        while await self._drain_once():
                            pass
                    else:
                        await self._route(notified)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("reading the outbox failed; trying again")
                    await asyncio.sleep(RETRY_SECONDS)
                    notified = None
                    continue
                notified = await self._wait(signal)
        finally:
            await signal.close()

    async def _wait(self, signal: OutboxSignal) -> list[OutboxEntry] | None:
        if signal.hears_every_commit:
            self._poked.clear()
            return await signal.wait(POLL_SECONDS)
        if self._poked.is_set():
            self._poked.clear()
            return None
        poked = asyncio.ensure_future(self._poked.wait())
        signalled = asyncio.ensure_future(signal.wait(POLL_SECONDS))
        try:
            await asyncio.wait((poked, signalled), timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poked.cancel()
            signalled.cancel()
        self._poked.clear()
        # Woken by the signal, it says what to read; by a poke (or neither), the table.
        return signalled.result() if signalled.done() and not signalled.cancelled() else None

    async def _drain_once(self) -> bool:
        """Route one batch of rows read from the table; False when it was empty."""
        entries: list[OutboxEntry] = await self._in_thread(self._store.read_outbox, BATCH_ROWS)
        if not entries:
            return False
        await self._route(entries, read=True)
        return True

    async def _route(self, entries: list[OutboxEntry], *, read: bool = False) -> None:
        """Plan the rows, remove those still there with their copies stored, then enqueue those.
        Over the memory limit, the rows wait in the table until memory falls. `read`: the rows
        were read from the table (they may be notified again; notified ones are not read again,
        being gone)."""
        guard = memory.guard()
        if guard is not None and guard.alarm:
            log.info("outbox: %d messages wait in the table while memory is over its limit", len(entries))
            await guard.wait_clear()
        routed: list[tuple[OutboxEntry, Planned | None]] = [
            (entry, None if entry.message is None else self._plan(entry.message)) for entry in entries
        ]
        unheard = False  # a drain failed without an answer: it may have committed all the same
        while True:
            try:
                removed = set(
                    await self._in_thread(
                        self._store.drain_outbox, [(entry.row_id, _copies(plan)) for entry, plan in routed]
                    )
                )
                break
            except Exception as error:
                if self._store.refused(error):
                    # The database refuses a row's data (it would again): one at a time, so that
                    # one row cannot hold up the outbox for good.
                    routed, removed = await self._drain_one_by_one(routed)
                    break
                # The database is away: the rows wait, and so do their copies.
                log.error("storing %d outbox messages failed (%s); trying again", len(routed), error)
                unheard = True
                await asyncio.sleep(RETRY_SECONDS)
        if unheard:
            removed |= await self._removed_unheard(routed, removed)
        for entry, plan in routed:
            if entry.row_id not in removed:
                continue  # routed already (read, then notified)
            self.drained += 1
            if read:
                self._recent.add(entry.row_id)
            if entry.message is None:
                log.error("outbox row %d cannot be routed (%s): removed", entry.row_id, entry.problem)
            elif plan is not None:
                if not plan.targets and not self._has_exchange(entry.message.exchange):
                    log.warning(
                        "outbox row %d names exchange %r, which does not exist: routed nowhere",
                        entry.row_id, entry.message.exchange,
                    )
                self._publish(plan)

    async def _removed_unheard(self, routed: list[tuple[OutboxEntry, Planned | None]], removed: set[int]) -> set[int]:
        """The rows that a failed drain removed after all: its commit landed, its answer did
        not (the connection dropped at COMMIT), and the drain that followed found them gone,
        as it finds rows routed before (read, then notified). Without this they were
        never enqueued: their copies stored, and delivered after a restart only.

        A row with durable copies was removed by the failed drain if any of them is stored:
        they are stored only with their row's removal, under store ids of this plan's own (a row
        whose queues were all deleted meanwhile, copies and all, is taken for one routed
        before). A row without was, unless this reader routed it from a read of the table in
        its last RECENT_ROWS: one routed longer ago and notified only now is routed again
        (at-least-once, as delivery is). Asked until the database answers: the rows the drain
        that followed removed wait for it, and are routed with these."""
        doubtful = [(entry, _copies(plan)) for entry, plan in routed if entry.row_id not in removed]
        store_ids = [copy.store_id for _, copies in doubtful for copy in copies]
        if not doubtful:
            return set()
        stored: set[int] = set()
        while store_ids:
            try:
                stored = set(await self._in_thread(self._store.stored_copies, store_ids))
                break
            except Exception as error:
                log.error("looking for the copies of %d outbox rows failed (%s); trying again", len(doubtful), error)
                await asyncio.sleep(RETRY_SECONDS)
        landed = {
            entry.row_id
            for entry, copies in doubtful
            if (any(copy.store_id in stored for copy in copies) if copies else entry.row_id not in self._recent)
        }
        if landed:
            log.warning("%d outbox rows were removed by a drain whose answer was lost: routed now", len(landed))
        return landed

    async def _drain_one_by_one(
        self, routed: list[tuple[OutboxEntry, Planned | None]]
    ) -> tuple[list[tuple[OutboxEntry, Planned | None]], set[int]]:
        kept: list[tuple[OutboxEntry, Planned | None]] = []
        removed: set[int] = set()
        for entry, plan in routed:
            try:
                removed.update(await self._in_thread(self._store.drain_outbox, [(entry.row_id, _copies(plan))]))
                kept.append((entry, plan))
            except Exception as error:
                if not self._store.refused(error):
                    raise  # away after all: the caller's loop tries the rest again
                log.error("the database refuses outbox row %d (%s): removed, not delivered", entry.row_id, error)
                removed.update(await self._in_thread(self._store.drain_outbox, [(entry.row_id, ())]))
                kept.append((entry, None))
        return kept, removed


def _copies(plan: Planned | None) -> Sequence[StoredCopy]:
    return () if plan is None else plan.copies


class _RecentIds:
    """The last `size` ids added, as a set."""

    def __init__(self, size: int) -> None:
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self._size = size

    def add(self, row_id: int) -> None:
        self._order.append(row_id)
        self._ids.add(row_id)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())

    def __contains__(self, row_id: int) -> bool:
        return row_id in self._ids
