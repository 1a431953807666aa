"""The cluster link's own Redis traffic (broker/cluster/redis_link.py) against a real Redis
(TEST_REDIS_URL, default redis://127.0.0.1:6379): order, batched reads, a full channel,
groups, a cancelled receive that loses nothing, and an entry that is not a batch."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import msgpack
import pytest
import redis
from channels.exceptions import ChannelFull

from broker.cluster import redis_link
from broker.cluster.redis_link import RedisLink

from .cluster_harness import REDIS_SERVER

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def link() -> AsyncIterator[RedisLink]:
    url = f"{REDIS_SERVER}/{random.randint(1, 15)}"
    redis.Redis.from_url(url).flushdb()
    found = RedisLink(url)
    try:
        yield found
    finally:
        await found.close()


async def test_batches_arrive_in_order_and_many_per_read(link: RedisLink) -> None:
    channel = await link.new_channel()
    for n in range(250):  # more than one read's worth
        await link.send(channel, {"seq": n, "items": [["p", n, b"\x00bytes", "text"]]})
    got = [await link.receive(channel) for _ in range(250)]
    assert [m["seq"] for m in got] == list(range(250))
    assert got[7]["items"] == [["p", 7, b"\x00bytes", "text"]]


async def test_a_full_channel_refuses_and_nothing_is_pushed(link: RedisLink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_link, "CAPACITY", 3)
    channel = await link.new_channel()
    for n in range(3):
        await link.send(channel, {"seq": n})
    with pytest.raises(ChannelFull):
        await link.send(channel, {"seq": 3})
    assert [(await link.receive(channel))["seq"] for _ in range(3)] == [0, 1, 2]
    await link.send(channel, {"seq": 4})  # room again
    assert (await link.receive(channel))["seq"] == 4


async def test_a_group_reaches_its_members_until_they_leave(link: RedisLink) -> None:
    first, second = await link.new_channel(), await link.new_channel()
    await link.group_add("edges", first)
    await link.group_add("edges", second)
    await link.group_send("edges", {"type": "beat", "n": 1})
    assert (await link.receive(first))["n"] == 1 and (await link.receive(second))["n"] == 1
    await link.group_discard("edges", second)
    await link.group_send("edges", {"type": "beat", "n": 2})
    assert (await link.receive(first))["n"] == 2
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(link.receive(second), 0.3)


async def test_a_cancelled_receive_loses_nothing(link: RedisLink) -> None:
    channel = await link.new_channel()
    for _ in range(3):  # receives given up while the reader waits in Redis, or as a batch arrives
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(link.receive(channel), 0.05)
    await link.send(channel, {"seq": 1})
    waiting = asyncio.create_task(link.receive(channel))
    await link.send(channel, {"seq": 2})
    waiting.cancel()
    got = [] if waiting.cancelled() or not waiting.done() else [waiting.result()["seq"]]
    while len(got) < 2:
        got.append((await asyncio.wait_for(link.receive(channel), 2))["seq"])
    assert got == [1, 2]


async def test_an_entry_that_is_not_a_batch_is_skipped_and_the_reader_goes_on(link: RedisLink) -> None:
    # Something else wrote to the link's list, or an entry was damaged: one read pops it
    # among batches, which are still delivered, and the reader goes on.
    channel = await link.new_channel()
    key = redis_link.KEY_PREFIX + channel
    client = redis.Redis.from_url(link._url)
    client.rpush(key, redis_link.encode({"seq": 1}), b"\xc1", msgpack.packb(5), redis_link.encode({"seq": 2}))
    got = [(await asyncio.wait_for(link.receive(channel), 2))["seq"] for _ in range(2)]
    assert got == [1, 2]
    await link.send(channel, {"seq": 3})
    assert (await asyncio.wait_for(link.receive(channel), 2))["seq"] == 3
    assert not link._readers[channel].done()


async def test_two_links_talk_as_two_nodes(link: RedisLink) -> None:
    other = RedisLink(link._url)
    try:
        mine, theirs = await link.new_channel(), await other.new_channel()
        await other.send(mine, {"hello": theirs})
        assert (await asyncio.wait_for(link.receive(mine), 2)) == {"hello": theirs}
        await link.send(theirs, {"answer": 42})
        assert (await asyncio.wait_for(other.receive(theirs), 2)) == {"answer": 42}
    finally:
        await other.close()


async def test_a_link_that_never_read_closes() -> None:
    link = RedisLink(f"{REDIS_SERVER}/{random.randint(1, 15)}")
    await link.send(await link.new_channel(), {"n": 1})
    await link.close()
