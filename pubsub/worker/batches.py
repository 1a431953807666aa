"""A sync handler's messages, run in batches on its threads ("lanes").

Each message waits here until a lane is free; a free lane takes every message
waiting (up to MAX_BATCH) and runs them in one transaction (execution.handle_batch):
under load a commit serves many messages, with no wait added when there is no load.
Each lane's `Watched` carries the time limit of the message it runs; `watch` stops
the ones over it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from pubsub.handling import Handler, Message

from . import execution
from .execution import Failed, Outcome
from .time_limit import Watched

# Messages per transaction at most: a failure in a batch runs its messages again one by one.
MAX_BATCH: Final = 64
# How often lanes are checked for a message over its time limit.
WATCH_SECONDS: Final = 0.05

_Item = tuple[Message, int | None, "asyncio.Future[Outcome | Failed]"]


class Batches:
    def __init__(self, handler: Handler, executor: ThreadPoolExecutor) -> None:
        self._handler = handler
        self._executor = executor
        self._waiting: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._lanes = [Watched() for _ in range(handler.concurrency)]
        self._tasks = [asyncio.create_task(self._lane(watched)) for watched in self._lanes]
        self.running = 0

    async def run(self, message: Message, store_id: int | None) -> Outcome | Failed:
        future: asyncio.Future[Outcome | Failed] = asyncio.get_running_loop().create_future()
        self._waiting.append((message, store_id, future))
        self._wake.set()
        return await future

    async def _lane(self, watched: Watched) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            batch: list[_Item] = []
            while self._waiting and len(batch) < MAX_BATCH:
                batch.append(self._waiting.popleft())
            self.running += len(batch)
            try:
                outcomes = await loop.run_in_executor(
                    self._executor, execution.handle_batch, self._handler,
                    [(message, store_id) for message, store_id, _ in batch], watched,
                )
            except asyncio.CancelledError:
                raise
            except BaseException as error:  # the database failed around the batch: each message failed
                outcomes = [Failed(error)] * len(batch)
            finally:
                self.running -= len(batch)
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)

    def watch(self) -> None:
        """Stop the lanes' messages that are over their time limit."""
        now = time.monotonic()
        for watched in self._lanes:
            watched.interrupt_overdue(now)

    def stop(self) -> None:
        """Run no more of the messages waiting: they go back to the broker."""
        while self._waiting:
            future = self._waiting.popleft()[2]
            if not future.done():
                future.set_result(Outcome.NOT_STARTED)

    def close(self) -> None:
        self.stop()
        for task in self._tasks:
            task.cancel()
