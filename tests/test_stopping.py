"""The tests' bounded stop (tests/stopping.py): a stop that ends is awaited as it is; one that
hangs is warned about, with the tasks' stacks, instead of hanging the run."""

from __future__ import annotations

import asyncio

import pytest

from tests import stopping
from tests.stopping import StopHung, stop_within


async def test_a_stop_that_ends_is_awaited() -> None:
    ended: list[bool] = []

    async def stop() -> None:
        await asyncio.sleep(0.01)
        ended.append(True)

    await stop_within(stop(), "a router")
    assert ended == [True]


async def test_a_stop_that_hangs_is_warned_about_with_the_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stopping, "STOP_SECONDS", 0.05)

    async def hung() -> None:
        await asyncio.Event().wait()

    with pytest.warns(StopHung, match="(?s)a router did not stop within 0.05 s; the tasks:.*hung"):
        await stop_within(hung(), "a router")
