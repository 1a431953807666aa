"""Whether the message store answers (broker/runtime/store_watch.py): the writer's commits say
so, and a probe asks when the store has been quiet."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from broker.engine.messages import BacklogRows, StoredCopy
from broker.runtime import store_watch
from broker.runtime.store_watch import StoreWatch
from broker.runtime.writer import GroupCommitWriter
from tests.engine.helpers import msg


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_watch, "CHECK_SECONDS", 0.02)
    monkeypatch.setattr(store_watch, "PROBE_TIMEOUT_SECONDS", 0.05)
    monkeypatch.setattr(store_watch, "HANG_SECONDS", 0.05)


async def watched(watch: StoreWatch, probe: Any, seconds: float) -> None:
    task = asyncio.create_task(watch.run(probe))
    await asyncio.sleep(seconds)
    task.cancel()


async def test_a_failing_probe_marks_the_store_unreachable_until_one_answers() -> None:
    watch = StoreWatch(asyncio.get_running_loop().time)
    away = True

    async def probe() -> float:
        if away:
            raise OSError("connection refused")
        return 0.001

    await watched(watch, probe, 0.1)
    assert (watch.reachable, watch.error) == (False, "OSError: connection refused")
    away = False
    await watched(watch, probe, 0.1)
    assert (watch.reachable, watch.error) == (True, None)


async def test_a_probe_that_hangs_times_out_and_is_not_asked_again_meanwhile() -> None:
    watch = StoreWatch(asyncio.get_running_loop().time)
    asked = 0
    release = asyncio.Event()

    async def probe() -> float:
        nonlocal asked
        asked += 1
        await release.wait()
        return 0.001

    await watched(watch, probe, 0.3)
    assert not watch.reachable and "no answer" in (watch.error or "")
    assert asked == 1
    release.set()
    await watched(watch, probe, 0.1)
    assert watch.reachable


class _AwayStore:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def write(self, inserts: Sequence[StoredCopy], deletes: Sequence[int], queues_to_delete: Sequence[int]) -> None:
        raise self.error

    def ping(self) -> None:
        raise self.error

    def close(self) -> None:
        pass

    def refused(self, error: BaseException) -> bool:
        return isinstance(error, ValueError)  # stands for the database refusing the data

    def find_refused(self, inserts: Sequence[StoredCopy]) -> list[int]:
        return [copy.store_id for copy in inserts]

    def delete_backlogs(self, backlogs: Sequence[BacklogRows]) -> None:
        pass


@pytest.mark.parametrize(("error", "reachable"), [(OSError("gone"), False), (ValueError("too long"), True)])
async def test_the_writer_tells_the_watch_whether_a_commit_reached_the_database(
    error: Exception, reachable: bool
) -> None:
    watch = StoreWatch(asyncio.get_running_loop().time)
    writer = GroupCommitWriter(_AwayStore(error), checkpoint_seconds=10.0, watch=watch)
    writer.append([StoredCopy(1, "q", msg("", "q", 1))])
    await writer.flush()
    assert watch.reachable is reachable


async def test_a_busy_loop_does_not_make_a_quick_database_look_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's time is the database's, measured on its thread: the loop may answer late."""
    monkeypatch.setattr(store_watch, "HANG_SECONDS", 5.0)
    watch = StoreWatch(asyncio.get_running_loop().time)

    async def late(seconds: float) -> float:
        await asyncio.sleep(0.1)  # the loop comes back late, past PROBE_TIMEOUT_SECONDS (0.05 here)...
        return seconds  # ...the database's own time

    await watched(watch, lambda: late(0.001), 0.3)
    assert (watch.reachable, watch.error) == (True, None)
    await watched(watch, lambda: late(1.0), 0.3)
    assert watch.reachable is False and "took 1.0 s" in (watch.error or "")
