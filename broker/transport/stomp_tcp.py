"""STOMP over plain TCP (STOMP_PORT; RabbitMQ's STOMP plugin listens on 61613).

Each connection gets a `StompSession` from the factory the project hands in
(subscriptions/stomp.py), exactly as a WebSocket with a STOMP subprotocol does:
the session reads the socket's bytes, and its outbox writes through `TcpSend`,
which speaks the two ASGI events the outbox uses (send, close) over the socket.
A client on TCP has no handshake to carry a token: it authenticates with `login`
and `passcode` at CONNECT, or is anonymous where that is allowed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Final

from broker.runtime.timeouts import within

from .outbox import Send
from .stomp_session import StompSession

log = logging.getLogger("broker.stomp")

READ_BYTES: Final = 256 * 1024
# Past this much unsent in the socket's transport, a send waits for it to drain: the
# outbox then counts what waits (WS_MAX_BUFFERED_BYTES), as for a WebSocket.
WRITE_HIGH_WATER: Final = 256 * 1024

# Closing a socket with bytes unread makes the kernel reset the connection, and a client
# still sending (a frame over the size limit, say) then loses the ERROR that explains why.
# So the server stops writing, then reads on and throws away this much, for this long, until
# the client closes too (a lingering close, as RFC 9112 asks of HTTP servers).
LINGER_BYTES: Final = 64 * 1024 * 1024
LINGER_SECONDS: Final = 2.0
# Then what the socket still holds unsent may take this long to leave; past it the connection
# is cut (reset): a client that reads nothing would otherwise keep the socket, its buffers
# and its task for as long as it keeps the connection open (asyncio's close waits for the
# unsent bytes to leave).
CLOSE_SECONDS: Final = 2.0

# TCP keepalives on every accepted socket: a client gone without a word (its machine off,
# its network cut) and without STOMP heart-beats (stomp.py asks for none) is noticed
# within KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES = 2 minutes, and its
# unacknowledged messages and its connection slots are given back.
KEEPALIVE_IDLE: Final = 60  # seconds of silence before the first probe
KEEPALIVE_INTERVAL: Final = 10  # seconds between probes
KEEPALIVE_PROBES: Final = 6  # probes unanswered before the kernel gives up

# (the outbox's send, the client's address (None: not known)) -> its session
SessionFactory = Callable[[Send, str | None], StompSession]
# What a client past MAX_CONNECTIONS_PER_IP reads before the close.
REFUSED_CONNECTIONS: Final = (
    b"ERROR\nmessage:too many connections from this address (MAX_CONNECTIONS_PER_IP)\n"
    b"code:too_many_connections\n\n\x00"
)


class TcpSend:
    """The outbox's ASGI-style `send` over a TCP socket. `transport` is what limits.py's
    `close_firmly` reaches for (through the bound method's `__self__`) to cut a client
    that reads nothing."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.transport: Any = writer.transport

    async def send(self, event: Any) -> None:
        kind = event["type"]
        writer = self._writer
        if kind == "websocket.send":
            data = event.get("bytes")
            if data is None:
                data = event["text"].encode()
            if writer.is_closing():
                raise ConnectionResetError("the STOMP client has gone")
            writer.write(data)
            if self.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                await writer.drain()
        elif kind == "websocket.close" and not writer.is_closing():
            # What was written leaves first. The session's end has stopped its read too, so
            # `_serve_session` lingers (`linger`) and then closes the socket (`close_within`).
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()


class StompTcpServer:
    def __init__(self, new_session: SessionFactory, *, max_per_address: int, send_buffer: int) -> None:
        """`max_per_address`: connections per client address (MAX_CONNECTIONS_PER_IP; 0: no
        limit), one more is closed at once; `send_buffer`: each socket's kernel send buffer,
        capped as a WebSocket's is, so that a client that stops reading is noticed soon."""
        self._new_session = new_session
        self._max_per_address = max_per_address
        self._send_buffer = send_buffer
        self._server: asyncio.Server | None = None
        self._sessions: dict[StompSession, asyncio.StreamWriter] = {}
        self._per_address: dict[str, int] = {}

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=READ_BYTES)

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, for port 0)."""
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close every connection (their unacknowledged messages are requeued)."""
        server = self._server
        if server is not None:
            server.close()
        for session, writer in list(self._sessions.items()):
            session.close()
            writer.close()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        known = str(peer[0]) if isinstance(peer, tuple) and peer else None
        address = known or "unknown"
        held = self._per_address.get(address, 0)
        if self._max_per_address and held >= self._max_per_address:
            log.info("STOMP connection refused: %s holds %d connections (MAX_CONNECTIONS_PER_IP)", address, held)
            writer.write(REFUSED_CONNECTIONS)
            writer.close()
            return
        self._per_address[address] = held + 1
        try:
            await self._serve_session(reader, writer, known)
        finally:
            left = self._per_address[address] - 1
            if left:
                self._per_address[address] = left
            else:
                del self._per_address[address]

    async def _serve_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str | None
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
            except OSError:
                log.debug("socket options not set", exc_info=True)
            keep_alive(sock)
        tcp = TcpSend(writer)
        session = self._new_session(tcp.send, address)
        self._sessions[session] = writer

        async def next_chunk() -> bytes | None:
            try:
                data = await reader.read(READ_BYTES)
            except OSError:  # reset, or timed out (a peer gone without a word): it has gone
                return None
            return data or None

        try:
            session.open()
            await session.serve(next_chunk)
        except Exception:
            log.exception("a STOMP connection failed")
        finally:
            session.close()
            self._sessions.pop(session, None)
            try:
                await linger(reader, writer)
            finally:
                await close_within(writer, CLOSE_SECONDS)


def keep_alive(sock: socket.socket) -> None:
    """Ask the kernel to probe an idle connection (KEEPALIVE_IDLE, KEEPALIVE_INTERVAL,
    KEEPALIVE_PROBES where the platform lets them be set; its defaults elsewhere)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL), ("TCP_KEEPCNT", KEEPALIVE_PROBES)
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        log.debug("TCP keepalive not set", exc_info=True)


async def close_within(writer: asyncio.StreamWriter, seconds: float) -> None:
    """Close the socket once what it holds has left, and cut it (abort) if that takes over
    `seconds`: a client that stops reading must not hold it."""
    writer.close()
    try:
        await within(writer.wait_closed(), seconds)
    except TimeoutError:
        writer.transport.abort()
    except OSError:  # reset by the client: closed
        pass


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Stop writing, and read what the client still sends until it closes, up to LINGER_BYTES
    for LINGER_SECONDS; then the caller closes the socket."""
    if writer.is_closing():
        return  # closed firmly (the server stops, or the client read nothing)
    try:
        if writer.can_write_eof():
            writer.write_eof()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        discarded = 0
        while discarded < LINGER_BYTES:
            data = await within(reader.read(READ_BYTES), max(0.0, deadline - loop.time()))
            if not data:
                return
            discarded += len(data)
    except OSError:  # timed out (TimeoutError), or the client reset the connection
        return
