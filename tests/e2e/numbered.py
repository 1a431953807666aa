"""Numbered messages over WebSocket for the end-to-end tests: publish n = 0 … count-1 with
confirms, and drain a queue with batched acks, so that a test can check that each
number came out once and in order."""

from __future__ import annotations

import asyncio
import json

import websockets


async def publish_numbered(
    url: str,
    queue: str,
    count: int,
    pad: str,
    *,
    persistent: bool,
    in_flight: int,
    confirmed: list[int],
    timeout: float | None = None,
    flow: list[str] | None = None,
) -> None:
    """Messages {"n": n, "pad": pad} to `queue` by the default exchange, `in_flight`
    unconfirmed at a time; each confirmed number goes into `confirmed` as it comes, and
    each `blocked` or `unblocked` the broker sends (its memory alarm) into `flow`.
    `timeout`: the longest wait for a confirm (None: a publisher held back waits)."""
    async with websockets.connect(url, max_size=None) as ws:
        sent = 0
        while len(confirmed) < count:
            while sent < count and sent - len(confirmed) < in_flight:
                await ws.send(json.dumps({"type": "publish", "id": sent, "exchange": "", "routing_key": queue,
                                          "body": {"n": sent, "pad": pad}, "message_id": f"m{sent}",
                                          "persistent": persistent}))
                sent += 1
            reply = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if reply["type"] in ("blocked", "unblocked"):
                assert flow is not None, reply
                flow.append(reply["type"])
                continue
            assert reply["type"] == "confirm", reply
            assert reply["routed"] == 1, reply
            confirmed.append(reply["id"])


def assert_told_when_held(flow: list[str]) -> None:
    """Each time it was held the publisher heard `blocked` (again while the hold lasted), then
    `unblocked` when it ended; and it was held at least once."""
    holds = [kind for n, kind in enumerate(flow) if n == 0 or kind != flow[n - 1]]  # repeats gone
    assert holds and holds == ["blocked", "unblocked"] * (len(holds) // 2), flow


async def drain_numbered(url: str, queue: str, count: int, *, prefetch: int, ack_every: int, timeout: float) -> list[int]:
    """`count` messages of `queue`, acknowledged every `ack_every`; their numbers in arrival order."""
    got: list[int] = []
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "id": "s", "queue": queue, "ack": "client", "prefetch": prefetch}))
        while len(got) < count:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if frame["type"] != "message":
                assert frame["type"] == "subscribed", frame
                continue
            got.append(frame["body"]["n"])
            if len(got) % ack_every == 0 or len(got) == count:
                await ws.send(json.dumps({"type": "ack", "delivery_tag": frame["delivery_tag"], "multiple": True}))
    return got
