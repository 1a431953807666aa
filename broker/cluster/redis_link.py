"""The cluster link's own Redis traffic: batches as list entries, read many at a time.

channels-redis costs four Redis round trips to send a message and four to receive
one (a sorted set with an expiry sweep, a capacity check, a backup queue), each
an await on a busy event loop: most of a cross-node message's latency. The link
needs none of that: its batches carry their own order, flow control and answers
(wire.py). Here a send is one script call (capacity check, push, expiry), and a
receive is served from a reader task per channel that pops up to `READ_COUNT`
batches per blocking call.

It talks to Redis with a small client of its own (resp.py): redis-py's cost per
command was most of the link's CPU when every message crosses alone.

`RedisLink` has the operations of a channel layer that the link uses
(`new_channel`, `send`, `receive`, `group_add`, `group_discard`, `group_send`), so the link runs
on either: on this one when REDIS_URL is set, on the in-memory channel layer in
tests of one process. Channels' own traffic (topology changes between
processes) stays on the channel layer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from typing import Any, Final

import msgpack
from channels.exceptions import ChannelFull
from redis.exceptions import ResponseError

from .resp import RespConnection

log = logging.getLogger("broker.cluster")

KEY_PREFIX: Final = "pubsub.link:"
CAPACITY: Final = 1000  # batches waiting in one channel; more is ChannelFull (wire.send_batch waits)
EXPIRY_MS: Final = 60_000  # a channel nobody reads (a dead node's) is gone this long after its last batch
# Seconds a group member stays without joining again: three of an edge's rejoins
# (wire.REJOIN_SECONDS, 5 s; it cannot be imported here). An edge killed without leaving
# is gone from the group soon after, so the router's beats (two a second) stop going to
# its channel, which then expires. Kept for a day (as channels-redis), the members of a
# crash-looping edge piled up in thousands, each costing every beat two commands.
# Times are Redis's own (TIME, in the scripts), so the nodes' clocks need not agree.
# The link's only group is the edges' (wire.EDGES_GROUP): the router's topology group
# (topology_feed.py) is the channel layer's, channels-redis's, whose members stay a day
# (settings.CHANNEL_LAYERS' group_expiry), so a router whose loop a long load blocks
# does not drop out of it.
GROUP_EXPIRY: Final = 15.0
READ_COUNT: Final = 100  # batches taken per read
# A reader's blocking pop returns empty after this, and goes on. Short, so that a reader's
# connection that died silently is noticed (its pop unanswered past BLOCK_SECONDS +
# COMMAND_TIMEOUT) within ROUTER_TIMEOUT (3 s), and the node does not lose its peers.
BLOCK_SECONDS: Final = 1.0
RETRY_SECONDS: Final = 0.5  # after Redis failed a read
# The longest wait for a reply to a command that Redis answers at once (a send, a group's
# beat, a join). A connection dropped without a reset (NAT expiry, a virtual IP moved, a
# short partition) answers nothing: closed after this, the next command connects again.
# So the router's next beat goes out (a failed one waits BEAT_SECONDS, 0.5 s) within
# ROUTER_TIMEOUT (3 s) of the last one, and edges and router keep each other. With 30 s,
# every send, beat and hello waited on the dead connection until each edge had dropped
# its router and the router every edge. A Redis that stalls this long costs a reconnect
# and the commands under way, sent again (their sequence numbers drop a batch sent twice).
COMMAND_TIMEOUT: Final = 1.0

# KEYS[1] channel; ARGV message, capacity, expiry (ms). 1 when pushed, 0 when full.
_SEND: Final = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] group; ARGV channel. A member's score: when it last joined, in Redis's time
# (seconds), which _GROUP_SEND compares with its own.
_GROUP_ADD: Final = """
local now = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(now[1]) + tonumber(now[2]) / 1000000, ARGV[1])
return 1
"""

# KEYS[1] group; ARGV message, capacity, expiry (ms), group expiry (s), key prefix.
# Members that have not joined within the group expiry are dropped first. A member's
# full channel misses this message, as with channels-redis (beats only: the next one
# follows).
_GROUP_SEND: Final = """
local now = redis.call('TIME')
local oldest = tonumber(now[1]) + tonumber(now[2]) / 1000000 - tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', oldest)
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local key = ARGV[5] .. member
    if redis.call('LLEN', key) < tonumber(ARGV[2]) then
        redis.call('RPUSH', key, ARGV[1])
        redis.call('PEXPIRE', key, ARGV[3])
    end
end
return 1
"""


def encode(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def encodes(value: object) -> bool:
    """Can `value` be encoded? Never a string holding a lone surrogate (it has no UTF-8) nor
    an integer beyond 64 bits: a batch with one fails to encode however often it is sent."""
    try:
        msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def decode(data: bytes) -> dict[str, Any]:
    """A batch as sent; ValueError (or msgpack's own) for an entry that is not one."""
    message = msgpack.unpackb(data, raw=False)
    if not isinstance(message, dict):
        raise ValueError(f"a link entry is a {type(message).__name__}, not a map")
    return message


class Script:
    """A Lua script called by its digest, and sent whole when Redis does not know it (it
    restarted, or its scripts were flushed)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.digest = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, connection: RespConnection, keys: list[str], args: list[Any]) -> Any:
        try:
            return await connection.call("EVALSHA", self.digest, len(keys), *keys, *args)
        except ResponseError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            return await connection.call("EVAL", self.source, len(keys), *keys, *args)


_SEND_SCRIPT: Final = Script(_SEND)
_GROUP_SCRIPT: Final = Script(_GROUP_SEND)
_JOIN_SCRIPT: Final = Script(_GROUP_ADD)


class RedisLink:
    def __init__(self, url: str) -> None:
        self._url = url
        # Sends, and group changes, share one connection, pipelined; each reader has a
        # connection of its own, held by its blocking pop.
        self._client = RespConnection(url, timeout=COMMAND_TIMEOUT)
        self._inboxes: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._reader_clients: list[RespConnection] = []
        self._closing = False

    # -- the channel layer's operations that the link uses --------------------

    async def new_channel(self) -> str:
        return f"node.{uuid.uuid4().hex}"

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        pushed = await _SEND_SCRIPT(self._client, [KEY_PREFIX + channel], [encode(message), CAPACITY, EXPIRY_MS])
        if not pushed:
            raise ChannelFull(channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        """The channel's next batch. Only this process reads `channel`; a cancelled
        receive loses nothing (the reader task holds what it popped)."""
        inbox = self._inboxes.get(channel)
        if inbox is None:
            inbox = self._inboxes[channel] = asyncio.Queue()
            self._readers[channel] = asyncio.create_task(self._read_forever(channel, inbox), name=f"link-read-{channel}")
        return await inbox.get()

    async def group_add(self, group: str, channel: str) -> None:
        """Join `group`, or join it again: a member that has not for GROUP_EXPIRY is dropped."""
        await _JOIN_SCRIPT(self._client, [KEY_PREFIX + group], [channel])

    async def group_discard(self, group: str, channel: str) -> None:
        await self._client.call("ZREM", KEY_PREFIX + group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await _GROUP_SCRIPT(
            self._client, [KEY_PREFIX + group], [encode(message), CAPACITY, EXPIRY_MS, GROUP_EXPIRY, KEY_PREFIX]
        )

    async def close(self) -> None:
        # The flag ends a reader's loop, and closing its connection a blocking pop under way.
        self._closing = True
        for reader in self._readers.values():
            reader.cancel()
        for client in self._reader_clients:
            client.close()
        if self._readers:
            await asyncio.wait(self._readers.values(), timeout=BLOCK_SECONDS + 1)
        self._readers.clear()
        self._client.close()

    # -- reading ------------------------------------------------------------

    def closing(self) -> bool:
        return self._closing

    async def _read_forever(self, channel: str, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        key = KEY_PREFIX + channel
        # Redis answers a blocking pop within BLOCK_SECONDS; no answer in COMMAND_TIMEOUT more
        # is a dead connection, closed (what it may have popped is lost: wire.py notices).
        connection = RespConnection(self._url, timeout=BLOCK_SECONDS + COMMAND_TIMEOUT)
        self._reader_clients.append(connection)
        multi_pop = True  # BLMPOP (Redis 7); else BLPOP and an LPOP of the rest (Redis 6.2)
        try:
            while not self.closing():
                try:
                    if multi_pop:
                        try:
                            found = await connection.call("BLMPOP", BLOCK_SECONDS, 1, key, "LEFT", "COUNT", READ_COUNT)
                        except ResponseError as error:
                            if "unknown command" not in str(error).lower():
                                raise  # LOADING, say: logged below, and tried again
                            multi_pop = False
                            continue
                        batches: list[bytes] = found[1] if found else []
                    else:
                        first = await connection.call("BLPOP", key, BLOCK_SECONDS)
                        rest = await connection.call("LPOP", key, READ_COUNT) if first else None
                        batches = [first[1], *(rest or [])] if first else []
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # Redis away: the link's own timeouts notice
                    if self.closing():
                        break
                    log.warning("reading the cluster link's channel %s failed: %r", channel, error)
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                for data in batches:
                    self._deliver(channel, inbox, data)
        finally:
            connection.close()

    @staticmethod
    def _deliver(channel: str, inbox: asyncio.Queue[dict[str, Any]], data: bytes) -> None:
        """One entry into the inbox. An entry that is not a batch (written by something else,
        or damaged) is logged and skipped: the reader goes on, the rest of its read is
        delivered, and the link's own checks (wire.py) notice what it may have held."""
        try:
            message = decode(data)
        except Exception as error:
            log.error("an entry of the cluster link's channel %s is not a batch (%d bytes, %r): skipped",
                      channel, len(data), error)
            return
        inbox.put_nowait(message)


def link_layer(channel_layer: Any, redis_url: str) -> Any:
    """What the cluster link runs on: its own Redis traffic when there is a Redis, else the
    channel layer (the in-memory one, in tests of one process)."""
    return RedisLink(redis_url) if redis_url else channel_layer
