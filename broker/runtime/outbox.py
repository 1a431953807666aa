"""The outbox reader: the router's side of publishing from Django code (docs/outbox.md).

Django code writes a message to the outbox table in its own transaction. The
reader, woken when such a transaction commits (the store's `OutboxSignal`:
PostgreSQL's NOTIFY, SQLite's data version; in the router's own process, a
call from the committing thread), takes the rows in order, routes each in the
engine without enqueuing it (`Broker.plan`), stores the durable copies and
removes the rows in one transaction of its own, and only then enqueues and
delivers them. A router that dies before that commit leaves the rows for the
next one, and no subscriber saw them: each row is routed exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from broker.engine.broker import Planned
from broker.engine.messages import Message, StoredCopy

log = logging.getLogger("broker.outbox")

# Rows routed per transaction: a burst of commits drains in few round trips.
BATCH_ROWS: Final = 1000
# Without a signal (a lost notification, a database restarted) the reader still looks this often.
POLL_SECONDS: Final = 1.0
# After a failed drain (the database is away) the reader tries again this soon.
RETRY_SECONDS: Final = 0.5


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox row: its message, or why it cannot be routed (a row of a program that
    broke the table's contract); such a row is removed and logged, never delivered."""

    row_id: int
    message: Message | None
    problem: str = ""


class OutboxSignal(Protocol):
    async def wait(self, timeout: float) -> None:
        """Return once a transaction may have committed outbox rows, or after `timeout`."""

    async def close(self) -> None: ...


class OutboxStore(Protocol):
    def read_outbox(self, limit: int) -> list[OutboxEntry]:
        """The first `limit` rows, in order."""

    def drain_outbox(self, inserts: Sequence[StoredCopy], outbox_ids: Sequence[int]) -> None:
        """Insert the copies and delete the rows, in one transaction."""

    def refused(self, error: BaseException) -> bool:
        """Did the database refuse the data itself (it would again), rather than fail to answer?"""

    async def outbox_signal(self) -> OutboxSignal: ...

    def outbox_state(self) -> tuple[int, float | None]:
        """(rows waiting, how long the oldest has waited in seconds or None)."""


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
        `publish` are the engine's two steps of a publish (Broker.plan, publish_planned)."""
        self._store = store
        self._in_thread = in_thread
        self._plan = plan
        self._publish = publish
        self._has_exchange = has_exchange
        self._poked = asyncio.Event()
        self.drained = 0  # rows routed so far, a running total

    def poke(self) -> None:
        """Rows were committed in this process: look now (on the router's loop)."""
        self._poked.set()

    async def run(self) -> None:
        signal = await self._store.outbox_signal()
        try:
            while True:
                try:
                    while await self._drain_once():
                        pass
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("reading the outbox failed; trying again")
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                await self._wait(signal)
        finally:
            await signal.close()

    async def _wait(self, signal: OutboxSignal) -> None:
        if self._poked.is_set():
            self._poked.clear()
            return
        waits = {asyncio.ensure_future(self._poked.wait()), asyncio.ensure_future(signal.wait(POLL_SECONDS))}
        try:
            await asyncio.wait(waits, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        self._poked.clear()

    async def _drain_once(self) -> bool:
        """Route one batch of rows; False when the outbox was empty."""
        entries: list[OutboxEntry] = await self._in_thread(self._store.read_outbox, BATCH_ROWS)
        if not entries:
            return False
        routed: list[tuple[int, Planned | None]] = []  # (row, its plan; None: removed unrouted)
        for entry in entries:
            if entry.message is None:
                log.error("outbox row %d cannot be routed (%s): removed", entry.row_id, entry.problem)
                routed.append((entry.row_id, None))
                continue
            plan = self._plan(entry.message)
            if not plan.targets and not self._has_exchange(entry.message.exchange):
                log.warning(
                    "outbox row %d names exchange %r, which does not exist: routed nowhere",
                    entry.row_id, entry.message.exchange,
                )
            routed.append((entry.row_id, plan))
        row_ids = [row_id for row_id, _ in routed]
        while True:
            copies = [copy for _, plan in routed if plan is not None for copy in plan.copies]
            try:
                await self._in_thread(self._store.drain_outbox, copies, row_ids)
                break
            except Exception as error:
                if self._store.refused(error):
                    # The database refuses a row's data (it would again): one at a time, so that
                    # one row cannot hold up the outbox for good.
                    routed = await self._drain_one_by_one(routed)
                    break
                # The database is away: the rows wait, and so do their copies.
                log.error("storing %d outbox messages failed (%s); trying again", len(row_ids), error)
                await asyncio.sleep(RETRY_SECONDS)
        for _, routed_plan in routed:
            if routed_plan is not None:
                self._publish(routed_plan)
        self.drained += len(row_ids)
        return True

    async def _drain_one_by_one(self, routed: list[tuple[int, Planned | None]]) -> list[tuple[int, Planned | None]]:
        kept: list[tuple[int, Planned | None]] = []
        for row_id, plan in routed:
            try:
                await self._in_thread(self._store.drain_outbox, [] if plan is None else plan.copies, [row_id])
                kept.append((row_id, plan))
            except Exception as error:
                if not self._store.refused(error):
                    raise  # away after all: the caller's loop tries the rest again
                log.error("the database refuses outbox row %d (%s): removed, not delivered", row_id, error)
                await self._in_thread(self._store.drain_outbox, [], [row_id])
                kept.append((row_id, None))
        return kept
