"""A sync handler's messages, run in batches on its threads ("lanes").

Each message waits here until a lane is free; a free lane takes its share of the
messages waiting (those waiting over the lanes free, up to MAX_BATCH) and runs them
in one transaction (execution.handle_batch): under load a commit serves many
messages, with no wait added when there is no load, and a burst is spread over the
free lanes rather than taken whole by the first to wake (a slow handler's burst
would run one message at a time on one lane while the others sat idle).
Each lane's `Watched` carries the time limit of the message it runs; `watch` stops
the ones over it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from pubsub.handling import Handler, Message

from . import execution
from .execution import Failed, Outcome
from .gate import Gate
from .time_limit import Watched

log = logging.getLogger("pubsub.handlers")

# Messages per transaction at most: a failure in a batch runs its messages again one by one.
MAX_BATCH: Final = 64
# How often lanes are checked for a message over its time limit.
WATCH_SECONDS: Final = 0.05

# What a message's outcome is handed to, on the loop, once its batch is done.
Settle = Callable[[Outcome | Failed], None]
_Item = tuple[Message, int | None, Settle]


class Batches:
    def __init__(self, handler: Handler, executor: ThreadPoolExecutor, gate: Gate) -> None:
        self._handler = handler
        self._executor = executor
        self._gate = gate
        self.alone = Watched()  # a suspect's, run alone (runner.py), watched with the lanes
        self._waiting: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._lanes = [Watched() for _ in range(handler.concurrency)]
        self._busy = 0  # lanes running a batch
        self._tasks = [asyncio.create_task(self._lane(watched)) for watched in self._lanes]
        self.running = 0
        self._idle = asyncio.Event()  # no batch runs
        self._idle.set()
        self._stops = 0  # `stop` calls so far: a batch taken before one is not started

    def submit(self, message: Message, store_id: int | None, settle: Settle) -> None:
        """Run the message in a batch; `settle` gets its outcome (on the loop, no task per
        message: the common path of a busy handler)."""
        self._waiting.append((message, store_id, settle))
        self._wake.set()

    async def run(self, message: Message, store_id: int | None) -> Outcome | Failed:
        future: asyncio.Future[Outcome | Failed] = asyncio.get_running_loop().create_future()

        def settle(outcome: Outcome | Failed) -> None:
            if not future.done():
                future.set_result(outcome)

        self.submit(message, store_id, settle)
        return await future

    async def idle(self) -> None:
        """Once no batch runs (the messages waiting are not started)."""
        await self._idle.wait()

    async def _lane(self, watched: Watched) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            free = len(self._lanes) - self._busy  # this lane among them
            share = min(MAX_BATCH, -(-len(self._waiting) // free))
            batch = [self._waiting.popleft() for _ in range(share)]
            if self._waiting:
                self._wake.set()  # the rest, for the other free lanes
            stops = self._stops
            self.running += len(batch)
            self._busy += 1
            self._idle.clear()
            try:
                async with self._gate.shared():
                    if stops != self._stops:  # stopped while it waited behind a suspect (gate.py)
                        outcomes: list[Outcome | Failed] = [Outcome.NOT_STARTED] * len(batch)
                    else:
                        outcomes = await loop.run_in_executor(
                            self._executor, execution.handle_batch, self._handler,
                            [(message, store_id) for message, store_id, _ in batch], watched,
                        )
            except asyncio.CancelledError:
                raise  # closing: its thread still runs the batch, still counted in `running`
            except BaseException as error:  # the database failed around the batch: each message failed
                outcomes = [Failed(error)] * len(batch)
            self.running -= len(batch)
            self._busy -= 1
            for (message, _, settle), outcome in zip(batch, outcomes, strict=True):
                try:
                    settle(outcome)
                except Exception:  # the lane must go on
                    log.exception("handler %s: message %s: settling its outcome failed", self._handler.name,
                                  message.message_id)
            if not self.running:
                self._idle.set()

    def watch(self) -> None:
        """Stop the lanes' messages that are over their time limit."""
        now = time.monotonic()
        for watched in (*self._lanes, self.alone):
            watched.interrupt_overdue(now)

    def stop(self) -> None:
        """Run no more of the messages waiting: they go back to the broker."""
        self._stops += 1
        while self._waiting:
            self._waiting.popleft()[2](Outcome.NOT_STARTED)

    def close(self) -> None:
        self.stop()
        for task in self._tasks:
            task.cancel()
