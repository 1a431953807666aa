"""The memory limit's alarm and the WebSocket connections' unsent budget
(broker/runtime/memory.py), with a resident size the test sets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.runtime.memory import CLEAR_FRACTION, MemoryGuard, UnsentBudget, parse_memory_limit
from broker.transport.outbox import Outbox

MIB = 1024 * 1024


def test_the_limit_is_a_share_of_the_machine_or_a_size() -> None:
    assert parse_memory_limit("40%", machine=1000 * MIB) == 400 * MIB
    assert parse_memory_limit("512MiB", machine=0) == 512 * MIB
    assert parse_memory_limit("2GiB", machine=0) == 2 * 1024 * MIB
    assert parse_memory_limit("1500000", machine=0) == 1_500_000
    for bad in ("0%", "150%", "-1MiB", "lots", ""):
        with pytest.raises(ValueError, match="a percentage of the machine's memory"):
            parse_memory_limit(bad, machine=1000 * MIB)


async def test_the_alarm_rises_over_the_limit_and_clears_under_it_with_a_margin() -> None:
    resident = [90 * MIB]
    guard = MemoryGuard(100 * MIB, read_resident=lambda: resident[0])
    guard.sample()
    assert not guard.alarm
    resident[0] = 101 * MIB
    guard.sample()
    assert guard.alarm and guard.state() == {"used": 101 * MIB, "limit": 100 * MIB, "alarm": True, "router_alarm": False}
    waiter = asyncio.ensure_future(guard.wait_clear())
    resident[0] = int(100 * MIB * CLEAR_FRACTION) + 1  # under the limit, not under the margin
    guard.sample()
    await asyncio.sleep(0)
    assert guard.alarm and not waiter.done()
    resident[0] = 80 * MIB
    guard.sample()
    await asyncio.wait_for(waiter, 1)
    assert not guard.alarm


class Member:
    def __init__(self, budget: UnsentBudget, buffered: int) -> None:
        self.buffered, self.closed, self.budget = buffered, False, budget
        budget.total += buffered
        budget.join(self)

    def too_slow(self) -> None:
        self.closed = True
        self.budget.total -= self.buffered
        self.budget.leave(self)
        self.buffered = 0


def test_past_the_budget_the_largest_are_closed_first_until_under_it() -> None:
    budget = UnsentBudget(100)
    small, large, middle = Member(budget, 30), Member(budget, 50), Member(budget, 40)
    budget.over()
    assert (large.closed, middle.closed, small.closed) == (True, False, False)
    assert budget.total == 70


async def test_outboxes_share_the_budget_and_the_largest_is_closed_as_a_slow_consumer() -> None:
    budget = UnsentBudget(10_000)
    blocked = asyncio.Event()
    sent: list[Any] = []

    async def never_sends(event: Any) -> None:
        sent.append(event)
        await blocked.wait()  # a client that does not read

    slow: list[str] = []
    outboxes = [
        Outbox(never_sends, 1_000_000, on_too_slow=lambda n=n: slow.append(n), on_failed=lambda: None, budget=budget)
        for n in ("a", "b")
    ]
    for n, outbox in enumerate(outboxes):
        outbox.start(name=f"sender-{n}")
    outboxes[0].extend(["x" * 1000] * 6)
    outboxes[1].extend(["y" * 1000] * 3)
    assert budget.total == 9000 and slow == []
    outboxes[0].extend(["x" * 1000] * 2)  # 11,000 together: "a" holds the most
    assert slow == ["a"]
    assert budget.total == 3000
    for outbox in outboxes:
        outbox.stop()
    assert budget.total == 0


async def test_an_edge_holds_its_publishers_while_the_router_is_over_its_limit() -> None:
    guard = MemoryGuard(100 * MIB, read_resident=lambda: 10 * MIB)
    changes: list[bool] = []
    guard.on_change(lambda: changes.append(guard.local_alarm))
    guard.set_router_alarm(True)
    assert guard.alarm and not guard.local_alarm and changes == []  # an edge does not tell others
    waiter = asyncio.ensure_future(guard.wait_clear())
    guard.sample()
    await asyncio.sleep(0)
    assert not waiter.done()
    guard.set_router_alarm(False)
    await asyncio.wait_for(waiter, 1)
