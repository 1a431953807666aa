"""The cluster link's Redis client (broker/cluster/resp.py) against a real Redis
(TEST_REDIS_URL, default redis://127.0.0.1:6379): pipelined replies in order, errors,
a lost connection, a late reply, a user with a password and a database, scripts Redis
forgot, and uvloop (as `runbroker` runs it)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from broker.cluster import resp
from broker.cluster.redis_link import RedisLink
from broker.cluster.resp import RespConnection

from .cluster_harness import REDIS_SERVER


@pytest.fixture
def url() -> str:
    found = f"{REDIS_SERVER}/{random.randint(1, 15)}"
    redis.Redis.from_url(found).flushdb()
    return found


@pytest.fixture
async def connection(url: str) -> AsyncIterator[RespConnection]:
    found = RespConnection(url, timeout=5)
    try:
        yield found
    finally:
        found.close()


async def test_commands_of_many_tasks_are_answered_each_with_its_own_reply(connection: RespConnection) -> None:
    replies = await asyncio.gather(*(connection.call("INCR", "counter") for _ in range(500)))
    assert replies == list(range(1, 501))  # pipelined on one connection, in the order sent
    assert await connection.call("SET", "bytes", b"\x00\xff") == b"OK"
    assert await connection.call("GET", "bytes") == b"\x00\xff"
    assert await connection.call("ZADD", "z", 1.25, "member") == 1
    assert await connection.call("ZSCORE", "z", "member") == b"1.25"
    assert await connection.call("LPOP", "nothing") is None


async def test_an_error_reply_raises_and_the_connection_goes_on(connection: RespConnection) -> None:
    await connection.call("SET", "text", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await connection.call("LPUSH", "text", "y")
    assert await connection.call("GET", "text") == b"x"


async def test_a_lost_connection_fails_what_is_under_way_and_the_next_command_connects_again(
    url: str, connection: RespConnection
) -> None:
    name = f"link-{uuid.uuid4().hex[:8]}"
    await connection.call("CLIENT", "SETNAME", name)
    waiting = asyncio.create_task(connection.call("BLPOP", "empty", 5))
    await asyncio.sleep(0.1)
    assert _kill_by_name(url, name) == 1
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(waiting, 2)
    assert await connection.call("PING") == b"PONG"  # a new connection, on the same database
    await connection.call("SET", "after", "1")
    assert redis.Redis.from_url(url).get("after") == b"1"


async def test_a_reply_later_than_the_timeout_fails_the_commands_under_way_and_the_connection(url: str) -> None:
    connection = RespConnection(url, timeout=0.3)
    try:
        assert await connection.call("PING") == b"PONG"
        late = asyncio.create_task(connection.call("BLPOP", "empty", 2))
        behind = asyncio.create_task(connection.call("PING"))  # pipelined behind it
        for waiting in (late, behind):
            with pytest.raises(RedisTimeoutError):
                await waiting
        assert await connection.call("PING") == b"PONG"  # on a new connection
    finally:
        connection.close()


async def test_a_user_with_a_password_on_a_database_of_its_own(url: str) -> None:
    admin = redis.Redis.from_url(url)
    user, password = f"link-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    host = REDIS_SERVER.split("://", 1)[1]
    connection = RespConnection(f"redis://{user}:{password}@{host}/7", timeout=5)
    wrong = RespConnection(f"redis://{user}:wrong@{host}/7", timeout=5)
    try:
        await connection.call("SET", "mine", "7")
        assert redis.Redis.from_url(f"{REDIS_SERVER}/7").get("mine") == b"7"
        with pytest.raises(ResponseError, match="WRONGPASS"):
            await wrong.call("PING")
    finally:
        connection.close()
        wrong.close()
        admin.acl_deluser(user)
        redis.Redis.from_url(f"{REDIS_SERVER}/7").delete("mine")


async def test_the_link_sends_its_scripts_again_when_redis_forgot_them(url: str) -> None:
    link = RedisLink(url)
    try:
        channel = await link.new_channel()
        await link.send(channel, {"seq": 1})
        redis.Redis.from_url(url).script_flush()  # as after a restart
        await link.send(channel, {"seq": 2})
        assert [(await link.receive(channel))["seq"] for _ in range(2)] == [1, 2]
    finally:
        await link.close()


async def test_a_closed_connection_fails_what_waits_and_refuses_more(connection: RespConnection) -> None:
    waiting = asyncio.create_task(connection.call("BLPOP", "empty", 5))
    await asyncio.sleep(0.1)
    connection.close()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(waiting, 2)
    with pytest.raises(RedisConnectionError):
        await connection.call("PING")


def test_it_runs_on_uvloop(url: str) -> None:
    async def talk() -> list[object]:
        connection = RespConnection(url, timeout=5)
        try:
            return list(await asyncio.gather(connection.call("PING"), connection.call("INCR", "n")))
        finally:
            connection.close()

    assert uvloop.run(talk()) == [b"PONG", 1]


def _kill_by_name(url: str, name: str) -> int:
    admin = redis.Redis.from_url(url)
    found = [client for client in admin.client_list() if client.get("name") == name]
    for client in found:
        admin.client_kill_filter(_id=client["id"])
    return len(found)


async def test_a_command_that_cannot_be_sent_takes_no_reply_of_another(connection: RespConnection) -> None:
    await connection.call("SET", "a", "1")
    with pytest.raises(TypeError):
        await connection.call("GET", None)
    assert await asyncio.wait_for(connection.call("GET", "a"), 1) == b"1"


async def test_commands_waiting_for_a_connection_share_one_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that takes connections and never answers: the SELECT times out once, for all."""
    monkeypatch.setattr(resp, "CONNECT_TIMEOUT", 0.3)
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = RespConnection(f"redis://127.0.0.1:{port}/3", timeout=5)
    try:
        began = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(connection.call("PING") for _ in range(6)), return_exceptions=True)
        took = asyncio.get_running_loop().time() - began
        assert all(isinstance(result, RedisConnectionError) for result in results)
        assert took < 1.0 and len(accepted) == 1
    finally:
        connection.close()
        server.close()


async def test_closed_while_connecting_it_leaves_no_connection(url: str) -> None:
    connection = RespConnection(url, timeout=5)
    calling = asyncio.create_task(connection.call("PING"))
    await asyncio.sleep(0)  # the attempt has begun
    connection.close()
    with pytest.raises((RedisConnectionError, asyncio.CancelledError)):
        await calling
    with pytest.raises(RedisConnectionError):
        await connection.call("PING")
