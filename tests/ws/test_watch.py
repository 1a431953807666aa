"""The `watch` frame: live counts and rates, once a second, for the web console."""

from __future__ import annotations

import asyncio

from broker.runtime.runtime import Runtime
from tests.ws.conftest import Connect
from tests.ws.helpers import declare_queue, publish, receive, request, send


async def test_watch_sends_stats_now_and_every_second_until_unwatch(runtime: Runtime, connect: Connect) -> None:
    await declare_queue("jobs")
    watcher = await connect()
    assert await request(watcher, {"type": "watch", "id": "w"}) == {"type": "watching", "id": "w"}
    first = await receive(watcher)
    assert first["type"] == "stats"
    assert [q["name"] for q in first["queues"]] == ["jobs"]
    for n in range(3):
        await publish(runtime, "", "jobs", n, persistent=False)
    later = await receive(watcher, timeout=3)
    (jobs,) = later["queues"]
    assert jobs["messages_ready"] == 3 and jobs["publish_rate"] > 0
    assert later["totals"]["published"] > 0
    await send(watcher, {"type": "unwatch", "id": "u"})
    while (frame := await receive(watcher)).get("type") == "stats":
        pass  # one may have been on its way
    assert frame == {"type": "unwatched", "id": "u"}
    await asyncio.sleep(1.3)  # a fixed wait, past the next second's stats: none must come
    assert await watcher.receive_nothing(timeout=0.2)
