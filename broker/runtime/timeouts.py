"""`within`: `asyncio.wait_for` as it should be on Python 3.11 too.

On Python 3.11, `asyncio.wait_for` swallows a cancellation that comes in the same
turn of the loop as the result it waits for: it returns the result, and the task
that was cancelled goes on. A task that waits in a loop (the writer for its next
commit, the hub's beat, the store's probe) then never ends, and whatever awaits
it, such as a `TaskGroup` being shut down, waits for ever. `asyncio.timeout`
hands the cancellation on; Python 3.12's `wait_for` is built on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """What `awaitable` gives, or TimeoutError once `seconds` have passed (None: no limit),
    cancelling it; a cancellation of the caller is never lost."""
    async with asyncio.timeout(seconds):
        return await awaitable
