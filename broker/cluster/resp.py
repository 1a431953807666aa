"""A small Redis client for the cluster link: commands pipelined on one connection.

redis-py spends about 95 µs of CPU on one script call on this machine (a pooled
connection taken and given back, a retry policy, a timeout per command, its own
reply parser); this client about 40, most of it the socket write: it writes
each command at once, in the order asked, and hands out the replies in the same
order (hiredis parses them). At 1,000 messages a second every message crosses
the link alone, and the link's CPU was most of a cross-node message's cost.

What it leaves out, the link makes up for: no retries (a failed command raises,
and the link's sender sends again; its sequence numbers drop a batch that
arrives twice); one connection (commands of several tasks go out in turn,
pipelined). A command not answered within `timeout` seconds closes the
connection and fails every command under way on it; the next one connects
again.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any, Final, cast

import hiredis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as LinkConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as LinkTimeoutError

CONNECT_TIMEOUT: Final = 5.0


def pack(args: tuple[Any, ...]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int | float):
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class RespConnection:
    def __init__(self, url: str, *, timeout: float) -> None:
        self._options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._timeout = timeout
        self._wire: _Wire | None = None
        self._connecting: asyncio.Future[_Wire] | None = None  # one attempt, shared by its waiters
        self._closed = False

    async def call(self, *args: Any) -> Any:
        """Send a command and wait for its reply. An error reply raises redis-py's
        `ResponseError`, a lost connection its `ConnectionError`, a late reply its
        `TimeoutError`."""
        wire = self._wire
        if wire is None or wire.closing:
            wire = await self._connect()
        return await wire.send(pack(args))

    def close(self) -> None:
        """Close the connection; commands under way fail with redis-py's `ConnectionError`."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._wire is not None:
            self._wire.abort(LinkConnectionError("the link's Redis connection was closed"))

    async def _connect(self) -> _Wire:
        """The commands that find no connection wait for one attempt together (a Redis that
        does not answer costs them one connect timeout, not one each)."""
        if self._closed:
            raise LinkConnectionError("the link's Redis connection is closed")
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
        # Shielded: a caller that gives up does not end the attempt the others wait for.
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Wire:
        loop = asyncio.get_running_loop()
        options = self._options
        wire = _Wire(self._timeout)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                if "path" in options:
                    await loop.create_unix_connection(lambda: wire, options["path"])
                else:
                    await loop.create_connection(
                        lambda: wire, options.get("host", "localhost"), options.get("port", 6379),
                        ssl=_ssl_context(options),
                    )
                if options.get("password"):
                    user = options.get("username")
                    await wire.send(pack(("AUTH", user, options["password"]) if user else ("AUTH", options["password"])))
                if options.get("db"):
                    await wire.send(pack(("SELECT", options["db"])))
        except (OSError, TimeoutError) as error:  # TimeoutError: the builtin, asyncio.timeout's
            wire.abort(LinkConnectionError("connecting to Redis failed"))
            raise LinkConnectionError(f"connecting to Redis failed: {error!r}") from error
        except BaseException:  # refused (AUTH), or cancelled by close(): no socket left open
            wire.abort(LinkConnectionError("the link's Redis connection was not made"))
            raise
        if self._closed:  # closed while connecting
            wire.abort(LinkConnectionError("the link's Redis connection was closed"))
            raise LinkConnectionError("the link's Redis connection is closed")
        self._wire = wire
        return wire


class _Wire(asyncio.Protocol):
    """One connection: the commands sent on it, in order, waiting for their replies."""

    def __init__(self, timeout: float) -> None:
        self.lost = False
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()  # in the order sent
        self._watch: asyncio.TimerHandle | None = None

    def send(self, command: bytes) -> asyncio.Future[Any]:
        """`command`: packed, before it is counted as sent (a command that fails to pack
        must not take the reply of the next one)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self.closing or self._transport is None:
            future.set_exception(LinkConnectionError("the link's Redis connection was lost"))
            return future
        self._pending.append((future, time.monotonic()))
        self._transport.write(command)
        if self._watch is None:
            self._watch = loop.call_later(self._timeout, self._check_timeout)
        return future

    @property
    def closing(self) -> bool:
        return self.lost or self._transport is None or self._transport.is_closing()

    def abort(self, error: Exception) -> None:
        self.lost = True
        if self._transport is not None:
            self._transport.abort()
        self._fail_pending(error)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._watch is not None:
            self._watch.cancel()
        self._fail_pending(LinkConnectionError(f"the link's Redis connection was lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        reader, pending = self._reader, self._pending
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                future, _ = pending.popleft()
                if future.done():
                    continue  # its caller gave up waiting
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(ResponseError(str(reply)))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as error:  # not Redis, or a reply nobody asked for
            self.abort(LinkConnectionError(f"the link's Redis connection broke: {error!r}"))

    def _check_timeout(self) -> None:
        """Close the connection when its oldest command waits past the timeout (Redis or the
        network stopped answering), else look again when that one would be late."""
        self._watch = None
        if not self._pending:
            return
        late = self._pending[0][1] + self._timeout - time.monotonic()
        if late > 0:
            self._watch = asyncio.get_running_loop().call_later(late, self._check_timeout)
            return
        self.abort(LinkTimeoutError(f"Redis did not answer within {self._timeout:g} s"))

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(error)


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext | None:
    """For a rediss:// URL: verified as redis-py would; its query's `ssl_cert_reqs` (none,
    optional, required), `ssl_ca_certs`, `ssl_certfile` and `ssl_keyfile` understood."""
    if options.get("connection_class") is not SSLConnection:
        return None
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    required = str(options.get("ssl_cert_reqs", "required")).lower().removeprefix("cert_")
    if required in ("none", "optional"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE if required == "none" else ssl.CERT_OPTIONAL
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context
