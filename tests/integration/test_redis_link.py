"""The cluster link's own Redis traffic (broker/cluster/redis_link.py) against a real Redis
(TEST_REDIS_URL, default redis://127.0.0.1:6379): order, batched reads, a full channel
(and wire.send_batch waiting it out), groups and members that stop joining, a cancelled
receive that loses nothing, an entry that is not a batch, and connections that go silent."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import msgpack
import pytest
import redis
from channels.exceptions import ChannelFull
from redis.exceptions import TimeoutError as LinkTimeoutError

from broker.cluster import redis_link
from broker.cluster.redis_link import RedisLink
from broker.cluster.wire import BEAT_SECONDS, REJOIN_SECONDS, ROUTER_TIMEOUT, send_batch

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


# -- groups: members that stop joining -------------------------------------------


def _joined_ago(url: str, group: str, channel: str, seconds: float) -> None:
    """Make `channel`'s membership of `group` as old as a join `seconds` ago, in Redis's time."""
    client = redis.Redis.from_url(url)
    now, micros = client.time()
    client.zadd(redis_link.KEY_PREFIX + group, {channel: now + micros / 1e6 - seconds})


async def test_a_member_that_stops_joining_leaves_the_group_and_its_channel_expires(
    link: RedisLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An edge killed without leaving: the beats stop going to its channel, which expires
    # (EXPIRY_MS shortened to see it). A live edge joins every REJOIN_SECONDS: one a second
    # late stays.
    monkeypatch.setattr(redis_link, "EXPIRY_MS", 300)
    live, dead = await link.new_channel(), await link.new_channel()
    await link.group_add("edges", live)
    await link.group_add("edges", dead)
    await link.group_send("edges", {"type": "beat", "n": 0})
    client = redis.Redis.from_url(link._url)
    assert client.exists(redis_link.KEY_PREFIX + dead) == 1
    _joined_ago(link._url, "edges", live, REJOIN_SECONDS + 1)
    _joined_ago(link._url, "edges", dead, 3 * REJOIN_SECONDS + 1)
    for n in range(1, 7):  # beats for 0.6 s, past the dead channel's expiry
        await link.group_send("edges", {"type": "beat", "n": n})
        await asyncio.sleep(0.1)
    assert client.zrange(redis_link.KEY_PREFIX + "edges", 0, -1) == [live.encode()]
    assert client.exists(redis_link.KEY_PREFIX + dead) == 0
    assert [(await asyncio.wait_for(link.receive(live), 2))["n"] for _ in range(7)] == list(range(7))


async def test_a_member_s_join_is_timed_by_redis_not_by_its_node_s_clock(
    link: RedisLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node whose clock is an hour behind the router's stays in the group.
    channel = await link.new_channel()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)
    await link.group_add("edges", channel)
    monkeypatch.setattr(time, "time", real_time)
    await link.group_send("edges", {"type": "beat"})
    assert (await asyncio.wait_for(link.receive(channel), 2)) == {"type": "beat"}


# -- a full channel ----------------------------------------------------------------


async def test_a_batch_that_meets_a_full_channel_is_sent_again_less_and_less_often_and_in_order(
    link: RedisLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_link, "CAPACITY", 1)
    channel = await link.new_channel()
    await link.send(channel, {"seq": 0})
    attempts = 0
    send = link.send

    async def counted(to: str, message: dict[str, object]) -> None:
        nonlocal attempts
        attempts += 1
        await send(to, message)

    monkeypatch.setattr(link, "send", counted)

    async def sender() -> None:
        for seq in (1, 2):
            await send_batch(link, channel, {"seq": seq}, wanted=lambda: True, salvage=lambda _: None)

    sending = asyncio.create_task(sender())
    try:
        await asyncio.sleep(1)
        # Every 5 ms, 10 ms, ... up to 200 ms: 10 script calls in the first second, not 200.
        assert 5 <= attempts <= 12
        got = [(await asyncio.wait_for(link.receive(channel), 1))["seq"] for _ in range(3)]
        assert got == [0, 1, 2]
        await asyncio.wait_for(sending, 1)
    finally:
        sending.cancel()


# -- connections that go silent ------------------------------------------------------


class SilentProxy:
    """A TCP proxy to Redis that can stop forwarding on the connections it holds without
    closing them, as a NAT that forgot them or a moved virtual IP leaves them: no reset,
    no answer. Connections made after that go through."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._silent: list[list[bool]] = []  # one flag per connection
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        """The proxy's URL, for a database of its own, emptied."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        database = random.randint(1, 15)
        redis.Redis.from_url(f"{REDIS_SERVER}/{database}").flushdb()
        return f"redis://127.0.0.1:{port}/{database}"

    def go_silent(self) -> None:
        for silent in self._silent:
            silent[0] = True

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        target = urlsplit(REDIS_SERVER)
        redis_reader, redis_writer = await asyncio.open_connection(target.hostname, target.port or 6379)
        silent = [False]
        self._silent.append(silent)
        self._writers += [client_writer, redis_writer]
        await asyncio.gather(
            self._forward(client_reader, redis_writer, silent),
            self._forward(redis_reader, client_writer, silent),
            return_exceptions=True,
        )

    @staticmethod
    async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, silent: list[bool]) -> None:
        while data := await reader.read(65536):
            if not silent[0]:  # silent: read and dropped, the connection left open
                writer.write(data)
                await writer.drain()
        writer.close()

    async def close(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def proxy() -> AsyncIterator[SilentProxy]:
    found = SilentProxy()
    try:
        yield found
    finally:
        await found.close()


async def test_a_send_on_a_connection_gone_silent_fails_soon_and_the_next_connects_again(proxy: SilentProxy) -> None:
    link = RedisLink(await proxy.start())
    try:
        channel = await link.new_channel()
        await link.send(channel, {"seq": 1})
        proxy.go_silent()
        started = time.monotonic()
        # The router's beat that fails is sent again BEAT_SECONDS later: it must get through
        # within ROUTER_TIMEOUT of the last one, or every edge drops its router.
        with pytest.raises(LinkTimeoutError):
            await asyncio.wait_for(link.send(channel, {"seq": 2}), ROUTER_TIMEOUT - BEAT_SECONDS)
        await asyncio.wait_for(link.send(channel, {"seq": 2}), 1)  # on a new connection
        assert time.monotonic() - started < ROUTER_TIMEOUT - BEAT_SECONDS
        await link.group_add("edges", channel)
        await link.group_send("edges", {"seq": 3})
    finally:
        await link.close()
    direct = RedisLink(link._url.replace(urlsplit(link._url).netloc, urlsplit(REDIS_SERVER).netloc))
    try:
        got = [(await asyncio.wait_for(direct.receive(channel), 2))["seq"] for _ in range(3)]
        assert got == [1, 2, 3]
    finally:
        await direct.close()


async def test_a_reader_whose_connection_went_silent_reads_again_within_the_router_timeout(
    proxy: SilentProxy,
) -> None:
    url = await proxy.start()
    link, direct = RedisLink(url), RedisLink(url.replace(urlsplit(url).netloc, urlsplit(REDIS_SERVER).netloc))
    try:
        channel = await link.new_channel()
        await direct.send(channel, {"seq": 1})
        assert (await asyncio.wait_for(link.receive(channel), 2))["seq"] == 1
        proxy.go_silent()
        started = time.monotonic()
        # Sent once the blocking pop under way on the silent connection has ended in Redis
        # (it would take the batch into the void: lost, which wire.py's numbers notice).
        await asyncio.sleep(redis_link.BLOCK_SECONDS + 0.1)
        await direct.send(channel, {"seq": 2})
        # Seen by the edge in time: its router's beats go on.
        got = await asyncio.wait_for(link.receive(channel), max(0.1, started + ROUTER_TIMEOUT - time.monotonic()))
        assert got["seq"] == 2
    finally:
        await link.close()
        await direct.close()
