"""STOMP over TCP against the real `runbroker` (STOMP_PORT): the limits of the JSON
frames hold for it too. A client that stops reading is closed as a slow consumer
while a reading one gets every message; a client past MAX_CONNECTIONS_PER_IP is
refused with an ERROR; a frame over the size limit gets its ERROR, not a reset;
without anonymous access a TCP client must log in."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest

from broker.protocol.stomp_frames import StompFrame, StompParser, encode_frame
from tests.e2e.harness import BrokerProcess, free_port
from tests.eventually import eventually

BUFFERED: Final = 128 * 1024  # WS_MAX_BUFFERED_BYTES for this run
MESSAGES: Final = 600
BODY: Final = "y" * 4000


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = StompParser(max_frame_bytes=1 << 24)
        self.pending: list[StompFrame] = []

    @classmethod
    async def open(cls, port: int, *, small_buffer: bool = False) -> Client:
        sock = socket.socket()
        if small_buffer:  # what it does not read stays on the broker's side
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    async def send(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        self.writer.write(encode_frame(command, headers, body))
        await self.writer.drain()

    async def receive(self, timeout: float = 10) -> StompFrame:
        while not self.pending:
            chunk = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
            if not chunk:
                raise ConnectionError("closed by the broker")
            self.pending.extend(self.parser.feed(chunk))
        return self.pending.pop(0)

    async def connect(self, **headers: str) -> StompFrame:
        await self.send("CONNECT", {"accept-version": "1.2", "host": "/", **headers})
        return await self.receive()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path,
        extra_env={"STOMP_PORT": str(free_port()), "WS_MAX_BUFFERED_BYTES": str(BUFFERED),
                   "MAX_CONNECTIONS_PER_IP": "5"},
    )
    process.start()
    try:
        yield process
    finally:
        process.close()


def stomp_port(broker: BrokerProcess) -> int:
    return int(broker.env["STOMP_PORT"])


async def test_a_tcp_client_that_stops_reading_is_closed_and_a_reading_one_gets_everything(
    broker: BrokerProcess,
) -> None:
    port = stomp_port(broker)
    slow, good = await Client.open(port, small_buffer=True), await Client.open(port)
    async with httpx.AsyncClient(base_url=broker.url, timeout=10) as http:
        assert (await http.post("/api/exchanges/", json={"name": "feed", "type": "fanout"})).status_code == 201
        for client in (slow, good):
            assert (await client.connect()).command == "CONNECTED"
            await client.send("SUBSCRIBE", {"id": "f", "destination": "/exchange/feed", "receipt": "s"})
            assert (await client.receive()).headers["receipt-id"] == "s"
        received: list[int] = []

        async def read_all() -> None:
            while len(received) < MESSAGES:
                frame = await good.receive()
                received.append(int(frame.headers["n"]))

        reader = asyncio.create_task(read_all())
        for n in range(MESSAGES):
            answer = await http.post("/api/exchanges/feed/publish/", json={"body": BODY, "headers": {"n": n}})
            assert answer.status_code == 200
        await asyncio.wait_for(reader, 30)
    assert received == list(range(MESSAGES))
    # The slow client was cut off: what it can still read ends before the last message.
    seen = 0
    with pytest.raises((ConnectionError, TimeoutError)):
        while True:
            frame = await slow.receive(timeout=5)
            seen += frame.command == "MESSAGE"
    assert seen < MESSAGES
    assert "closed: over WS_MAX_BUFFERED_BYTES unsent (slow consumer)" in broker.log()


async def test_a_queue_s_subscriber_that_stops_reading_holds_back_only_its_credit_and_another_gets_the_rest(
    broker: BrokerProcess,
) -> None:
    """Auto-ack subscriptions to a named queue holding many times WS_MAX_BUFFERED_BYTES: the
    broker sends each no more than its socket takes. One that stops reading is not closed
    and loses nothing it did not get: the queue keeps the rest, and a reading subscriber
    gets it."""
    port = stomp_port(broker)
    count = 20 * BUFFERED // len(BODY)
    async with httpx.AsyncClient(base_url=broker.url, timeout=10) as http:
        assert (await http.post("/api/queues/", json={"name": "backlog"})).status_code == 201
        for n in range(count):
            answer = await http.post(
                "/api/exchanges/amq.default/publish/", json={"routing_key": "backlog", "body": BODY, "headers": {"n": n}}
            )
            assert answer.json()["routed"] == 1
        stuck = await Client.open(port, small_buffer=True)
        assert (await stuck.connect()).command == "CONNECTED"
        await stuck.send("SUBSCRIBE", {"id": "b", "destination": "/queue/backlog", "receipt": "s"})
        # It reads its RECEIPT, and then nothing: the broker fills its socket and its credit.

        async def messages_left() -> int:
            return int((await http.get("/api/queues/backlog/")).json()["messages"])

        left: list[int] = []
        for _ in range(50):
            left.append(await messages_left())
            if len(left) > 3 and left[-1] == left[-4]:
                break
            await asyncio.sleep(0.1)
        assert left[-1] == left[-4] > count // 2  # it took some, and no more

        reader = await Client.open(port)
        assert (await reader.connect()).command == "CONNECTED"
        await reader.send("SUBSCRIBE", {"id": "b", "destination": "/queue/backlog"})
        got = []
        while len(got) < left[-1]:
            frame = await reader.receive()
            if frame.command == "MESSAGE":
                got.append(int(frame.headers["n"]))
        assert got == sorted(got) and len(set(got)) == left[-1]

        # The one that stopped is still there, and reads what it was handed.
        taken = []
        while len(taken) < count - left[-1]:
            frame = await stuck.receive()
            if frame.command == "MESSAGE":
                taken.append(int(frame.headers["n"]))
        assert sorted(taken + got) == list(range(count))
        assert await messages_left() == 0
    assert "slow consumer" not in broker.log()


async def test_connections_past_the_limit_per_address_are_refused(broker: BrokerProcess) -> None:
    port = stomp_port(broker)
    held = [await Client.open(port) for _ in range(5)]
    for client in held:
        assert (await client.connect()).command == "CONNECTED"
    extra = await Client.open(port)
    refused = await extra.receive()
    assert (refused.command, refused.headers["code"]) == ("ERROR", "too_many_connections")
    held[0].writer.close()
    await asyncio.sleep(0.3)
    again = await Client.open(port)
    assert (await again.connect()).command == "CONNECTED"


async def test_a_frame_over_the_limit_gets_its_error_while_the_client_is_still_sending(broker: BrokerProcess) -> None:
    """The broker refuses the frame once it is past MAX_MESSAGE_BYTES, long before its end has
    arrived: it reads the rest and throws it away, so the client finishes sending and reads the
    ERROR (closing with bytes unread made the kernel reset the connection: the client saw only
    "connection reset by peer", every time)."""
    frame = encode_frame("SEND", {"destination": "/queue/big"}, b"x" * (16 << 20))
    for _ in range(3):
        client = await Client.open(stomp_port(broker))
        assert (await client.connect()).command == "CONNECTED"
        client.writer.write(frame)
        await client.writer.drain()
        refused = await client.receive()
        assert (refused.command, refused.headers["code"]) == ("ERROR", "too_large")
        assert await asyncio.wait_for(client.reader.read(), 5) == b""  # then the broker closes
        client.writer.close()


async def test_clients_the_broker_ends_for_their_silence_are_closed_even_if_they_never_close(tmp_path: Path) -> None:
    """Ended for missed heart-beats, a client that neither sends nor closes its socket does not
    hold it (nor its place under MAX_CONNECTIONS_PER_IP) after the lingering close's 2 s."""
    port = free_port()
    broker = BrokerProcess(
        tmp_path, extra_env={"STOMP_PORT": str(port), "STOMP_HEARTBEAT_MS": "200", "MAX_CONNECTIONS_PER_IP": "2"}
    )
    broker.start()
    try:
        silent = [await Client.open(port) for _ in range(2)]
        for client in silent:
            # It promises a heart-beat every 200 ms, and sends none: ended after 400 ms.
            assert (await client.connect(**{"heart-beat": "200,0"})).command == "CONNECTED"
        for client in silent:
            ended = await client.receive()
            assert (ended.command, ended.headers["code"]) == ("ERROR", "unavailable")

        async def admitted() -> bool:
            client = await Client.open(port)
            try:
                return (await client.connect()).command == "CONNECTED"
            finally:
                client.writer.close()

        # Their sockets are still open on this side: the broker's place for them must be free.
        await eventually(admitted, timeout=10, what="a new connection admitted")
        assert all(not client.writer.is_closing() for client in silent)
    finally:
        broker.close()


async def test_without_anonymous_access_a_tcp_client_logs_in_with_a_token(tmp_path: Path) -> None:
    process = BrokerProcess(tmp_path, extra_env={"STOMP_PORT": str(free_port()), "BROKER_ALLOW_ANONYMOUS": "false"})
    process.start()
    try:
        port = stomp_port(process)
        anonymous = await Client.open(port)
        refused = await anonymous.connect()
        assert (refused.command, refused.headers["code"]) == ("ERROR", "unauthorized")
        process.manage("createsuperuser", "--noinput", "--username", "zoe", "--email", "z@example.invalid")
        token = process.manage("createtoken", "zoe").strip()
        client = await Client.open(port)
        assert (await client.connect(login="zoe", passcode=token)).command == "CONNECTED"
        await client.send("SEND", {"destination": "/queue/tcp-in", "persistent": "true", "receipt": "p"}, b"x")
        assert (await client.receive()).headers["receipt-id"] == "p"
    finally:
        process.close()
