"""Group commit: the one writer of stored messages.

Publishers hand their copies to `append` and await the returned future, one
per commit; the writer takes everything pending, writes it in one
transaction, resolves that future, and repeats. Deletes (acks, drops,
purges) ride along with the next commit, and at least every checkpoint.

It owns a single database thread, so the ORM connection it uses is kept
between commits and writes never interleave. Under load that thread goes on
from one commit to the next by itself: it takes what was appended meanwhile
and writes it at once, and the event loop only hears of each commit. (Handed
back to the loop after each commit, the next one waited for half a dozen turns
of a busy loop: the thread sat idle longer than it wrote.) Imports no Django:
the store passed in does the ORM work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Protocol

from broker.engine.errors import Unavailable
from broker.engine.messages import BacklogRows, StoredCopy

from .metrics import COMMIT_MESSAGES, COMMIT_SECONDS
from .store_watch import StoreWatch
from .timeouts import within

log = logging.getLogger("broker.writer")

# After a failed commit the writer waits this long before it tries again.
RETRY_SECONDS: Final = 0.5


class MessageStore(Protocol):
    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        """Delete the queues, insert, then delete, in one transaction."""

    def close(self) -> None:
        """Release the calling thread's database connection."""

    def ping(self) -> None:
        """Ask the database something trivial; raises when it does not answer."""

    def refused(self, error: BaseException) -> bool:
        """Did the database refuse the data itself (it would again), rather than fail to answer?"""

    def find_refused(self, inserts: Sequence[StoredCopy]) -> list[int]:
        """The store ids among `inserts` that the database refuses; writes nothing."""

    def stored_copies(self, store_ids: Sequence[int]) -> list[int]:
        """Those of these store ids that are stored."""

    def delete_backlogs(self, backlogs: Sequence[BacklogRows]) -> None:
        """Delete the stored copies of purged backlogs, in a transaction of its own."""


@dataclass(slots=True)
class _Commit:
    """What one commit writes, taken from the pending lists at once."""

    inserts: list[StoredCopy]
    deletes: list[int]
    queues: list[int]
    batch: asyncio.Future[None] | None  # its publishers' future
    mark: int  # the appends it holds: durable once it is committed

    @property
    def writes(self) -> bool:
        return bool(self.inserts or self.deletes or self.queues)


class GroupCommitWriter:
    def __init__(
        self,
        store: MessageStore,
        *,
        checkpoint_seconds: float,
        on_refused: Callable[[Sequence[StoredCopy], int], None] | None = None,
        on_left_out: Callable[[set[int]], None] | None = None,
        watch: StoreWatch | None = None,
    ) -> None:
        """`on_refused(copies, mark)`: a commit of these copies failed; they are retried, and
        committed once `durable` reaches `mark`. `on_left_out(store_ids)`: the database
        refuses these copies for good, so they are left out of their commit and never
        stored; told before that commit counts as durable. `watch` hears whether each
        write reached the database."""
        self._store = store
        self._watch = watch
        self._on_refused = on_refused
        self._on_left_out = on_left_out
        self._checkpoint = checkpoint_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-store")
        # The pending lists (and `appended`) are taken by the database thread between
        # commits: changed and taken under this lock.
        self._lock = threading.Lock()
        self._calls_waiting = 0  # `in_thread` calls queued behind a run of commits
        self._closing = False  # a run of commits ends after its current one
        self._inserts: list[StoredCopy] = []
        # One future per commit, shared by everything appended for it.
        self._batch: asyncio.Future[None] | None = None
        self._deletes: list[int] = []
        self._queues_to_delete: list[int] = []
        # On the loop: the queue rows given to `delete_queues`, until a commit has deleted them,
        # and who waits for that commit (`queue_row_deleted`).
        self._deleting_queues: set[int] = set()
        self._deleted_waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._backlogs: list[tuple[int, BacklogRows]] = []  # (the appends before it, rows)
        # Store ids of copies in a commit that failed: it may have landed (its answer lost), so
        # a delete of one is written even when its insert is left out (`_pruned`). Until a
        # commit with its insert or its delete lands.
        self._tried: set[int] = set()
        self._wake = asyncio.Event()
        self._inflight: asyncio.Future[bool] | None = None
        self.commits = 0
        # Appends so far, and how many of them are committed (or refused for good): a mark
        # taken after an append is durable once `durable` reaches it, retries included.
        self.appended = 0
        self.durable = 0
        self._durable_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def in_thread(self, fn: Any, *args: Any) -> Any:
        """Run ORM work on the writer's thread, after what is queued there (a run of
        commits ends after its current one)."""
        with self._lock:
            self._calls_waiting += 1

        def call() -> Any:
            self._call_left()
            return fn(*args)

        try:
            queued = self._executor.submit(call)
        except BaseException:  # the writer is closed
            self._call_left()
            raise
        # A call cancelled before it ran (its caller timed out) waits no more either.
        queued.add_done_callback(lambda done: self._call_left() if done.cancelled() else None)
        return await asyncio.wrap_future(queued)

    def _call_left(self) -> None:
        with self._lock:
            self._calls_waiting -= 1

    def append(self, copies: Sequence[StoredCopy]) -> asyncio.Future[None]:
        """Queue copies for the next commit; the future resolves once they are committed.
        Copies appended for the same commit share one future: one per commit, not per message."""
        with self._lock:
            self._inserts.extend(copies)
            self.appended += 1
            batch = self._batch
            if batch is None:
                batch = self._batch = asyncio.get_running_loop().create_future()
                # Publishers await it; for other effects (acks, dead letters) nobody does, and a
                # failure is logged here rather than as "exception never retrieved".
                batch.add_done_callback(_retrieve)
        self._wake.set()
        return batch

    def when_durable(self, mark: int) -> asyncio.Future[None]:
        """A future that resolves once every copy appended up to `mark` is committed. Unlike
        a commit's own future it never fails: copies of a failed commit are retried."""
        waiter = asyncio.get_running_loop().create_future()
        if mark <= self.durable:
            waiter.set_result(None)
        else:
            self._durable_waiters.append((mark, waiter))
        return waiter

    def _advance(self, mark: int) -> None:
        self.durable = max(self.durable, mark)
        waiters = self._durable_waiters
        while waiters and waiters[0][0] <= self.durable:
            waiter = waiters.popleft()[1]
            if not waiter.done():
                waiter.set_result(None)

    def delete(self, store_ids: Sequence[int]) -> None:
        # No wake-up: deletes wait for the next commit or the checkpoint.
        with self._lock:
            self._deletes.extend(store_ids)

    def delete_queues(self, row_ids: Sequence[int]) -> None:
        """Delete stored queue definitions by row (their messages go with them)."""
        with self._lock:
            self._queues_to_delete.extend(row_ids)
        self._deleting_queues.update(row_ids)
        self._wake.set()

    def queue_row_deleted(self, row_id: int) -> asyncio.Future[None] | None:
        """A future resolved once the commit that deletes this queue row lands; None when the
        row was not given to `delete_queues`, or is deleted already."""
        if row_id not in self._deleting_queues:
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._deleted_waiters.setdefault(row_id, []).append(waiter)
        return waiter

    def delete_backlogs(self, backlogs: Sequence[BacklogRows]) -> None:
        """Delete purged backlogs' rows, after the commit of every copy appended before (and
        before that commit counts as durable)."""
        with self._lock:
            self._backlogs.extend((self.appended, rows) for rows in backlogs)
        self._wake.set()

    async def run(self) -> None:
        """Commit whenever there is something to insert; flush deletes every checkpoint."""
        loop = asyncio.get_running_loop()
        next_checkpoint = loop.time() + self._checkpoint
        while True:
            if not self._wake.is_set():  # set: on at once, without a turn of the loop
                try:
                    await within(self._wake.wait(), max(0.0, next_checkpoint - loop.time()))
                except TimeoutError:
                    pass
            self._wake.clear()
            # `_batch` alone: a publish sent again after a refusal waits on the next commit,
            # with nothing of its own to write (`Runtime.publish_nowait`).
            if (
                loop.time() >= next_checkpoint
                or self._inserts
                or self._queues_to_delete
                or self._backlogs
                or self._batch is not None
            ):
                if not await self.flush():
                    # The database is away: retry soon, not in a tight loop.
                    await asyncio.sleep(RETRY_SECONDS)
                    self._wake.set()
                if loop.time() >= next_checkpoint:
                    next_checkpoint = loop.time() + self._checkpoint

    async def flush(self) -> bool:
        """Everything pending committed; False when that failed (kept for a retry).

        The commit runs as a task of its own: cancelling the caller (shutdown) does
        not abandon a commit half-way, and `close` waits for it."""
        # A commit under way may have taken what was pending before this call's data
        # arrived: after it, one of this call's own (one commit at a time: `durable` moves
        # in order).
        while self._inflight is not None and not self._inflight.done():
            with contextlib.suppress(Exception):  # its failure is its caller's to hear
                await asyncio.shield(self._inflight)
        self._inflight = asyncio.ensure_future(self._commit())
        return await asyncio.shield(self._inflight)

    def _take_more(self) -> _Commit | None:
        """In the database thread, after a commit: `_take`, or None when nothing is left to
        insert, other work waits for the thread, or the writer is closing."""
        with self._lock:
            if self._calls_waiting or self._closing or not (self._inserts or self._queues_to_delete):
                return None
            return _pruned(self._pending(), self._tried)

    def _take(self) -> _Commit:
        """Everything pending, for one commit (from either thread)."""
        with self._lock:
            return _pruned(self._pending(), self._tried)

    def _pending(self) -> _Commit:
        """Under the lock."""
        taken = _Commit(self._inserts, self._deletes, self._queues_to_delete, self._batch, self.appended)
        self._inserts, self._deletes, self._queues_to_delete, self._batch = [], [], [], None
        return taken

    def _put_back(self, taken: _Commit) -> None:
        """A failed commit's writes, to be retried first (after a newer append's)."""
        with self._lock:
            self._inserts[:0] = taken.inserts
            self._deletes[:0] = taken.deletes
            self._queues_to_delete[:0] = taken.queues
            self._tried.update(copy.store_id for copy in taken.inserts)

    def _write_on(self, loop: asyncio.AbstractEventLoop, taken: _Commit | None) -> tuple[_Commit, Exception] | None:
        """In the database thread: commit `taken`, then what was appended meanwhile, and so
        on (`_take_more`). Each commit is reported to the loop as it lands; the
        first that fails is returned."""
        while taken is not None:
            try:
                seconds = self._write_one(taken)
            except Exception as error:
                return taken, error
            loop.call_soon_threadsafe(self._written, taken, seconds)
            taken = self._take_more()
        return None

    def _write_one(self, taken: _Commit) -> float | None:
        """In the database thread: one commit, then the backlogs purged before it; the
        commit's time (None: nothing of it needed writing)."""
        seconds = None
        if taken.writes:
            started = time.perf_counter()
            self._store.write(taken.inserts, taken.deletes, taken.queues)
            seconds = time.perf_counter() - started
            if self._tried:
                with self._lock:
                    self._tried.difference_update(copy.store_id for copy in taken.inserts)
                    self._tried.difference_update(taken.deletes)
        self._delete_purged(taken.mark)
        return seconds

    def _delete_purged(self, mark: int) -> None:
        """In the database thread: the rows of backlogs purged before the appends up to
        `mark`, which are committed (a failure is logged; they are tried again later)."""
        with self._lock:
            ready = [entry for entry in self._backlogs if entry[0] <= mark]
            if not ready:
                return
            self._backlogs = [entry for entry in self._backlogs if entry[0] > mark]
        try:
            self._store.delete_backlogs([rows for _, rows in ready])
        except Exception as error:
            log.error("deleting a purged backlog failed: %s", error)
            with self._lock:
                self._backlogs[:0] = ready

    def _written(self, taken: _Commit, seconds: float | None, refused: int = 0) -> None:
        """On the loop: a commit landed (`seconds` None: nothing of it needed writing), without
        `refused` copies the database refused."""
        self._deleting_queues.difference_update(taken.queues)
        for row_id in taken.queues:
            for waiter in self._deleted_waiters.pop(row_id, ()):
                if not waiter.done():
                    waiter.set_result(None)
        if seconds is not None:
            COMMIT_SECONDS.observe(seconds)
            COMMIT_MESSAGES.observe(len(taken.inserts))
            if self._watch is not None:
                self._watch.answered()
            self.commits += 1
        self._landed(taken, refused)

    def _landed(self, taken: _Commit, refused: int = 0) -> None:
        self._advance(taken.mark)
        batch = taken.batch
        if batch is not None and not batch.done():
            if refused:
                # Which publisher sent the refused copies is not known here: none of this
                # commit's is confirmed; the others are stored (at-least-once if re-sent).
                batch.set_exception(Unavailable(f"the message store refused {refused} message(s) of this commit"))
            else:
                batch.set_result(None)

    async def _commit(self) -> bool:
        """True when what was pending as it began is committed (a later commit of the same
        run may have failed: kept for a retry, as any failed commit)."""
        first = self._take()
        if not first.writes and not self._backlogs:
            self._landed(first)
            return True
        loop = asyncio.get_running_loop()
        try:
            failed = await loop.run_in_executor(self._executor, self._write_on, loop, first)
        except Exception as not_sent:  # not the database's (its errors come back in `failed`): closed
            return await self._recover(first, not_sent)
        if failed is None:
            return True
        taken, error = failed
        return await self._recover(taken, error) or taken is not first

    async def _recover(self, taken: _Commit, error: Exception) -> bool:
        """A commit failed: without the copies the database refuses, if that was why, it is
        written again now; otherwise everything is kept for a retry. False when it failed."""
        self._heard(error)
        inserts = taken.inserts
        if inserts and self._store.refused(error):
            # Retried as it is, the batch would be refused for ever and hold up every
            # later commit: leave out the copies the database refuses (they stay in
            # memory, unconfirmed), and commit the rest now.
            inserts, left_out = await self._without_refused(inserts, error)
            if len(inserts) < len(taken.inserts):
                refused_count = len(left_out)
                taken.inserts = inserts
                with self._lock:
                    self._tried.difference_update(left_out)  # never written: nothing to delete
                if left_out and self._on_left_out is not None:
                    # Before the rest is committed and counts as durable: a delivery held
                    # for that commit must not go out naming a row that will never exist.
                    self._on_left_out(left_out)
                try:
                    seconds = await self.in_thread(self._write_one, taken)
                except Exception as again:
                    self._heard(again)
                    error = again
                else:
                    self._written(taken, seconds, refused_count)
                    return True
        log.error("commit of %d messages failed: %s", len(taken.inserts), error)
        # Everything is retried, inserts too: the engine holds these copies, and a
        # delete retried without its paired insert (a dead-lettered copy) would lose it.
        self._put_back(taken)
        if taken.inserts and self._on_refused is not None:
            self._on_refused(taken.inserts, self.appended)
        failure = Unavailable(f"the message store is unavailable: {type(error).__name__}")
        if taken.batch is not None and not taken.batch.done():
            taken.batch.set_exception(failure)
        return False

    def _heard(self, error: Exception) -> None:
        if self._watch is not None:
            if self._store.refused(error):
                self._watch.answered()  # it answered: with a refusal of the data
            else:
                self._watch.failed(error)

    async def _without_refused(self, inserts: list[StoredCopy], error: Exception) -> tuple[list[StoredCopy], set[int]]:
        """The copies still to write, and the store ids of those the database refuses (none
        when that could not be found out: everything is then retried as it is).

        A copy refused because its row is there already was stored by an earlier commit
        whose answer was lost (the connection dropped at COMMIT): that commit landed whole,
        so the copy is neither written again nor refused."""
        try:
            refused = set(await self.in_thread(self._store.find_refused, inserts))
            stored = set(await self.in_thread(self._store.stored_copies, sorted(refused))) if refused else set()
        except Exception:  # the database went away meanwhile: an ordinary retry
            log.exception("looking for the refused messages failed")
            return inserts, set()
        refused -= stored
        kept = [copy for copy in inserts if copy.store_id not in refused and copy.store_id not in stored]
        for copy in inserts:
            if copy.store_id in refused:
                log.error(
                    "the database refused message %s for queue %s (%s): kept in memory only, never confirmed",
                    copy.message.message_id, copy.queue, error,
                )
        return kept, refused

    async def close(self) -> None:
        """Commit what is pending, then release the thread and its connection."""
        self._closing = True
        try:
            await self.flush()
            await self.in_thread(self._store.close)
        finally:
            self._executor.shutdown(wait=False)


def _pruned(taken: _Commit, tried: set[int]) -> _Commit:
    """A copy acknowledged before it was ever written needs neither write; one `tried` (in a
    commit that failed, and may have landed) needs its delete."""
    if taken.deletes and taken.inserts:
        both = {copy.store_id for copy in taken.inserts}.intersection(taken.deletes)
        if both:
            taken.inserts = [copy for copy in taken.inserts if copy.store_id not in both]
            taken.deletes = [store_id for store_id in taken.deletes if store_id not in both or store_id in tried]
    return taken


def _retrieve(waiter: asyncio.Future[None]) -> None:
    if not waiter.cancelled():
        waiter.exception()
