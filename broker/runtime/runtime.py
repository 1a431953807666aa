"""The async shell around the engine: the router's state, its writer and timers.

One event loop owns the `Broker`: everything calls the runtime's methods on
that loop (broker/router/ brings other threads' calls there), so the engine
needs no locks. The runtime
carries out the engine's effects: commits through the group-commit writer,
frames to connections, deletes at the checkpoint.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final, Protocol

from broker.engine.broker import Broker, Planned, QueueCounts, Relocated
from broker.engine.errors import BrokerError, QueueFull, Unavailable
from broker.engine.jsoncodec import dumps
from broker.engine.messages import Delivery, Effects, InDoubt, LoadRequest, Message, make_message
from broker.engine.names import generated_queue_name
from broker.engine.queues import AckMode
from broker.protocol.publish import PublishRequest
from broker.protocol.server_frames import MessageObject, StatsHandler, StatsQueue, message_frame, message_object
from broker.protocol.topology import (
    BindingDeleted,
    BindingSaved,
    ExchangeDeleted,
    ExchangeSaved,
    QueueDeleted,
    QueueSaved,
    Topology,
    TopologyChange,
)
from broker.runtime.after_commit import AfterCommit
from broker.runtime.metrics import EngineMetrics
from broker.runtime.outbox import OutboxReader, OutboxStore
from broker.runtime.refused import RefusedPublishes
from broker.runtime.stamps import new_message_id, now_iso
from broker.runtime.stats import StatsSampler
from broker.runtime.store_watch import StoreWatch
from broker.runtime.topology_feed import TopologyFeed
from broker.runtime.writer import RETRY_SECONDS, GroupCommitWriter, MessageStore

from .timeouts import within

log = logging.getLogger("broker.runtime")

# A declaration of a queue the router deleted by itself waits this long at most for the
# writer's commit that deletes its row (Runtime.redeclared); longer than the writer waits
# for SQLite's lock, shorter than a router call's time limit.
REDECLARE_WAIT_SECONDS: Final = 25.0
# A transaction-ack consumer's copies in doubt wait this long before their rows are looked
# for again, while the database does not answer or a handler's transaction holds them.
IN_DOUBT_RETRY_SECONDS: Final = 0.5
# TTL and `expires` are checked this often; finer than users notice.
TICK_SECONDS: Final = 0.25
# A get reads on through a queue's backlog for at most this long (callers wait 30 s).
GET_WAIT_SECONDS: Final = 10.0
# Watchers (the web console) get counts and rates this often.
STATS_SECONDS: Final = 1.0


class DeliverySink(Protocol):
    """A client connection as the runtime sees it. One with an `encode_delivery(delivery)`
    method (a STOMP session) gets its deliveries encoded by it instead of as `message` frames."""

    def deliver(self, frames: list[str], counted: bool = False) -> None:
        """Send these frames, in order, without blocking; `counted` (router/interface.py)."""

    def cancelled(self, subscription: str, reason: str) -> None:
        """The broker ended this subscription (its queue went away)."""


class RuntimeStore(MessageStore, OutboxStore, Protocol):
    def drop_transient_queues(self) -> list[str]:
        """Delete the stored non-durable queues; their names."""

    def rows_in_doubt(self, store_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Of these copies' rows: those stored and free, and those a transaction under way
        holds (a handler's, which may yet delete them: look again later). Waits for no
        such transaction."""

    def load_topology(self) -> Topology: ...

    def message_counts(self) -> dict[str, int]:
        """Stored messages by queue name."""

    def read_backlog(self, queue: str, after: int, below: int, limit: int) -> list[tuple[int, Message]]:
        """Up to `limit` stored copies of `queue` with a store id above `after` and below
        `below`, in id order."""

    def max_store_id(self) -> int: ...

    def handler_state(self) -> list[StatsHandler]:
        """The handler processes running now, as they last reported (the `stats` frame)."""


class Runtime:
    def __init__(
        self,
        store: RuntimeStore,
        *,
        checkpoint_seconds: float,
        max_queues: int | None = None,
        max_bindings: int | None = None,
        max_private_queues: int | None = None,
        layer: Any = None,
        window: int | None = None,
        credit: int | None = None,
    ) -> None:
        """`layer`: the channel layer on which processes without a router send topology
        changes (storage/sync.py), or None. `max_queues`, `max_bindings`: MAX_QUEUES and
        MAX_BINDINGS for the private queues the router makes itself; None, no limit.
        `max_private_queues`: MAX_PRIVATE_QUEUES_PER_CONNECTION, those private queues one
        connection may hold at once; None, no limit.
        `window`: QUEUE_WINDOW, the messages of a durable queue kept in memory; None, all.
        `credit`: the bytes a connection's subscriptions to named queues may have delivered
        and not yet written (engine/queues.py, `Connection`); None, no such bound."""
        self.broker = Broker()
        self.broker.max_queues = max_queues
        self.broker.max_bindings = max_bindings
        self.broker.max_private_queues = max_private_queues
        self.broker.window = window
        self.broker.credit = credit
        self._set_wall_offset()
        self._feed = TopologyFeed(layer)
        self.store = store
        self.writer: GroupCommitWriter | None = None
        self._after_commit: AfterCommit | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._checkpoint_seconds = checkpoint_seconds
        self._sinks: dict[int, DeliverySink] = {}
        # Per connection, the credit each counted batch of frames sent to it took, until written.
        self._batches: dict[int, deque[int]] = {}
        self._encoders: dict[int, Callable[[Delivery], Any]] = {}  # connections with their own frames
        self._main: asyncio.Task[None] | None = None
        self.outbox: OutboxReader | None = None
        self._outbox_state: tuple[int, float | None] = (0, None)  # read while someone watches
        self._handler_state: list[StatsHandler] = []  # likewise
        self.loaded_messages = 0
        self.store_watch: StoreWatch | None = None  # from the start
        self._release_handle: asyncio.TimerHandle | None = None  # the soonest delayed message's
        self._release_at: float | None = None
        self.metrics = EngineMetrics()
        self._stopped = False
        self._stats = StatsSampler()
        self._watchers: set[int] = set()
        self._loads: set[asyncio.Task[None]] = set()
        self._window_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._refused = RefusedPublishes()

    # -- life cycle ------------------------------------------------------

    async def start(self) -> None:
        """Load topology and stored messages, then run the writer and the timer."""
        self.loop = asyncio.get_running_loop()
        self.store_watch = StoreWatch(self.loop.time)
        self.writer = GroupCommitWriter(
            self.store,
            checkpoint_seconds=self._checkpoint_seconds,
            on_refused=lambda copies, mark: self._refused.remember(copies, mark=mark, now=self._now()),
            on_left_out=self._never_stored,
            watch=self.store_watch,
        )
        self._after_commit = AfterCommit(self.writer, self._send, self._encode)
        started = time.monotonic()
        # Non-durable queues first: a change sent while the router starts is applied after
        # its load (topology_feed.py), never to a queue dropped after the change was sent.
        dropped: list[str] = await self.writer.in_thread(self.store.drop_transient_queues)
        if dropped:
            log.info("non-durable queues do not outlive a restart: dropped %s", ", ".join(sorted(dropped)))
        await self._feed.join()  # before the topology is read
        topology: Topology = await self.writer.in_thread(self.store.load_topology)
        self._load_topology(topology)
        top = await self.writer.in_thread(self.store.max_store_id)
        self.broker.next_store_id = max(self.broker.next_store_id, top + 1)
        self.broker.restored_below = top + 1
        self.loaded_messages = await self._restore_windows()
        log.info(
            "loaded %d exchanges, %d queues, %d bindings and %d stored messages (their windows) in %.2f s",
            len(topology.exchanges),
            len(topology.queues),
            len(topology.bindings),
            self.loaded_messages,
            time.monotonic() - started,
        )
        self.outbox = OutboxReader(
            self.store,
            in_thread=self.writer.in_thread,
            plan=self.broker.plan,
            publish=self.publish_planned,
            has_exchange=self.broker.has_exchange,
        )
        self._main = asyncio.create_task(self._run(), name="broker-router")

    async def _run(self) -> None:
        assert self.writer is not None and self.store_watch is not None
        async with asyncio.TaskGroup() as group:
            group.create_task(self.writer.run(), name="broker-writer")
            group.create_task(self._tick_forever(), name="broker-ticker")
            group.create_task(self._feed.listen(self.apply_change), name="broker-topology")
            if self.outbox is not None:
                group.create_task(self.outbox.run(), name="broker-outbox")
            group.create_task(self._sample_stats_forever(), name="broker-stats")
            group.create_task(self.store_watch.run(self._probe_store), name="broker-store-watch")

    async def stop(self) -> None:
        """Stop the timers, commit and checkpoint what is pending, release the store."""
        if self._stopped:
            return
        self._stopped = True
        if self._release_handle is not None:
            self._release_handle.cancel()
        if self._main is not None:
            self._main.cancel()
            try:
                await self._main
            except asyncio.CancelledError:
                pass
        for task in list(self._loads):
            task.cancel()
        if self.writer is not None:
            await self.writer.close()

    def _load_topology(self, topology: Topology) -> None:
        now = self._now()
        for exchange in topology.exchanges:
            self._guarded(self.broker.sync_exchange, exchange)
        for queue in topology.queues:
            self._guarded(self.broker.sync_queue, queue, now=now)
        for binding in topology.bindings:
            self._guarded(self.broker.bind, binding)

    async def _restore_windows(self) -> int:
        """Count each queue's stored messages and read its window; the rest stay in the
        database (its backlog) until consumers get to them. Returns the messages counted."""
        assert self.writer is not None
        counts: dict[str, int] = await self.writer.in_thread(self.store.message_counts)
        stored = 0
        # The cyclic collector would rescan the growing heap again and again while many
        # windows load; after the load, freezing keeps them out of every later full collection.
        gc.disable()
        try:
            for name, count in counts.items():
                if name not in self.broker.queues:
                    continue
                stored += count
                for request in self.broker.restore(name, count).to_load:
                    await self._load_window(request)
        finally:
            gc.freeze()
            gc.enable()
        return stored

    async def _load_window(self, request: LoadRequest) -> None:
        """Read a queue's next backlog rows once every copy stored so far is committed (a
        row is read only once it is there), and hand them to the engine. On the writer's
        thread: reads, commits and outbox drains are answered in the order they were made,
        so a row read is one the engine has counted. Tried again while the database is
        away, until the rows come or the queue is purged or gone."""
        assert self.writer is not None
        try:
            while True:
                queue = self.broker.queues.get(request.queue)
                if queue is None or queue.epoch != request.epoch:
                    return
                try:
                    await self.writer.when_durable(self.writer.appended)
                    rows = await self.writer.in_thread(
                        self.store.read_backlog, request.queue, request.after, request.below, request.limit
                    )
                    break
                except Exception as error:
                    log.error("reading the backlog of queue %s failed, trying again: %s", request.queue, error)
                    await asyncio.sleep(RETRY_SECONDS)
            self._apply(
                self.broker.load_window(request.queue, request.epoch, rows, now=self._now(), wall_now=time.time())
            )
            self._arm_release()  # a holding queue read at start: its soonest message's timer
        finally:
            for waiter in self._window_waiters.pop(request.queue, []):
                if not waiter.done():
                    waiter.set_result(None)

    @staticmethod
    def _guarded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Apply a stored definition; one the engine refuses is logged, not fatal."""
        try:
            return fn(*args, **kwargs)
        except BrokerError as error:
            log.error("stored topology refused: %s", error.message)
            return None

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self._set_wall_offset()
                self._apply(self.broker.tick(now=self._now()))
                self._arm_release()
            except Exception:
                log.exception("tick failed")

    async def _sample_stats_forever(self) -> None:
        while True:
            await asyncio.sleep(STATS_SECONDS)
            if not self._watchers:
                continue  # nobody looks: no snapshot of every queue
            await self._read_outbox_state()
            try:
                self._stats.sample(self.broker, now=self._now())
                frame = self._stats_frame()
                for connection_id in list(self._watchers):
                    self._send(connection_id, [frame])
            except Exception:
                log.exception("stats sampling failed")

    async def _read_outbox_state(self) -> None:
        """The outbox's depth for the `stats` frame; the last one known when the database
        is slow or away: the frame goes out every second all the same."""
        assert self.writer is not None
        try:
            self._outbox_state = await within(self.writer.in_thread(self.store.outbox_state), 0.5)
            self._handler_state = await within(self.writer.in_thread(self.store.handler_state), 0.5)
        except Exception as error:
            log.debug("the outbox's depth or the handlers are unknown for now: %r", error)

    def listed_queues(self) -> list[StatsQueue]:
        """The queues a `stats` frame lists now."""
        return self._stats.listed_queues(self.broker)

    def _stats_frame(self) -> str:
        frame = self._stats.frame(self.broker, at=now_iso(), outbox=self._outbox_state, handlers=self._handler_state)
        return dumps(frame)

    async def _probe_store(self) -> float:
        """`SELECT 1` on the writer's thread; the seconds it took there."""
        assert self.writer is not None

        def timed_ping() -> float:
            started = time.monotonic()
            self.store.ping()
            return time.monotonic() - started

        took: float = await self.writer.in_thread(timed_ping)
        return took

    def _set_wall_offset(self) -> None:
        """The engine's clock to the wall clock's (x-death's `time`), again at each tick: the
        wall clock may be set meanwhile, the monotonic one never is."""
        self.broker.wall_offset = time.time() - self._now()

    def _now(self) -> float:
        """The engine's clock: the monotonic clock the loop's timers use (`call_at`), read now.
        Not `loop.time()`, which uvloop reads once per turn of the loop (in milliseconds): a
        delayed message's time would count from before it arrived, and it would be early."""
        return time.monotonic()

    # -- effects ---------------------------------------------------------

    def _apply(self, effects: Effects) -> asyncio.Future[None] | None:
        """Carry out effects; the returned future resolves when `to_persist` is committed."""
        assert self.writer is not None
        committed = self.writer.append(effects.to_persist) if effects.to_persist else None
        if effects.deliveries:
            by_connection: dict[int, list[str]] = {}
            after_commit: dict[int, list[Delivery]] = {}  # encoded when sent (after_commit.py)
            costs: dict[int, int] = {}  # of the deliveries held back by credit, by connection
            encoders = self._encoders
            for delivery in effects.deliveries:
                if delivery.transaction:
                    after_commit.setdefault(delivery.connection, []).append(delivery)
                    continue
                encode = encoders.get(delivery.connection) if encoders else None  # STOMP's
                frame = message_frame(delivery) if encode is None else encode(delivery)
                by_connection.setdefault(delivery.connection, []).append(frame)
                if delivery.cost:
                    costs[delivery.connection] = costs.get(delivery.connection, 0) + delivery.cost
            for connection_id, frames in by_connection.items():
                self._send(connection_id, frames, costs.get(connection_id, 0))
            if after_commit:
                assert self._after_commit is not None
                self._after_commit.add(after_commit)
        for cancelled in effects.cancelled:
            sink = self._sinks.get(cancelled.connection)
            if sink is not None:
                sink.cancelled(cancelled.subscription, cancelled.reason)
        if effects.to_delete:
            self.writer.delete(effects.to_delete)
        if effects.deleted_rows:
            self.writer.delete_queues(effects.deleted_rows)
        if effects.backlog_deleted:
            self.writer.delete_backlogs(effects.backlog_deleted)
        for request in effects.to_load:
            task = asyncio.ensure_future(self._load_window(request))
            self._loads.add(task)
            task.add_done_callback(self._load_done)
        for doubt in effects.in_doubt:
            task = asyncio.ensure_future(self._settle_in_doubt(doubt))
            self._loads.add(task)
            task.add_done_callback(self._load_done)
        return committed

    async def _settle_in_doubt(self, doubt: InDoubt) -> None:
        """Look for the rows of the copies a transaction-ack consumer held when it went away
        (Broker.settle_in_doubt): those its transaction deleted were handled. While the
        database does not answer, the copies wait, and it looks again."""
        assert self.writer is not None
        # Not before the copies are committed: a copy delivered (its frame held back) just
        # before its consumer went away may still be on its way to the database.
        await self.writer.when_durable(self.writer.appended)
        waiting = list(doubt.store_ids)
        while waiting:
            try:
                stored, busy = await self.writer.in_thread(self.store.rows_in_doubt, waiting)
            except Exception as error:
                log.warning("looking for %d rows of queue %r failed (%s); trying again", len(waiting), doubt.queue, error)
                stored, busy = [], waiting
            held = set(busy)
            settled = [store_id for store_id in waiting if store_id not in held]
            if settled:
                self._apply(self.broker.settle_in_doubt(doubt.queue, settled, set(stored), now=self._now()))
            waiting = busy
            if waiting:
                await asyncio.sleep(IN_DOUBT_RETRY_SECONDS)

    def _encode(self, delivery: Delivery) -> str:
        """A delivery's frame, in its connection's protocol."""
        encode = self._encoders.get(delivery.connection)
        return message_frame(delivery) if encode is None else encode(delivery)

    def _never_stored(self, store_ids: set[int]) -> None:
        """The database refused these copies for good: they live in memory only from now on.
        No delivery may name their rows, which never existed: a transaction-ack consumer
        (a handler) would take a missing row for a message handled before and acknowledge
        it without handling it. Naming no row, they are handled at least once instead."""
        self.broker.unstore(store_ids)
        assert self._after_commit is not None
        self._after_commit.unstore(store_ids)
        self._refused.forget(store_ids)

    def _load_done(self, task: asyncio.Task[None]) -> None:
        self._loads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a backlog read (or a look for a gone consumer's rows) failed", exc_info=task.exception())

    def _send(self, connection_id: int, frames: list[str], cost: int = 0) -> None:
        """Frames to a connection; `cost`: the credit its deliveries took, given back when
        its transport says they are written (`written`)."""
        sink = self._sinks.get(connection_id)
        if sink is None:
            return
        if cost:
            self._batches[connection_id].append(cost)
            sink.deliver(frames, True)
        else:
            sink.deliver(frames)

    def written(self, connection_id: int, batches: int) -> None:
        """The connection's transport has written its next `batches` counted batches of
        frames (in the order they were sent): give their deliveries' credit back."""
        sent = self._batches.get(connection_id)
        if sent is None:
            return
        cost = 0
        for _ in range(min(batches, len(sent))):
            cost += sent.popleft()
        if cost:
            self._apply(self.broker.written(connection_id, cost, now=self._now()))

    # -- publishing and polling (on the loop) ----------------------------

    def publish_nowait(self, request: PublishRequest) -> tuple[str, int, asyncio.Future[None] | None]:
        """Route a message now; returns (message_id, routed, commit) where `commit`, when not
        None, resolves once every stored copy is committed (or fails with `unavailable`).
        Commits resolve in publish order, so confirms can be sent in order.

        A publish answered `unavailable` and sent again (same exchange and message id)
        is not routed twice: it gets the outcome of its copies' retried commit."""
        if self._refused and request.message_id is not None:
            again = self._refused.again(
                request.exchange, request.message_id, request.routing_key, request.body_json, now=self._now()
            )
            if again is not None:
                assert self.writer is not None
                mark, routed = again
                if mark <= self.writer.durable:
                    return request.message_id, routed, None
                return request.message_id, routed, self._confirmed_again(request.exchange, request.message_id)
        message = make_message(
            message_id=request.message_id or new_message_id(),
            exchange=request.exchange,
            routing_key=request.routing_key,
            body_json=request.body_json,
            headers=request.headers,
            persistent=request.persistent,
            published_at=now_iso(),
        )
        published = self.broker.publish(message, now=self._now())
        committed = self._apply(published.effects)
        self._arm_release()
        if published.refused_by is not None:
            raise QueueFull(
                f"queue {published.refused_by!r} is full (x-overflow "
                f"{self.broker.queues[published.refused_by].args.overflow}) and refused the message; "
                f"{published.routed} other queue(s) took it"
            )
        return message.message_id, published.routed, committed

    def _confirmed_again(self, exchange: str, message_id: str) -> asyncio.Future[None]:
        """A refused publish sent again while its copies' retried commit is under way: the
        outcome of the next commit, unless the database left those copies out meanwhile
        (refused for good, `_never_stored`): then it is refused again, and routed anew if
        sent once more."""
        assert self.writer is not None
        batch = self.writer.append(())
        answer: asyncio.Future[None] = batch.get_loop().create_future()

        def settled(done: asyncio.Future[None]) -> None:
            if answer.done():
                return
            if done.cancelled():
                answer.cancel()
            elif done.exception() is not None:
                answer.set_exception(done.exception())  # type: ignore[arg-type]
            elif not self._refused.remembers(exchange, message_id):
                answer.set_exception(Unavailable("the message store refused this message"))
            else:
                answer.set_result(None)

        batch.add_done_callback(settled)
        answer.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved
        return answer

    def publish_planned(self, plan: Planned) -> None:
        """Enqueue and deliver a message whose copies are stored (the outbox's)."""
        self._apply(self.broker.publish_planned(plan, now=self._now()).effects)
        self._arm_release()

    def _arm_release(self) -> None:
        """A timer for the soonest delayed message, at its time: not at the next tick."""
        if not self.broker.has_delays:  # most brokers: nothing waits (every publish asks)
            return
        due = self.broker.next_due()
        if due is None or (self._release_handle is not None and self._release_at is not None and self._release_at <= due):
            return
        if self._release_handle is not None:
            self._release_handle.cancel()
        assert self.loop is not None
        self._release_at = due
        self._release_handle = self.loop.call_at(due, self._release)

    def _release(self) -> None:
        self._release_handle = self._release_at = None
        if self._stopped:
            return
        try:
            self._apply(self.broker.release_due(now=self._now()))
        except Exception:
            log.exception("releasing delayed messages failed")
        self._arm_release()

    def outbox_written(self) -> None:
        """Outbox rows were committed in this process: wake the reader. Any thread."""
        loop, outbox = self.loop, self.outbox
        if loop is not None and outbox is not None and not loop.is_closed():
            loop.call_soon_threadsafe(outbox.poke)

    async def publish(self, request: PublishRequest) -> tuple[str, int]:
        """Route a message; returns (message_id, routed) once every stored copy is committed."""
        message_id, routed, committed = self.publish_nowait(request)
        if committed is not None:
            # Shared by every publish of the commit: a caller that gives up must not cancel it.
            await asyncio.shield(committed)
        return message_id, routed

    async def get_waiting(self, queue: str, *, count: int, ack: bool, holder: int | None = None) -> list[MessageObject]:
        """As `get`, reading on through the queue's backlog: a get that takes its messages
        (`ack`) waits for the next rows while it has fewer than `count` and the backlog
        has more, so that a queue with messages never looks empty or short. A get that
        leaves them (`ack: false`) returns at most the window, after the read under way.
        It stops reading on after GET_WAIT_SECONDS, well within its caller's timeout:
        messages it took are never dropped with an abandoned answer."""
        taken: list[MessageObject] = []
        deadline = self._now() + GET_WAIT_SECONDS
        while True:
            state = self.broker.queues.get(queue)
            if state is not None and not state.ready and state.backlog is not None and state.backlog.loading:
                try:
                    await within(self._next_window(queue), max(0.0, deadline - self._now()))
                except TimeoutError:
                    return taken
                if taken and queue not in self.broker.queues:
                    return taken
            taken += self.get(queue, count=count - len(taken), ack=ack, holder=holder)
            state = self.broker.queues.get(queue)
            if (
                not ack
                or len(taken) >= count
                or state is None
                or state.backlog is None
                or not state.backlog.loading
                or self._now() >= deadline
            ):
                return taken

    async def _next_window(self, queue: str) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._window_waiters.setdefault(queue, []).append(waiter)
        await waiter

    def get(self, queue: str, *, count: int, ack: bool, holder: int | None = None) -> list[MessageObject]:
        """`holder`: a connection of `open_holder`'s that holds what a get with `ack` takes."""
        taken, effects = self.broker.get(queue, count=count, ack=ack, now=self._now(), holder=holder)
        self._apply(effects)
        return [message_object(message, redelivered=redelivered) for message, redelivered in taken]

    def relocate(
        self,
        queue: str,
        batch: Sequence[tuple[str, Message | None]],
        *,
        epoch: int | None,
        target: Callable[[Message], tuple[str, str] | None] | None,
        keep: bool,
    ) -> Relocated:
        """One batch of a message browser action (broker/runtime/browser.py)."""
        done = self.broker.relocate(queue, batch, epoch=epoch, target=target, keep=keep, now=self._now())
        self._apply(done.effects)
        return done

    def purge(self, queue: str) -> int:
        purged, effects = self.broker.purge(queue)
        self._apply(effects)
        return purged

    async def redeclared(self, name: str, row_id: int) -> bool:
        """A declaration found queue `name` stored in row `row_id`. True when the router
        deleted that queue by itself (auto-delete, `expires`) and its writer was still to
        delete the row: answered once that commit landed, so that the declaration finds no
        row and makes the queue anew, after the commit that left out the old queue's copies
        (`unavailable` when it has not within REDECLARE_WAIT_SECONDS). Otherwise the
        declaration counts as a use of the queue."""
        assert self.writer is not None
        deleted = self.writer.queue_row_deleted(row_id)
        if deleted is None:
            self.broker.redeclare_queue(name, row_id, now=self._now())
            return False
        try:
            async with asyncio.timeout(REDECLARE_WAIT_SECONDS):
                await deleted
        except TimeoutError:
            # Going ahead would answer for the old row, soon deleted: refused, to be tried again.
            raise Unavailable(f"queue {name!r} is still being deleted; declare it again in a moment") from None
        return True

    def queue_counts(self, names: Sequence[str]) -> dict[str, QueueCounts]:
        counts = {}
        for name in names:
            found = self.broker.queue_counts(name)
            if found is not None:
                counts[name] = found
        return counts

    # -- connections (on the loop) ---------------------------------------

    def connect(self, sink: DeliverySink, *, first_tag: int = 1) -> int:
        connection_id = self.broker.open_connection(first_tag=first_tag)
        self._sinks[connection_id] = sink
        self._batches[connection_id] = deque()
        encode = getattr(sink, "encode_delivery", None)
        if encode is not None:
            self._encoders[connection_id] = encode
        return connection_id

    def open_holder(self) -> int:
        """A connection without a client that holds what gets with `ack` take for an answer
        still on its way (broker/cluster/hub.py): `release_held` acks it once the answer has
        arrived, or gives it back to its queues, redelivered."""
        return self.broker.open_connection()

    def release_held(self, holder: int, *, delivered: bool) -> None:
        connection = self.broker.connections.get(holder)
        if connection is None:
            return
        if delivered and connection.unacked:
            self.ack(holder, connection.next_tag - 1, multiple=True)
        self.disconnect(holder)

    def disconnect(self, connection_id: int) -> None:
        """Requeue what the connection held unacknowledged; drop its private queues."""
        self._apply(self.broker.close_connection(connection_id, now=self._now()))
        self._sinks.pop(connection_id, None)
        self._batches.pop(connection_id, None)
        self._encoders.pop(connection_id, None)
        self._watchers.discard(connection_id)

    def last_tag(self, connection_id: int) -> int | None:
        """The highest delivery tag handed out to the connection so far; None when it is gone."""
        connection = self.broker.connections.get(connection_id)
        return None if connection is None else connection.next_tag - 1

    def watch(self, connection_id: int, *, first_now: bool = True) -> None:
        """Send this connection a `stats` frame every second, the first one now unless
        `first_now` is False (a connection restored after a failover)."""
        if not self._watchers:
            self._stats.sample(self.broker, now=self._now())  # the baseline of the first rates
        self._watchers.add(connection_id)
        if first_now:
            self._send(connection_id, [self._stats_frame()])

    def unwatch(self, connection_id: int) -> None:
        self._watchers.discard(connection_id)

    def subscribe(
        self,
        connection_id: int,
        *,
        subscription: str,
        subscription_json: str,
        ack_mode: AckMode,
        prefetch: int,
        queue: str | None = None,
        exchange: str | None = None,
        binding_key: str = "",
        arguments: Mapping[str, Any] | None = None,
        answered: Callable[[str], None] | None = None,
    ) -> str:
        """Consume a queue, or an exchange through a private queue; returns the queue's name.
        `answered(queue)` is called once the subscription exists, before its first delivery."""
        if exchange is not None:
            name = generated_queue_name()
            effects = self.broker.consume_exchange(
                connection_id,
                subscription=subscription,
                subscription_json=subscription_json,
                exchange=exchange,
                binding_key=binding_key,
                arguments=arguments,
                queue=name,
                ack_mode=ack_mode,
                prefetch=prefetch,
                now=self._now(),
            )
        else:
            assert queue is not None
            name = queue
            effects = self.broker.consume(
                connection_id,
                subscription=subscription,
                subscription_json=subscription_json,
                queue=queue,
                ack_mode=ack_mode,
                prefetch=prefetch,
                now=self._now(),
            )
        if answered is not None:
            answered(name)
        self._apply(effects)
        return name

    def unsubscribe(self, connection_id: int, subscription: str) -> str:
        queue, effects = self.broker.cancel(connection_id, subscription, now=self._now())
        self._apply(effects)
        return queue

    def ack(self, connection_id: int, delivery_tag: int, *, multiple: bool) -> None:
        self._apply(self.broker.ack(connection_id, delivery_tag, multiple=multiple, now=self._now()))

    def nack(self, connection_id: int, delivery_tag: int, *, multiple: bool, requeue: bool) -> None:
        effects = self.broker.nack(connection_id, delivery_tag, multiple=multiple, requeue=requeue, now=self._now())
        self._apply(effects)

    # -- topology (on the loop) ------------------------------------------

    def apply_change(self, change: TopologyChange) -> None:
        """Mirror a committed change of the stored topology."""
        broker, now = self.broker, self._now()
        match change:
            case ExchangeSaved(spec):
                broker.sync_exchange(spec)
            case ExchangeDeleted(name):
                if name in broker.exchanges:
                    broker.delete_exchange(name, reserved_ok=True)
            case QueueSaved(spec):
                self._apply(broker.sync_queue(spec, now=now))
            case QueueDeleted(name, row_id):
                if name in broker.queues:
                    # Only the queue of that row (one declared again since is another), and
                    # the row itself is gone already: nothing left for the writer to delete.
                    self._apply(replace(broker.delete_queue(name, row_id=row_id), deleted_rows=()))
            case BindingSaved(spec):
                broker.bind(spec)
            case BindingDeleted(spec):
                broker.unbind(spec)
