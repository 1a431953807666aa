"""pubsub/worker/gate.py: handlers run together, or a suspect alone, first in line."""

from __future__ import annotations

import asyncio

from pubsub.worker.gate import Gate


async def test_sharers_run_together_and_one_alone_waits_for_them_then_runs_with_nobody() -> None:
    gate, seen = Gate(), []
    first, second, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def share(name: str, entered: asyncio.Event) -> None:
        async with gate.shared():
            seen.append(f"{name} in")
            entered.set()
            await release.wait()
            seen.append(f"{name} out")

    async def alone() -> None:
        async with gate.alone():
            seen.append("alone")

    a = asyncio.create_task(share("a", first))
    b = asyncio.create_task(share("b", second))
    await first.wait()
    await second.wait()  # both inside at once
    lonely = asyncio.create_task(alone())
    await asyncio.sleep(0.01)
    late = asyncio.create_task(share("late", asyncio.Event()))  # comes after the one waiting alone
    await asyncio.sleep(0.01)
    assert seen == ["a in", "b in"]
    release.set()
    await asyncio.gather(a, b, lonely, late)
    assert seen[:2] == ["a in", "b in"] and sorted(seen[2:4]) == ["a out", "b out"]
    assert seen[4:] == ["alone", "late in", "late out"]


async def test_a_cancelled_wait_to_run_alone_lets_the_others_in() -> None:
    gate, release = Gate(), asyncio.Event()

    async def share(entered: asyncio.Event) -> None:
        async with gate.shared():
            entered.set()
            await release.wait()

    holder_in, kept_out_in = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(share(holder_in))
    await holder_in.wait()

    async def alone() -> None:
        async with gate.alone():
            pass

    waiting = asyncio.create_task(alone())
    await asyncio.sleep(0.01)
    kept_out = asyncio.create_task(share(kept_out_in))  # waits behind the one waiting alone
    await asyncio.sleep(0.01)
    assert not kept_out_in.is_set()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    async with asyncio.timeout(1):
        await kept_out_in.wait()  # let in at once, not when the holder leaves
    release.set()
    await asyncio.gather(holder, kept_out)
