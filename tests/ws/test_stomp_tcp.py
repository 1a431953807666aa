"""STOMP over TCP (broker/transport/stomp_tcp.py) on the test's loop, beside the `runtime`
router: sessions as runbroker makes them (subscriptions/stomp.py), on a real socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker.protocol.stomp_frames import StompFrame, StompParser, encode_frame
from broker.runtime.runtime import Runtime
from broker.transport import stomp_session, stomp_tcp
from broker.transport.outbox import Send
from broker.transport.stomp_session import StompSession
from broker.transport.stomp_tcp import StompTcpServer
from subscriptions.stomp import tcp_stomp_session
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)


class Listener:
    """A StompTcpServer on a port of its own; what it made, as it made it."""

    def __init__(self) -> None:
        self.server = StompTcpServer(self._new_session, max_per_address=0, send_buffer=16 * 1024)
        self.sessions: list[StompSession] = []
        self.sockets: list[Any] = []  # the accepted sockets (asyncio's TransportSocket)

    def _new_session(self, send: Send, address: str | None) -> StompSession:
        transport = send.__self__.transport  # type: ignore[attr-defined]
        self.sockets.append(transport.get_extra_info("socket"))
        session = tcp_stomp_session(send, address)
        self.sessions.append(session)
        return session


@pytest.fixture
async def listener(runtime: Runtime) -> AsyncIterator[Listener]:
    made = Listener()
    await made.server.start("127.0.0.1", 0)
    yield made
    await made.server.stop()


class Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = StompParser(max_frame_bytes=1 << 24)
        self.pending: list[StompFrame] = []

    @classmethod
    async def open(cls, port: int, *, receive_buffer: int | None = None) -> Client:
        sock = socket.socket()
        if receive_buffer is not None:  # before the connect: the window is agreed then
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, encode_frame(command, headers, body))

    async def receive(self, timeout: float = 5) -> StompFrame:
        while not self.pending:
            chunk = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 1 << 16), timeout)
            if not chunk:
                raise ConnectionError("closed by the broker")
            self.pending.extend(self.parser.feed(chunk))
        return self.pending.pop(0)

    async def connect(self, **headers: str) -> StompFrame:
        await self.send("CONNECT", {"accept-version": "1.2", "host": "/", **headers})
        return await self.receive()


async def test_a_client_ended_while_it_reads_nothing_is_cut_off_though_it_keeps_its_socket_open(
    listener: Listener, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ended for its missed heart-beats with its socket full (it reads nothing, sends nothing,
    closes nothing): the session closes and the socket is cut, within the grace, the linger
    and CLOSE_SECONDS (shortened here), not when the client lets go."""
    settings.STOMP_HEARTBEAT_MS = 200
    monkeypatch.setattr(stomp_session, "CLOSING_GRACE", 0.5)
    monkeypatch.setattr(stomp_tcp, "LINGER_SECONDS", 0.5)
    monkeypatch.setattr(stomp_tcp, "CLOSE_SECONDS", 0.5)
    port = listener.server.port
    stuck = await Client.open(port, receive_buffer=32 * 1024)
    assert (await stuck.connect(**{"heart-beat": "500,0"})).command == "CONNECTED"
    await stuck.send("SUBSCRIBE", {"id": "s", "destination": "/queue/slow", "receipt": "r"})
    assert (await stuck.receive()).headers["receipt-id"] == "r"
    publisher = await Client.open(port)
    assert (await publisher.connect()).command == "CONNECTED"
    for _ in range(150):
        await publisher.send("SEND", {"destination": "/queue/slow"}, b"x" * 60_000)
    await publisher.send("DISCONNECT", {"receipt": "sent"})
    assert (await publisher.receive()).headers["receipt-id"] == "sent"
    session, accepted = listener.sessions[0], listener.sockets[0]

    async def cut_off() -> bool:
        return session.closed and accepted.fileno() == -1

    await eventually(cut_off, timeout=10, what="the silent client's session closed and its socket cut")
    loop = asyncio.get_running_loop()
    try:  # what the kernel still held reaches it, then the end (what asyncio held is dropped)
        while await asyncio.wait_for(loop.sock_recv(stuck.sock, 1 << 16), 5):
            pass
    except ConnectionResetError:
        pass
    stuck.sock.close()
    publisher.sock.close()


async def test_accepted_sockets_ask_for_tcp_keepalives(listener: Listener) -> None:
    """A client gone without a word and without heart-beats (stomp.py asks for none) is
    noticed by the kernel's probes, and its session closes."""
    client = await Client.open(listener.server.port)
    assert (await client.connect()).command == "CONNECTED"
    accepted = listener.sockets[0]
    assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    if hasattr(socket, "TCP_KEEPIDLE"):
        options = (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
        assert tuple(accepted.getsockopt(socket.IPPROTO_TCP, option) for option in options) == (
            stomp_tcp.KEEPALIVE_IDLE, stomp_tcp.KEEPALIVE_INTERVAL, stomp_tcp.KEEPALIVE_PROBES,
        )
    client.sock.close()


@pytest.mark.parametrize(("address", "answer"), [("203.0.113.9", "ERROR"), ("127.0.0.1", "CONNECTED"), (None, "CONNECTED")])
async def test_anonymous_access_by_default_is_for_this_machine_s_tcp_clients_only(
    runtime: Runtime, settings: Any, address: str | None, answer: str
) -> None:
    """As for a WebSocket's client (tests/ws/test_access.py): judged by the client's address,
    not as if every TCP client were on this machine."""
    settings.BROKER_ALLOW_ANONYMOUS, settings.BROKER_ALLOW_ANONYMOUS_SET = True, False
    sent: list[Any] = []

    async def send(event: Any) -> None:
        sent.append(event)

    session = tcp_stomp_session(send, address)
    session.open()
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
    chunks.put_nowait(encode_frame("CONNECT", {"accept-version": "1.2", "host": "/"}))
    serving = asyncio.ensure_future(session.serve(chunks.get))
    parser = StompParser(max_frame_bytes=1 << 20)

    async def answered() -> bool:
        return any(event.get("text") for event in sent)

    await eventually(answered, timeout=5, what="an answer to the CONNECT")
    frame = parser.feed(next(event["text"] for event in sent if event.get("text")).encode())[0]
    assert frame.command == answer
    if answer == "ERROR":
        assert frame.headers["code"] == "unauthorized"
    session.close()
    chunks.put_nowait(None)
    await asyncio.wait_for(serving, 5)
