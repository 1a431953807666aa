"""Stopping a router (or a cluster) at a test's end, bounded in time.

A rare hang was seen there, twice in a day of runs (the runtime's stop awaiting something
that never finished, the loop idle); its cause is not found yet. Rather than hang the whole
run, the stop is given STOP_SECONDS: past them the test warns, with every task's stack (what
the stop waited on), and the run goes on.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Awaitable
from typing import Final

STOP_SECONDS: Final = 30.0


class StopHung(UserWarning):
    """A router's stop did not end within STOP_SECONDS."""


async def stop_within(stopping: Awaitable[None], what: str) -> None:
    task = asyncio.ensure_future(stopping)
    done, _ = await asyncio.wait({task}, timeout=STOP_SECONDS)
    if task in done:
        task.result()
        return
    stacks = io.StringIO()
    for other in asyncio.all_tasks():
        other.print_stack(file=stacks)
    warnings.warn(StopHung(f"{what} did not stop within {STOP_SECONDS:g} s; the tasks:\n{stacks.getvalue()}"), stacklevel=2)
    task.cancel()
