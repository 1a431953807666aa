"""A durable queue deeper than memory, against the real runbroker: its RSS stays flat
while a backlog builds with no consumer, a restart reads only the windows, and one
consumer then drains the backlog in order, each message once.

The depth is E2E_BACKLOG_MESSAGES (200,000 by default, so that the test command stays
quick; README, "Queues deeper than memory", says what 5,000,000 gave). Runs on SQLite,
and on PostgreSQL in the second run of scripts/test."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import BrokerProcess
from tests.e2e.numbered import drain_numbered, publish_numbered

# A restart's time and the broker's memory are measured: not beside another test process.
pytestmark = [pytest.mark.e2e, pytest.mark.alone]

MESSAGES = int(os.environ.get("E2E_BACKLOG_MESSAGES", "200000"))
RSS_LIMIT = 300 * 1024 * 1024
RESTART_LIMIT = 3.0  # seconds from the process's start to its first answer
IN_FLIGHT = 1000  # unconfirmed publishes at a time
PAD = "x" * 70  # a body of about 100 bytes


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """The largest RSS of a process, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except (OSError, AssertionError):  # the process is gone
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


async def test_a_backlog_deeper_than_memory_keeps_rss_flat_restarts_fast_and_drains_in_order(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path)
    broker.start()
    try:
        assert httpx.post(f"{broker.url}/api/queues/", json={"name": "deep"}).status_code == 201
        assert broker.proc is not None
        peak = PeakRss(broker.proc.pid)
        await publish_numbered(broker.ws_url, "deep", MESSAGES, PAD, persistent=True, in_flight=IN_FLIGHT,
                               confirmed=[], timeout=30)
        published_peak = peak.stop()
        assert published_peak < RSS_LIMIT, f"RSS reached {published_peak / 2**20:.0f} MiB with {MESSAGES} queued"
        counts = httpx.get(f"{broker.url}/api/queues/deep/").json()
        assert counts["messages_ready"] == MESSAGES

        broker.stop()
        started = time.monotonic()
        broker.start()
        restart = time.monotonic() - started
        assert restart < RESTART_LIMIT, f"the restart took {restart:.1f} s with {MESSAGES} stored"
        assert broker.proc is not None
        assert rss(broker.proc.pid) < RSS_LIMIT
        assert httpx.get(f"{broker.url}/api/queues/deep/").json()["messages_ready"] == MESSAGES

        peak = PeakRss(broker.proc.pid)
        got = await drain_numbered(broker.ws_url, "deep", MESSAGES, prefetch=2000, ack_every=500, timeout=30)
        drained_peak = peak.stop()
        assert got == list(range(MESSAGES))  # in order, each once
        assert drained_peak < RSS_LIMIT, f"RSS reached {drained_peak / 2**20:.0f} MiB while draining"
        await asyncio.sleep(1.0)  # the acknowledgements' checkpoint (0.5 s here)
        assert httpx.get(f"{broker.url}/api/queues/deep/").json()["messages_ready"] == 0
        print(  # the figures, for the README
            f"\n{MESSAGES} messages: peak RSS {published_peak / 2**20:.0f} MiB publishing, "
            f"{drained_peak / 2**20:.0f} MiB draining; restart {restart:.2f} s"
        )
    finally:
        broker.close()
