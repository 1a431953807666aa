"""Waiting in the tests: poll a condition in small steps until it holds, and fail
naming what was awaited when it does not hold within the timeout.

    await eventually(lambda: runtime.broker.queue_counts("q").consumers == 0, what="the consumer gone")
    eventually_sync(lambda: role(node) == "router", timeout=20, what="the standby takes over")

Use it instead of sleeping a fixed time and then asserting: a fixed sleep is too
short on a busy machine and too long everywhere else. The condition may be
`async` (return an awaitable), e.g. to ask a real broker over HTTP; it may also
raise, to fail at once (a publisher task that died, a process that exited).

A fixed sleep stays where time passing is the scenario itself (a TTL or a
checkpoint interval to go by, a rate to pace, `asyncio.sleep(0)` to let other
tasks run), and where a test checks that something does NOT happen: there is
no condition to poll for, only a time to wait.

Plain Python, no Django: clients/python/tests imports it too.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

TIMEOUT = 5.0  # seconds; generous: a passing test never waits it out
INTERVAL = 0.01  # seconds between two checks; pass more where a check is costly (HTTP, SQL)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    what: str = "",
) -> None:
    """Return once `condition()` is true; raise AssertionError naming `what` after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or _describe(condition)}")
        await asyncio.sleep(interval)


def eventually_sync(
    condition: Callable[[], bool],
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    what: str = "",
) -> None:
    """The same for code without an event loop (sync tests, a process polled from a thread)."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):  # always true: a mistake, not a condition
            if inspect.iscoroutine(outcome):
                outcome.close()
            raise TypeError("eventually_sync got an async condition: use `await eventually(...)`")
        if outcome:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or _describe(condition)}")
        time.sleep(interval)


def _describe(condition: Callable[..., object]) -> str:
    """The condition's source line when there is one (a lambda), else its name."""
    try:
        return inspect.getsource(condition).strip()
    except (OSError, TypeError):
        return repr(condition)
