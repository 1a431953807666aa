"""Delayed messages: how late after its time each message of an `x-delayed-message`
exchange arrives (docs/protocol.md, "Delayed messages").

N persistent messages with delays spread at random over S seconds are published
to a delayed exchange (a confirm window of 500, as a publisher's), bound to a
durable queue that one WebSocket subscriber reads (our JSON frames, no acks).
A message is due at its `published_at` plus its `x-delay`; its lateness is its
arrival at the subscriber minus that. The value is the 99th percentile; the
median and the number that arrived early (which must be none) go in `extra`.

Ours only: RabbitMQ's delayed-message exchange is a plugin of its own
(rabbitmq_delayed_message_exchange), not part of the server measured here.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from datetime import datetime
from typing import Any, Final

import httpx
import websockets

from .measure import Measurement, Mode
from .targets import Target
from .ws_scenarios import GRACE, unique

CONFIRM_WINDOW: Final = 500
MIN_DELAY_MS: Final = 50
# Messages and the seconds their delays spread over: full, then --quick.
SIZES: Final = ((10_000, 5.0), (2_000, 2.0))


def due(frame: dict[str, Any]) -> float:
    """When a delivered message was due, on the wall clock."""
    return datetime.fromisoformat(frame["published_at"]).timestamp() + int(frame["headers"]["x-delay"]) / 1000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * share) - 1)]


async def _declare(http_base: str, exchange: str, queue: str) -> None:
    async with httpx.AsyncClient(base_url=http_base, timeout=GRACE) as api:
        for path, body in (
            ("/api/exchanges/", {"name": exchange, "type": "x-delayed-message", "arguments": {"x-delayed-type": "direct"}}),
            ("/api/queues/", {"name": queue}),
            ("/api/bindings/", {"exchange": exchange, "queue": queue, "binding_key": "run"}),
        ):
            answer = await api.post(path, json=body)
            if answer.status_code != 201:
                raise RuntimeError(f"POST {path} answered {answer.status_code}: {answer.text[:200]}")


async def _delete(http_base: str, exchange: str, queue: str) -> None:
    async with httpx.AsyncClient(base_url=http_base, timeout=GRACE) as api:
        await api.delete(f"/api/exchanges/{exchange}/")  # its holding queue goes with it
        await api.delete(f"/api/queues/{queue}/")


async def _publish(ws_url: str, exchange: str, delays: list[int]) -> None:
    async with websockets.connect(ws_url, max_size=None) as ws:
        for start in range(0, len(delays), CONFIRM_WINDOW):
            window = delays[start : start + CONFIRM_WINDOW]
            for n, delay in enumerate(window, start):
                await ws.send(json.dumps({"type": "publish", "id": n, "exchange": exchange, "routing_key": "run",
                                          "body": n, "headers": {"x-delay": delay}}))
            for _ in window:
                frame = json.loads(await asyncio.wait_for(ws.recv(), GRACE * 3))
                if frame.get("type") != "confirm" or frame.get("routed") != 1:
                    raise RuntimeError(f"publish answered {frame}")


async def _receive(ws_url: str, queue: str, count: int, subscribed: asyncio.Event, seconds: float) -> dict[int, float]:
    """Each message's lateness in seconds, by body, until `count` have come or `seconds` passed."""
    lateness: dict[int, float] = {}
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "id": "s", "queue": queue, "prefetch": 0}))
        deadline = time.monotonic() + seconds
        while len(lateness) < count and time.monotonic() < deadline:
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                break
            if frame.get("type") == "subscribed":
                subscribed.set()
            elif frame.get("type") == "message":
                lateness[frame["body"]] = time.time() - due(frame)
            elif frame.get("type") == "error":
                raise RuntimeError(f"subscribe refused: {frame}")
    return lateness


async def delayed(target: Target, mode: Mode) -> Measurement:
    """p99 lateness in ms of N delayed messages spread over S seconds (ours only)."""
    if target.http_base is None:
        return Measurement(None, note="no HTTP API to declare the delayed exchange")
    count, spread = SIZES[1] if mode.quick else SIZES[0]
    exchange, queue = unique("bench.later"), unique("bench.later.q")
    await _declare(target.http_base, exchange, queue)
    try:
        subscribed = asyncio.Event()
        receiver = asyncio.create_task(_receive(target.ws_url, queue, count, subscribed, spread + GRACE * 3))
        await asyncio.wait_for(subscribed.wait(), GRACE)
        rng = random.Random(7)
        await _publish(target.ws_url, exchange, [rng.randrange(MIN_DELAY_MS, int(spread * 1000)) for _ in range(count)])
        lateness = list((await receiver).values())
    finally:
        await _delete(target.http_base, exchange, queue)
    if len(lateness) < count:
        return Measurement(None, note=f"{count - len(lateness)} of {count:,} never arrived")
    early = sum(1 for late in lateness if late < 0)
    median = statistics.median(lateness) * 1000
    return Measurement(
        percentile(lateness, 0.99) * 1000,
        count,
        note=f"{count:,} messages over {spread:.0f} s; median {median:.1f} ms late; {early} early",
        extra={"median_ms": median, "early": float(early)},
    )
