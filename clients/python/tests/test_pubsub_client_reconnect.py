"""Reconnection: the broker is killed (SIGKILL) and started again on the same port and
database while the client publishes and consumes. No confirmed message is lost, and
consumption resumes by itself (docs/protocol.md, "Durability"; at-least-once)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST_BACKOFF

from pubsub_client import Client, Delivery, Event, EventKind, Subscription
from tests.e2e.harness import BrokerProcess
from tests.eventually import eventually

pytestmark = pytest.mark.e2e

QUEUE = "work"
WINDOW = 16  # publishes in flight at a time
BEFORE_KILL = 300  # confirmed before the SIGKILL
TOTAL = 600  # confirmed by the end


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.close()


async def publisher(client: Client, confirmed: set[int], stop: asyncio.Event) -> None:
    """Publish n = 0, 1, 2… with WINDOW awaiting their confirm, until `stop`."""
    window = asyncio.Semaphore(WINDOW)
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        try:
            result = await client.publish("", {"n": n}, routing_key=QUEUE, message_id=f"msg-{n}")
            assert result.routed == 1
            confirmed.add(n)
        finally:
            window.release()

    n = 0
    while not stop.is_set():
        await window.acquire()
        task = asyncio.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    await asyncio.gather(*tasks)  # every publish made is confirmed in the end


async def consumer(subscription: Subscription, seen: dict[str, int]) -> None:
    """Count every delivery by message_id (duplicates are allowed: at-least-once)."""
    delivery: Delivery
    async for delivery in subscription:
        seen[delivery.message_id] = seen.get(delivery.message_id, 0) + 1
        await delivery.ack()


async def test_reconnects_resubscribes_and_resends_across_a_sigkill(own_broker: BrokerProcess) -> None:
    events: list[Event] = []
    confirmed: set[int] = set()
    seen: dict[str, int] = {}
    tail_seen: list[object] = []
    stop = asyncio.Event()
    async with Client(own_broker.url, on_event=events.append, backoff=FAST_BACKOFF) as client:
        await client.declare_queue(QUEUE)
        await client.declare_exchange("alerts", "topic")
        work = await client.subscribe(QUEUE, prefetch=20)
        alerts = await client.subscribe(exchange="alerts", binding_key="disk.#")
        consuming = asyncio.create_task(consumer(work, seen))
        publishing = asyncio.create_task(publisher(client, confirmed, stop))

        async def tail() -> None:
            async for delivery in alerts:
                tail_seen.append(delivery.body)

        tailing = asyncio.create_task(tail())
        try:
            await eventually(lambda: len(confirmed) >= BEFORE_KILL, timeout=20, what="confirms before the kill")
            await asyncio.to_thread(own_broker.kill)
            await eventually(lambda: any(e.kind is EventKind.DISCONNECTED for e in events), timeout=5, what="the drop")
            assert not client.connected
            # Made while the broker is down: sent once it is back, never lost.
            while_down = asyncio.create_task(client.publish("", "while-down", routing_key=QUEUE))
            await asyncio.sleep(0.2)  # a fixed wait: it checks that something does NOT happen
            assert not while_down.done()

            await asyncio.to_thread(own_broker.start)  # same port, same database
            result = await asyncio.wait_for(while_down, 20)
            assert result.routed == 1
            await eventually(lambda: len(confirmed) >= TOTAL, timeout=20, what="confirms after the restart")
            stop.set()
            await asyncio.wait_for(publishing, 20)

            # Every confirmed message reaches the consumer, which resubscribed by itself.
            expected = {f"msg-{n}" for n in confirmed} | {result.message_id}
            await eventually(lambda: expected <= seen.keys(), timeout=20, what="every confirmed message to be consumed")

            # The exchange subscription came back too (with a new private queue).
            assert (await client.publish("alerts", "disk full", routing_key="disk.sda")).routed == 1
            await eventually(lambda: tail_seen == ["disk full"], timeout=5, what="the exchange subscription")
        finally:
            stop.set()
            for task in (consuming, publishing, tailing):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    kinds = [e.kind for e in events]
    assert kinds[:2] == [EventKind.CONNECTED, EventKind.DISCONNECTED]
    assert EventKind.RECONNECTED in kinds and EventKind.GAVE_UP not in kinds
    [resubscribed] = [e for e in events if e.kind is EventKind.RESUBSCRIBED]
    assert resubscribed.count == 2
    republished = [e for e in events if e.kind is EventKind.REPUBLISHED]
    assert republished and republished[0].count >= 1  # at least the one made while down
