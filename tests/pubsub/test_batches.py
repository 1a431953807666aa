"""A sync handler's lanes (pubsub/worker/batches.py): a burst is spread over the lanes that
are free, each taking its share in one transaction, where the first lane to wake took all
of it (up to 64) and the others sat idle while a slow handler ran them one by one."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pubsub.handling import Handler, Message, Retry
from pubsub.worker import batches as batches_module
from pubsub.worker.batches import MAX_BATCH, Batches
from pubsub.worker.execution import Outcome
from pubsub.worker.gate import Gate


def handler(concurrency: int) -> Handler:
    return Handler(name="h", function=lambda m: None, queue="q", exchange=None, binding_key="",
                   concurrency=concurrency, prefetch=100, retry=Retry(), time_limit=None, is_async=False)


def message(n: int) -> Message:
    return Message(body=n, headers={}, routing_key="q", exchange="", message_id=f"m{n}", published_at="",
                   queue="q", redelivered=False, delivery_count=1)


class Recorder:
    """execution.handle_batch in the lanes' threads: the size of each batch, run as slowly
    as a slow handler."""

    def __init__(self, seconds_each: float) -> None:
        self.sizes: list[int] = []
        self.seconds_each = seconds_each
        self._lock = threading.Lock()

    def __call__(self, spec: Handler, items: list[tuple[Message, int | None]], watched: Any) -> list[Outcome]:
        with self._lock:
            self.sizes.append(len(items))
        time.sleep(self.seconds_each * len(items))
        return [Outcome.HANDLED] * len(items)


async def run_burst(monkeypatch: pytest.MonkeyPatch, concurrency: int, count: int, seconds_each: float) -> Recorder:
    recorder = Recorder(seconds_each)
    monkeypatch.setattr(batches_module.execution, "handle_batch", recorder)
    with ThreadPoolExecutor(concurrency) as executor:
        lanes = Batches(handler(concurrency), executor, Gate())
        try:
            outcomes = [lanes.run(message(n), n) for n in range(count)]
            assert await asyncio.gather(*outcomes) == [Outcome.HANDLED] * count
        finally:
            lanes.close()
    return recorder


async def test_a_burst_is_shared_by_the_free_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = await run_burst(monkeypatch, concurrency=4, count=8, seconds_each=0.05)
    assert sorted(recorder.sizes) == [2, 2, 2, 2]


async def test_a_lane_takes_no_more_than_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = await run_burst(monkeypatch, concurrency=1, count=MAX_BATCH + 10, seconds_each=0.0)
    assert recorder.sizes == [MAX_BATCH, 10]
