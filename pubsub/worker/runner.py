"""The handler process's event loop: one WebSocket connection to the broker, one
transaction-ack subscription per handler, and the handlers' threads.

Sync handlers run on a thread pool of their `concurrency`, the messages waiting
taken in batches, one transaction each (batches.py, execution.py): a message
goes from the socket into a batch and its ack into one frame with the batch's
others, with no task of its own unless its attempt fails. Async handlers run
on the loop. A failed
message is held here for its backoff and tried again (its attempts are kept in
the database meanwhile), then dead-lettered. The connection is opened again,
to the next address, whenever it is lost (a router restart, a failover): what
was unacknowledged comes back from the broker, and a copy already handled is
recognised by its missing row. `stop()` (SIGTERM) starts no more handlers,
lets the running ones finish for up to `grace` seconds, acknowledges them, and
closes the connection, which gives the rest back to the queue.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from http.client import HTTPException
from typing import Any, Final

import websockets
from websockets.asyncio.client import ClientConnection, connect

from broker.engine.jsoncodec import dumps, loads
from broker.engine.messages import DELIVERY_COUNT
from broker.runtime.timeouts import within
from pubsub.handling import Handler, Message
from pubsub.storable import storable_text

from . import execution, status
from .batches import WATCH_SECONDS, Batches
from .declare import DeclareError, declare, http_base
from .execution import Failed, Outcome
from .gate import Gate
from .time_limit import TimeLimitExceeded

log = logging.getLogger("pubsub.handlers")

# A stored copy given back this often by connections that ended is a suspect: it may be
# what ended them. It runs alone, its attempts recorded before they run (`_suspect_attempt`).
# Not at 1: a deploy's stop gives back every copy its process held, once.
SUSPECT_RETURNS: Final = 2

# Waits between connection attempts: from the first to the longest.
RECONNECT_SECONDS: Final = (0.2, 0.5, 1.0, 2.0, 5.0)
# How often the process reports its handlers' counts (the admin, the console), and runs
# its periodic jobs (publishing the deferred tasks that became due).
REPORT_SECONDS: Final = 2.0
TICK_SECONDS: Final = 1.0
# A failed attempt whose recording failed, or an attempt the database failed before the
# handler ran (the database away), is tried again this soon, then twice as late each time,
# up to the most.
SETTLE_RETRY_SECONDS: Final = 1.0
SETTLE_RETRY_MAX_SECONDS: Final = 30.0
# How long a stop that leaves a handler running waits to remove this process's status rows.
FORGET_SECONDS: Final = 0.5


def _message(handler: Handler, frame: dict[str, Any]) -> Message:
    return Message(
        body=frame.get("body"),
        headers=frame.get("headers") or {},
        routing_key=frame.get("routing_key", ""),
        exchange=frame.get("exchange", ""),
        message_id=frame.get("message_id", ""),
        published_at=frame.get("published_at", ""),
        queue=handler.queue,
        redelivered=bool(frame.get("redelivered")),
        delivery_count=1,
    )


def _log_settled(handler: Handler, message: Message, outcome: Outcome) -> None:
    """Log a message's end when it is news: dead-lettered, or found handled before."""
    if outcome is Outcome.DEAD_LETTERED:
        log.error("handler %s: message %s dead-lettered after %d attempts",
                  handler.name, message.message_id, message.delivery_count)
    elif outcome is Outcome.ALREADY_HANDLED:
        log.info("handler %s: message %s was handled before; acknowledged without running",
                 handler.name, message.message_id)


class _Acks:
    """Delivery tags to ack in one frame, and its send."""

    __slots__ = ("sent", "tags", "ws")

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.tags: list[int] = []
        self.sent: asyncio.Task[None] | None = None


class Resubscribe(Exception):
    """A subscription was refused or ended by the broker: connect, declare and subscribe again."""


class Runner:
    def __init__(
        self,
        handlers: Sequence[Handler],
        *,
        urls: Sequence[str],
        token: Callable[[], str],
        grace: float,
        ticks: Sequence[Callable[[], object]] = (),
    ) -> None:
        """`token`: a fresh credential for each connection and declaration. `ticks`: jobs run
        every TICK_SECONDS on a thread of their own (ORM work)."""
        if not handlers:
            raise ValueError("no handlers to run")
        self._handlers = {handler.name: handler for handler in handlers}
        self._urls = list(urls)
        self._token = token
        self._grace = grace
        self._executors = {
            handler.name: ThreadPoolExecutor(handler.concurrency, thread_name_prefix=f"handler-{index}")
            for index, handler in enumerate(handlers)
        }
        self._slots: dict[str, asyncio.Semaphore] = {}  # async handlers' concurrency
        self._gate = Gate()  # handlers run together, or a suspect alone
        self._batches: dict[str, Batches] = {}  # sync handlers' lanes
        self._stopping: asyncio.Event | None = None
        self._stop_deadline: float | None = None  # loop time when the running messages are left behind
        self._gave_up = False  # on them, and said so
        self._ws: ClientConnection | None = None
        self._generation = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._acks: _Acks | None = None  # the acks of this turn of the loop, not sent yet
        self._running: Counter[str] = Counter()  # messages being handled, by handler
        # Outcomes (handled, already handled, retry, dead-lettered) and failed attempts, by handler.
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in self._handlers}
        self.connected = asyncio.Event()
        self._process_id = f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"
        self._started_at = datetime.datetime.now(datetime.UTC)
        self._reporter = ThreadPoolExecutor(1, thread_name_prefix="handlers-report")
        self._last_report: tuple[float, dict[str, int]] | None = None
        self._ticks = list(ticks)
        self._failures = 0  # connection attempts failed in a row
        self._declared = False

    # -- life cycle --------------------------------------------------------

    def stop(self) -> None:
        """Start no more handlers; `run` returns once the running ones are done (or `grace` is up)."""
        if self._stopping is not None:
            self._stopping.set()
        for batches in self._batches.values():
            batches.stop()

    async def run(self) -> None:
        self._stopping = asyncio.Event()
        self._slots = {name: asyncio.Semaphore(handler.concurrency) for name, handler in self._handlers.items()}
        self._batches = {
            name: Batches(handler, self._executors[name], self._gate)
            for name, handler in self._handlers.items() if not handler.is_async
        }
        reporting = asyncio.create_task(self._report_forever())
        watching = asyncio.create_task(self._watch_time_limits())
        try:
            await self._connect_forever()
        finally:
            reporting.cancel()
            await self._finish()
            watching.cancel()
            for batches in self._batches.values():
                batches.close()

    async def _watch_time_limits(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            for batches in self._batches.values():
                batches.watch()

    async def _connect_forever(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            url = self._urls[self._failures % len(self._urls)]
            try:
                if not self._declared:
                    await asyncio.to_thread(self._declare_all, http_base(url))
                    self._declared = True
                if self._stopping.is_set():
                    break  # a stop while it declared: no session only to give back what it hands out
                await self._session(url)
            except DeclareError:
                raise
            except (OSError, TimeoutError, websockets.WebSocketException, Resubscribe) as error:
                self._failures += 1
                log.warning("handlers: connection to %s lost or refused (%s); trying again", url, error or type(error).__name__)
            if self._stopping.is_set():
                break
            delay = RECONNECT_SECONDS[min(self._failures, len(RECONNECT_SECONDS) - 1)]
            try:
                await within(self._stopping.wait(), delay)
            except TimeoutError:
                pass

    def _declare_all(self, base: str) -> None:
        for handler in self._handlers.values():
            try:
                declare(handler, base=base, token=self._token())
            except (OSError, HTTPException) as error:
                # The broker is not up (yet), or a node restarting cut an answer short (an
                # IncompleteRead, a BadStatusLine): the caller tries again.
                raise ConnectionError(f"declaring the handlers' queues at {base}: {type(error).__name__}: {error}") from error

    async def _session(self, url: str) -> None:
        assert self._stopping is not None
        headers = {"Authorization": f"Bearer {self._token()}"}
        # No flow control of websockets' own (`max_queue`): the broker sends no more than the
        # handlers' prefetch allows. With it, the frames left unread once stopping paused the
        # socket, and the broker's answer to the close went unread: 10 s to stop under load.
        async with connect(url, additional_headers=headers, max_size=None, max_queue=None, open_timeout=10) as ws:
            self._ws = ws
            self._generation += 1
            generation = self._generation
            for batches in self._batches.values():
                batches.stop()  # the old connection's messages not yet started: redelivered on this one
            for handler in self._handlers.values():
                await ws.send(dumps({
                    "type": "subscribe", "id": handler.name, "queue": handler.queue,
                    "ack": "transaction", "prefetch": handler.prefetch,
                }))
            log.info("handlers: connected to %s: %s", url, ", ".join(self._handlers))
            self.connected.set()
            self._failures = 0
            reader = asyncio.create_task(self._read(ws, generation))
            stopping = asyncio.create_task(self._stopping.wait())
            try:
                done, _ = await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    reader.result()  # the connection's end, as an exception
                    return
                # Stopping: the reader stays, so that the running handlers' acks go out.
                await self._wait_running()
            finally:
                self.connected.clear()
                reader.cancel()
                stopping.cancel()

    async def _finish(self) -> None:
        await self._wait_running()
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        forgetting = asyncio.get_running_loop().run_in_executor(self._reporter, status.forget, self._process_id)
        try:
            # Not for long when a handler was left running: on SQLite its transaction holds the
            # write lock until it ends (the rows of a process gone go stale anyway).
            await asyncio.wait_for(forgetting, timeout=FORGET_SECONDS if self.busy else None)
        except Exception:
            log.warning("handlers: could not remove this process's status rows", exc_info=True)
        self._reporter.shutdown(wait=False)

    async def _report_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_report = 0.0
        while True:
            if loop.time() >= next_report:
                next_report = loop.time() + REPORT_SECONDS
                try:
                    await loop.run_in_executor(
                        self._reporter, status.report, self._process_id, socket.gethostname(), os.getpid(),
                        self._started_at, self._reports(),
                    )
                except Exception as error:
                    log.warning("handlers: reporting this process's status failed: %s", error)
            for tick in self._ticks:
                try:
                    await loop.run_in_executor(self._reporter, tick)
                except Exception:
                    log.exception("handlers: periodic job %s failed", getattr(tick, "__name__", tick))
            await asyncio.sleep(TICK_SECONDS)

    def _reports(self) -> list[status.HandlerReport]:
        now = time.monotonic()
        handled = {name: counts[Outcome.HANDLED.value] for name, counts in self.counts.items()}
        last = self._last_report
        self._last_report = (now, handled)
        reports = []
        for name, handler in self._handlers.items():
            counts = self.counts[name]
            rate = 0.0
            if last is not None and now > last[0]:
                rate = round((handled[name] - last[1].get(name, 0)) / (now - last[0]), 2)
            batches = self._batches.get(name)
            running = self._running[name] + (batches.running if batches is not None else 0)
            reports.append(status.HandlerReport(
                handler=name, queue=handler.queue, concurrency=handler.concurrency, running=running,
                handled=handled[name], failed=counts["failed"], retried=counts[Outcome.RETRY.value],
                dead_lettered=counts[Outcome.DEAD_LETTERED.value],
                already_handled=counts[Outcome.ALREADY_HANDLED.value], handled_rate=rate,
            ))
        return reports

    async def _wait_running(self) -> None:
        """Until the running messages are done and acknowledged, for up to `grace` seconds:
        the batches under way, then what their outcomes started (acks, failures' handling)."""
        loop = asyncio.get_running_loop()
        if self._stop_deadline is None:  # once: `_finish` waits again, within the same grace
            self._stop_deadline = loop.time() + self._grace
        while True:
            running = set(self._tasks)
            running.update(
                asyncio.ensure_future(batches.idle()) for batches in self._batches.values() if batches.running
            )
            if not running:
                return
            _, pending = await asyncio.wait(running, timeout=max(0.0, self._stop_deadline - loop.time()))
            if pending:
                if not self._gave_up:
                    self._gave_up = True
                    log.warning("handlers: %d message(s) still being handled after %.0f s: leaving them to be "
                                "redelivered", self.busy, self._grace)
                for task in pending:
                    task.cancel()
                return

    @property
    def busy(self) -> int:
        """Messages whose handler runs now (a sync one cannot be stopped)."""
        return sum(self._running.values()) + sum(batches.running for batches in self._batches.values())

    # -- frames --------------------------------------------------------------

    async def _read(self, ws: ClientConnection, generation: int) -> None:
        async for raw in ws:
            frame = loads(raw)
            kind = frame.get("type")
            if kind == "message":
                handler = self._handlers.get(frame.get("subscription"))
                if handler is None:
                    continue
                if handler.is_async or frame.get("redelivered"):
                    self._track(self._process(handler, frame, ws, generation))
                elif not self._stopping_now():
                    # The common path of a busy sync handler: into a batch, no task of its own.
                    message = _message(handler, frame)
                    self._batches[handler.name].submit(
                        message, frame.get("store_id"), partial(self._settled, handler, frame, ws, generation, message)
                    )
            elif kind == "error":
                log.error("handlers: the broker refused %s: %s %s", frame.get("id"), frame.get("code"), frame.get("message"))
                if frame.get("id") in self._handlers:  # a subscribe: declare and subscribe again
                    self._declared = False
                    raise Resubscribe(f"subscription {frame.get('id')} refused: {frame.get('code')}")
            elif kind == "cancelled":
                log.error("handlers: subscription %s ended by the broker: %s", frame.get("subscription"), frame.get("reason"))
                self._declared = False  # its queue was deleted: declared again, then subscribed
                raise Resubscribe(f"subscription {frame.get('subscription')} cancelled")

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task that `_wait_running` waits for at a stop."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _stopping_now(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    def _settled(
        self, handler: Handler, frame: dict[str, Any], ws: ClientConnection, generation: int, message: Message,
        outcome: Outcome | Failed,
    ) -> None:
        """A first attempt's outcome from its batch: acknowledged, or handed to `_process`
        for its failure (retries, dead-lettering) or to be attempted again."""
        if outcome is Outcome.NOT_STARTED:
            return  # the broker gives it back (the connection closes, or already has)
        if isinstance(outcome, Failed) or outcome is Outcome.NOT_ATTEMPTED:
            self._track(self._process(handler, frame, ws, generation, message=message, first=outcome))
            return
        self.counts[handler.name][outcome.value] += 1
        _log_settled(handler, message, outcome)
        if generation == self._generation and ws is self._ws:
            self._ack_soon(ws, frame["delivery_tag"])

    async def _process(
        self, handler: Handler, frame: dict[str, Any], ws: ClientConnection, generation: int,
        *, message: Message | None = None, first: Failed | Outcome | None = None,
    ) -> None:
        """A message through to its ack: its attempts, their backoff, its dead-lettering.
        `first`: how its first attempt (`message`), run in a batch, ended: failed, or not
        attempted (the database failed before the handler ran)."""
        assert self._stopping is not None
        store_id = frame.get("store_id")
        message = message or _message(handler, frame)
        suspect = first is None and store_id is not None and _returns(message) >= SUSPECT_RETURNS
        last_error, spent = "", False
        if first is None and message.redelivered and store_id is not None and not suspect:
            executor = self._executors[handler.name]
            try:
                earlier, last_error = await asyncio.get_running_loop().run_in_executor(
                    executor, execution.earlier_attempts, store_id, message.message_id
                )
            except Exception as error:  # the database away (a failover): counted from here
                log.warning("handler %s: message %s: its earlier attempts are unknown (%s)",
                            handler.name, message.message_id, error)
                earlier = 0
            # Its attempts spent before it came back, not as a suspect (a router's restart forgets
            # how often copies were given back): given up on, not run again.
            spent = earlier >= handler.retry.max_attempts
            message = replace(message, delivery_count=earlier if spent else earlier + 1)
        unavailable_delay = SETTLE_RETRY_SECONDS
        while True:
            if isinstance(first, Failed):
                outcome = await self._failed(handler, message, store_id, first.error, first.seconds, generation)
                first = None
            elif first is not None:
                outcome, first = first, None
            elif self._stopping.is_set():
                return  # not started: the broker gives it back when the connection closes
            elif spent:
                outcome = await self._give_up(handler, message, store_id, last_error or "its attempts were spent before")
            elif suspect:  # each of its attempts, retries too, alone and recorded first
                assert store_id is not None
                message, outcome = await self._suspect_attempt(handler, message, store_id, generation)
            elif handler.is_async:
                async with self._slots[handler.name]:
                    self._running[handler.name] += 1
                    try:
                        outcome = await self._attempt(handler, message, store_id, generation)
                    finally:
                        self._running[handler.name] -= 1
            else:
                outcome = await self._attempt(handler, message, store_id, generation)
            if outcome is Outcome.NOT_STARTED:
                return
            if outcome is Outcome.NOT_ATTEMPTED:  # the database failed before the handler ran
                log.warning("handler %s: message %s, attempt %d not made (the database failed first); "
                            "trying again in %g s", handler.name, message.message_id, message.delivery_count,
                            unavailable_delay)
                try:
                    await within(self._stopping.wait(), unavailable_delay)
                    return  # stopping: it comes back from the broker, this attempt not counted
                except TimeoutError:
                    pass
                if generation != self._generation:
                    return  # its connection is gone: the broker hands it out again
                unavailable_delay = min(unavailable_delay * 2, SETTLE_RETRY_MAX_SECONDS)
                continue  # the same attempt: none was used up
            self.counts[handler.name][outcome.value] += 1
            if outcome is not Outcome.RETRY:
                break
            delay = handler.retry.delay(message.delivery_count)
            log.warning("handler %s: message %s, attempt %d failed; next attempt in %.1f s",
                        handler.name, message.message_id, message.delivery_count, delay)
            try:
                await within(self._stopping.wait(), delay)
                return  # stopping: it comes back from the broker, its attempts counted
            except TimeoutError:
                pass
            if generation != self._generation:
                return  # its connection is gone: the broker hands it out again, its attempts counted
            if not spent:  # (a give-up tried again is no attempt)
                message = replace(message, delivery_count=message.delivery_count + 1, redelivered=True)
        _log_settled(handler, message, outcome)
        if generation == self._generation and ws is self._ws:
            await asyncio.shield(self._ack_soon(ws, frame["delivery_tag"]))

    def _ack_soon(self, ws: ClientConnection, tag: int) -> asyncio.Future[None]:
        """Ack with the other messages done in the same turn of the loop (a lane's batch
        finishes together): one frame for them all. Its send, which `_wait_running` waits for."""
        acks = self._acks
        if acks is None or acks.ws is not ws:
            acks = self._acks = _Acks(ws)
            acks.sent = self._track(self._send_acks(acks))
        acks.tags.append(tag)
        assert acks.sent is not None
        return acks.sent

    async def _send_acks(self, acks: _Acks) -> None:
        await asyncio.sleep(0)  # after the messages that finished in this turn
        if self._acks is acks:
            self._acks = None
        try:
            await acks.ws.send(dumps({"type": "ack", "delivery_tags": acks.tags}))
        except websockets.ConnectionClosed:
            pass  # redelivered on the next connection, and found handled

    async def _suspect_attempt(
        self, handler: Handler, message: Message, store_id: int, generation: int
    ) -> tuple[Message, Outcome]:
        """A copy given back SUSPECT_RETURNS times or more by connections that ended: it may
        be what ended them (its handler killing the process). One attempt with nothing else
        running in the process (gate.py), recorded before it runs: if the process dies, the
        attempt counts against it alone; once its attempts are spent, it is given up on
        without running again. The message carries the attempt's number."""
        assert self._stopping is not None
        loop, executor = asyncio.get_running_loop(), self._executors[handler.name]
        result: Outcome | Failed | execution.GaveUp
        async with self._gate.alone():
            if self._stopping.is_set() or generation != self._generation:
                return message, Outcome.NOT_STARTED  # the broker gives it back; nothing counted
            started = time.monotonic()
            # Counted as running (`busy`): a stop past its grace exits without it. A sync one's
            # thread goes on when cancelled: counted until the process ends, as a batch's.
            self._running[handler.name] += 1
            ran_on = False
            try:
                if not handler.is_async:
                    attempt, result = await loop.run_in_executor(
                        executor, execution.run_suspect, handler, message, store_id, self._batches[handler.name].alone
                    )
                else:
                    attempt, given_up = await loop.run_in_executor(
                        executor, execution.begin_attempt, handler, message, store_id
                    )
                    if given_up is not None:
                        result = execution.GaveUp(given_up)
                    else:
                        message = replace(message, delivery_count=attempt)
                        result = await self._run_async(handler, message, store_id, started)
            except asyncio.CancelledError:
                ran_on = not handler.is_async
                raise
            except Exception as error:  # the database away (a failover) before it ran
                log.warning("handler %s: message %s: its attempt could not be recorded (%s); tried again "
                            "after its backoff", handler.name, message.message_id, error)
                return message, Outcome.RETRY
            finally:
                if not ran_on:
                    self._running[handler.name] -= 1
        message = replace(message, delivery_count=attempt)
        if isinstance(result, execution.GaveUp):
            return message, await self._give_up(handler, message, store_id, result.error)
        if isinstance(result, Failed):
            return message, await self._failed(handler, message, store_id, result.error, result.seconds, generation)
        return message, result

    async def _run_async(self, handler: Handler, message: Message, store_id: int | None, started: float) -> Outcome | Failed:
        """An async handler's attempt and, on success, its copy's removal."""
        try:
            # Awaited in this task, not wait_for's own: a stop's cancel that comes in the turn
            # the handler returns is not lost (Python 3.11's wait_for swallows it), and the
            # handler's sys.exit() is its failure, not the process's end.
            async with asyncio.timeout(handler.time_limit):
                await handler.function(message)
            return await asyncio.get_running_loop().run_in_executor(
                self._executors[handler.name], execution.claim_after, store_id, message.message_id
            )
        except asyncio.CancelledError as error:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this process cancels it: stopping
            # The handler's own (a task it awaited was cancelled): a failure like any other,
            # not the end of the task that settles the message (it stayed unacknowledged).
            return Failed(error, time.monotonic() - started)
        except execution.HANDLER_FAILURES as error:
            # Anything else it raised, a BaseException too (a sys.exit(), a KeyboardInterrupt: the
            # process's signals are the loop's, not exceptions): its attempt's failure, as for a
            # sync handler. Let through, it ended the task that settles the message, which stayed
            # unacknowledged and held a prefetch place, or (a KeyboardInterrupt) the loop.
            return Failed(error, time.monotonic() - started)

    async def _give_up(self, handler: Handler, message: Message, store_id: int | None, error: str) -> Outcome:
        """Every attempt allowed was made, the last one ending in `error` (its process died
        during it): dead-letter the message (or fail its task) without running it again."""
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(
                self._executors[handler.name], execution.settle_failure, handler, message, store_id, error
            )
        except Exception:
            log.exception("handler %s: message %s: giving up on it failed; trying again later",
                          handler.name, message.message_id)
            return Outcome.RETRY
        if outcome is not Outcome.ALREADY_HANDLED:
            log.error("handler %s: message %s: its attempts are spent, the last ending with: %s; not run again",
                      handler.name, message.message_id, error)
        return outcome

    async def _attempt(self, handler: Handler, message: Message, store_id: int | None, generation: int) -> Outcome:
        """Run the handler once; on failure, count the attempt or dead-letter the message."""
        if not handler.is_async:
            outcome = await self._batches[handler.name].run(message, store_id)
        else:
            async with self._gate.shared():
                if self._stopping_now() or generation != self._generation:
                    return Outcome.NOT_STARTED  # waited behind a suspect: the broker gives it back
                outcome = await self._run_async(handler, message, store_id, time.monotonic())
        if not isinstance(outcome, Failed):
            return outcome
        return await self._failed(handler, message, store_id, outcome.error, outcome.seconds, generation)

    async def _failed(
        self,
        handler: Handler,
        message: Message,
        store_id: int | None,
        error: BaseException,
        seconds: float | None,
        generation: int,
    ) -> Outcome:
        """An attempt failed (`seconds` into it): count it, or dead-letter the message."""
        timed_out = isinstance(error, TimeLimitExceeded | TimeoutError)
        text = f"time limit of {handler.time_limit:g} s exceeded" if timed_out and handler.time_limit else (
            _described(error)
        )
        self.counts[handler.name]["failed"] += 1
        after = "" if seconds is None else f" after {seconds:.3f} s"
        log.warning("handler %s: message %s, attempt %d failed%s: %s",
                    handler.name, message.message_id, message.delivery_count, after, text,
                    exc_info=(type(error), error, error.__traceback__) if not timed_out else None)
        # Tried until it is recorded, without running the handler again: this may have been
        # its last attempt, and the next would be one more than `max_attempts`. Tried less and
        # less often, until it is, the process stops or the connection is lost (the broker
        # then hands the message out again).
        assert self._stopping is not None
        delay = SETTLE_RETRY_SECONDS
        while True:
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self._executors[handler.name], execution.settle_failure, handler, message, store_id, text, error
                )
            except Exception as failure:
                log.warning("handler %s: message %s: recording the failure failed (%s); trying again in %g s",
                            handler.name, message.message_id, failure, delay,
                            exc_info=delay == SETTLE_RETRY_SECONDS)  # its traceback once
            try:
                await within(self._stopping.wait(), delay)
                return Outcome.NOT_STARTED  # stopping: it comes back from the broker, its attempts counted
            except TimeoutError:
                pass
            if generation != self._generation:
                return Outcome.NOT_STARTED  # its connection is gone: the broker hands it out again
            delay = min(delay * 2, SETTLE_RETRY_MAX_SECONDS)


def _returns(message: Message) -> int:
    """How often the broker had the message given back before this delivery (its
    `x-delivery-count`: nacked, or its connection gone before the ack)."""
    if not message.redelivered:  # the header is then the publisher's own, if any
        return 0
    value = message.headers.get(DELIVERY_COUNT)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _described(error: BaseException) -> str:
    """`Class: text` of a handler's exception, as it is recorded and put in a dead letter's
    headers: even for an exception whose str() fails, and storable (`storable_text`: else
    every try to record the failure failed, the message neither retried nor acknowledged)."""
    try:
        text = str(error)
    except Exception as failing:
        text = f"<its str() failed: {type(failing).__name__}>"
    return storable_text(f"{type(error).__name__}: {text}")
