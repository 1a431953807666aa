"""A steady load for the fault tests, and what it saw: confirmed publishes, acknowledged deliveries.

`Publisher` publishes numbered persistent messages at a steady rate through one
edge and records which were confirmed. `Consumer` subscribes through another edge
with client acks, acknowledges each delivery at once and records when. Both
reconnect and subscribe again by themselves when their connection ends, as a
client library does. `check()` holds them to what the broker promises:
every confirmed message is delivered, a message comes again only flagged
`redelivered`, and an acknowledged one comes back only when its
acknowledgement was under way at a fault (docs/deploy.md, "Failover").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets

from tests.e2e.client import WsClient

# An acknowledgement reaches the database at the router's next commit or checkpoint
# (CHECKPOINT_IN_SECONDS, 0.5 s in these tests) after it reached the router: one sent
# this long before a fault began is settled.
ACK_SETTLES_IN = 2.0
# Under the steady load a client hears from its edge many times a second: silent this
# long, the edge hangs (stopped, or cut off), and the client connects to another.
SILENT_EDGE = 8.0


@dataclass
class Fault:
    what: str
    began: float
    recovered: float | None = None  # when the test saw the cluster serve again


@dataclass
class Delivery:
    body: int
    redelivered: bool
    at: float


class Client(Protocol):
    urls: list[str]  # edges, tried in turn
    reconnects: int


async def reconnecting(
    client: Client, session: Callable[[WsClient], Awaitable[None]], going_on: Callable[[], bool]
) -> None:
    """Connect to the client's edges in turn and run `session` on each connection, again
    whenever it ends, while `going_on()`."""
    while going_on():
        url = client.urls[client.reconnects % len(client.urls)]
        connection: WsClient | None = None
        try:
            connection = await asyncio.wait_for(WsClient.connect(url), 5)
            await session(connection)
        except (OSError, websockets.WebSocketException, TimeoutError):
            client.reconnects += 1
            await asyncio.sleep(0.2)
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()


@dataclass
class Publisher:
    urls: list[str]  # edges, tried in turn
    queue: str
    rate: float = 200.0  # messages a second
    window: int = 32
    confirmed: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    confirmed_at: dict[int, float] = field(default_factory=dict)
    next: int = 0
    stopping: bool = False
    reconnects: int = 0

    async def run(self) -> None:
        await reconnecting(self, self._publish, lambda: not self.stopping)

    async def _publish(self, client: WsClient) -> None:
        outstanding: set[int] = set()
        interval = 1.0 / self.rate
        next_send = last_frame = time.monotonic()
        while not self.stopping or outstanding:
            now = time.monotonic()
            while not self.stopping and len(outstanding) < self.window and now >= next_send:
                number = self.next
                self.next += 1
                outstanding.add(number)
                await client.send({"type": "publish", "id": number, "routing_key": self.queue, "body": number})
                next_send += interval
            try:
                frame = await client.recv(timeout=min(0.05, max(0.001, next_send - time.monotonic())))
            except TimeoutError:
                if outstanding and time.monotonic() - last_frame > SILENT_EDGE:
                    raise  # the edge hangs (stopped, or cut off from us): another one
                continue
            last_frame = time.monotonic()
            if frame["type"] == "confirm":
                outstanding.discard(frame["id"])
                self.confirmed.add(frame["id"])
                self.confirmed_at[frame["id"]] = time.monotonic()
            elif frame["type"] == "error" and isinstance(frame.get("id"), int):
                assert frame["code"] in ("unavailable", "resource_locked", "queue_full"), frame
                outstanding.discard(frame["id"])
                self.failed.add(frame["id"])
            if next_send < time.monotonic() - 1:
                next_send = time.monotonic()  # held back (a fault): no burst to catch up


    def unanswered(self) -> set[int]:
        """Published, neither confirmed nor refused: the connection ended first."""
        return set(range(self.next)) - self.confirmed - self.failed


@dataclass
class Consumer:
    urls: list[str]  # edges, tried in turn
    queue: str
    prefetch: int = 50
    deliveries: list[Delivery] = field(default_factory=list)
    acked_at: dict[int, float] = field(default_factory=dict)
    other: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0

    @property
    def bodies(self) -> set[int]:
        return {delivery.body for delivery in self.deliveries}

    async def run(self) -> None:
        await reconnecting(self, self._consume, lambda: True)

    async def _subscribe(self, client: WsClient) -> None:
        await client.send(
            {"type": "subscribe", "id": "load", "queue": self.queue, "ack": "client", "prefetch": self.prefetch}
        )

    async def _consume(self, client: WsClient) -> None:
        await self._subscribe(client)
        while True:
            frame = await client.recv(timeout=SILENT_EDGE)
            if frame["type"] == "message":
                now = time.monotonic()
                self.deliveries.append(Delivery(frame["body"], frame["redelivered"], now))
                await client.send({"type": "ack", "delivery_tag": frame["delivery_tag"]})
                self.acked_at[frame["body"]] = now
                continue
            self.other.append(frame)
            if frame["type"] == "cancelled" or (frame["type"] == "error" and frame.get("id") == "load"):
                await asyncio.sleep(0.2)
                await self._subscribe(client)


def check(publisher: Publisher, consumer: Consumer, faults: list[Fault]) -> str:
    """Nothing confirmed lost; nothing delivered again unflagged; nothing acknowledged back
    unless its acknowledgement was under way at a fault. Returns what was seen, in a line."""
    lost = publisher.confirmed - consumer.bodies
    assert not lost, f"{len(lost)} confirmed messages never delivered, e.g. {sorted(lost)[:10]}"
    first_ack: dict[int, float] = {}
    for delivery in consumer.deliveries:
        if delivery.body not in first_ack:
            first_ack[delivery.body] = delivery.at  # acknowledged at once (Consumer)
            continue
        assert delivery.redelivered, (
            f"message {delivery.body} delivered at {first_ack[delivery.body]:.2f} and again at {delivery.at:.2f}"
            f" without `redelivered` (faults: {[(f.what, round(f.began, 2), f.recovered) for f in faults]})"
        )
        acked = first_ack[delivery.body]
        under_way = [
            fault for fault in faults
            if fault.began - ACK_SETTLES_IN <= acked <= (fault.recovered or float("inf"))
        ]
        assert under_way, (
            f"message {delivery.body}, acknowledged at {acked:.2f}, came back at {delivery.at:.2f}:"
            f" no fault was under way ({[(f.what, round(f.began, 2), f.recovered) for f in faults]})"
        )
    again = len(consumer.deliveries) - len(consumer.bodies)
    recoveries = ", ".join(f"{f.what}: {f.recovered - f.began:.1f} s" for f in faults if f.recovered is not None)
    return (
        f"{len(publisher.confirmed)} confirmed, {len(publisher.failed)} refused as unavailable,"
        f" {len(publisher.unanswered())} unanswered; {len(consumer.deliveries)} deliveries,"
        f" {again} of them again (redelivered); client reconnects: publisher {publisher.reconnects},"
        f" consumer {consumer.reconnects}; served again after {recoveries}"
    )
