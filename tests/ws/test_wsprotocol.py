"""broker/transport/wsprotocol.py against uvicorn's own protocol, byte for byte.

Each test runs against both, on a real uvicorn server on this loop, with a raw
TCP client that writes the frames itself: whole, split, pipelined, fragmented,
malformed. The app must see the same ASGI events and the client the same
answers and close codes from ours as from uvicorn's; ours must also write
coalesced and pause reading only when many messages wait.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from broker.transport import wsprotocol
from broker.transport.wsprotocol import BrokerWebSocketProtocol
from tests.eventually import eventually

MAX_SIZE = 100_000
PROTOCOLS = [pytest.param(WebSocketsSansIOProtocol, id="uvicorn"), pytest.param(BrokerWebSocketProtocol, id="ours")]

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


@dataclass
class App:
    """Echoes each message; records every event. `burst N` sends N frames, `close` closes."""

    events: list[dict[str, Any]] = field(default_factory=list)
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    accepting: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.reading.set()
        self.accepting.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await self.accepting.wait()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await self.reading.wait()
                event = await receive()
                self.events.append(event)
                if event["type"] == "websocket.disconnect":
                    return
                text = event.get("text")
                if text == "leave":  # returns without a close: uvicorn closes the connection
                    await send({"type": "websocket.send", "text": "last words"})
                    return
                if text == "close":
                    await send({"type": "websocket.send", "text": "bye"})
                    await send({"type": "websocket.close", "code": 4000, "reason": "asked"})
                elif text is not None and text.startswith("burst "):
                    for n in range(int(text.split()[1])):
                        await send({"type": "websocket.send", "text": f"b{n}"})
                elif text is not None:
                    await send({"type": "websocket.send", "text": text})
                else:
                    await send({"type": "websocket.send", "bytes": event["bytes"]})
        finally:
            self.done.set()


@dataclass
class Served:
    app: App
    port: int
    server: uvicorn.Server

    def protocols(self) -> list[Any]:
        return list(self.server.server_state.connections)


@contextlib.asynccontextmanager
async def serve(protocol: type[Any], **options: Any) -> AsyncIterator[Served]:
    app = App()
    settings: dict[str, Any] = {"ws_max_size": MAX_SIZE, "ws_per_message_deflate": False, **options}
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", ws=protocol, log_level="critical", http="httptools", **settings
    )
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(app, port, server)
    finally:
        server.should_exit = True
        await server.shutdown()


@pytest.fixture(params=PROTOCOLS)
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    async with serve(request.param) as running:
        yield running


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    """A client frame (masked, as RFC 6455 requires of clients unless told otherwise)."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def text(value: str) -> bytes:
    return frame(TEXT, value.encode())


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, *, early: bytes = b"", app: App | None = None) -> Client:
        """With `early`: written while `app` holds back its accept, before the answer is read."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        if early:
            assert app is not None and not app.accepting.is_set()
            await asyncio.sleep(0.05)  # the request is read on its own
            writer.write(early)
            await asyncio.sleep(0.05)
            app.accepting.set()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send(self, data: bytes, *, piecewise: bool = False) -> None:
        if piecewise:
            for i in range(len(data)):
                self.writer.write(data[i : i + 1])
                await self.writer.drain()
                await asyncio.sleep(0)
        else:
            self.writer.write(data)
            await self.writer.drain()

    async def read(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload). Servers do not mask."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 5)
        assert not second & 0x80, "a server frame must not be masked"
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        assert first & 0x80, "the server does not fragment"
        return first & 0x0F, await self.reader.readexactly(n)

    async def texts(self, count: int) -> list[str]:
        got = []
        for _ in range(count):
            opcode, payload = await self.read()
            assert opcode == TEXT, (opcode, payload)
            got.append(payload.decode())
        return got

    async def until_close(self) -> tuple[list[str], int]:
        """The texts before the close frame, and its code."""
        texts = []
        while True:
            opcode, payload = await self.read()
            if opcode == CLOSE:
                return texts, int(struct.unpack("!H", payload[:2])[0])
            if opcode == TEXT:
                texts.append(payload.decode())

    async def close_code(self) -> int:
        return (await self.until_close())[1]


def received(app: App) -> list[Any]:
    return [e.get("text", e.get("bytes")) for e in app.events if e["type"] == "websocket.receive"]


async def test_frames_in_one_write_and_split_byte_by_byte_arrive_in_order(served: Served) -> None:
    client = await Client.connect(served.port)
    await client.send(b"".join(text(f"m{n}") for n in range(50)))
    assert await client.texts(50) == [f"m{n}" for n in range(50)]
    await client.send(text("é, 12 bytes") + text("second"), piecewise=True)
    assert await client.texts(2) == ["é, 12 bytes", "second"]
    assert received(served.app) == [*(f"m{n}" for n in range(50)), "é, 12 bytes", "second"]


@pytest.mark.parametrize("size", [125, 126, 65_535, 65_536, MAX_SIZE])
async def test_every_length_encoding_both_ways(served: Served, size: int) -> None:
    client = await Client.connect(served.port)
    body = "x" * size
    await client.send(text(body))
    assert await client.texts(1) == [body]
    await client.send(frame(BINARY, b"\x00\xff" * 3))
    assert await client.read() == (BINARY, b"\x00\xff" * 3)


async def test_ping_is_answered_and_fragments_are_joined_between_whole_frames(served: Served) -> None:
    # A pong may come before or after the echo of an earlier message (uvicorn's own
    # answers at once, ours after what it was writing): only each kind's order counts.
    client = await Client.connect(served.port)
    await client.send(text("before") + frame(PING, b"are you there"))
    first = [await client.read() for _ in range(2)]
    assert sorted(first) == [(TEXT, b"before"), (PONG, b"are you there")]
    # A fragmented message with a ping inside it, then whole frames again.
    await client.send(
        frame(TEXT, b"one ", fin=False) + frame(PING, b"p") + frame(CONT, b"two ", fin=False) + frame(CONT, b"three")
        + text("after")
    )
    answers = [await client.read() for _ in range(3)]
    assert [a for a in answers if a[0] == PONG] == [(PONG, b"p")]
    assert [a for a in answers if a[0] == TEXT] == [(TEXT, b"one two three"), (TEXT, b"after")]
    assert received(served.app) == ["before", "one two three", "after"]


@pytest.mark.parametrize("split", [1, 2, 4, 6])
async def test_frames_sent_before_the_accept_are_read_and_parsing_moves_here_between_frames(
    served: Served, split: int
) -> None:
    # websockets reads what comes before the accept, and may stand inside a frame
    # when the app accepts, even with nothing buffered (split 2: the header read, the
    # mask not yet come). Ours takes over only between two frames.
    served.app.accepting.clear()
    too = text("too")
    client = await Client.connect(served.port, early=text("early") + too[:split], app=served.app)
    await client.send(too[split:] + text("then"))
    assert await client.texts(3) == ["early", "too", "then"]
    await client.send(text("last"), piecewise=True)
    assert await client.texts(1) == ["last"]
    if served.server.config.ws is BrokerWebSocketProtocol:
        (protocol,) = served.protocols()
        assert protocol._parsing_here and not protocol._handed_over


async def test_a_client_close_is_echoed_and_reaches_the_app(served: Served) -> None:
    client = await Client.connect(served.port)
    await client.send(text("hi") + frame(CLOSE, struct.pack("!H", 1000) + b"done") + text("ignored"))
    texts, code = await client.until_close()
    assert code == 1000 and texts in ([], ["hi"])  # uvicorn answers a close at once
    await asyncio.wait_for(served.app.done.wait(), 5)
    assert received(served.app) == ["hi"]


async def test_frames_sent_before_a_server_close_arrive_before_it(served: Served) -> None:
    client = await Client.connect(served.port)
    await client.send(text("burst 20") + text("close"))
    assert await client.texts(21) == [*(f"b{n}" for n in range(20)), "bye"]
    assert await client.close_code() == 4000


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        pytest.param(frame(TEXT, b"\xff\xfe"), 1007, id="invalid UTF-8"),
        pytest.param(frame(TEXT, b"\xed\xa0\x80"), 1007, id="UTF-8 surrogate"),
        pytest.param(frame(TEXT, b"\xc0\x80"), 1007, id="overlong UTF-8"),
        pytest.param(frame(TEXT, b"ok\xe2\x82"), 1007, id="truncated UTF-8"),
        pytest.param(frame(PING, b"x", fin=False), 1002, id="fragmented ping"),
        pytest.param(frame(0xB, b"x"), 1002, id="reserved control opcode"),
        pytest.param(frame(CLOSE, b"\x03"), 1002, id="close with one byte"),
        pytest.param(frame(CLOSE, struct.pack("!H", 999)), 1002, id="close with code 999"),
        pytest.param(frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007, id="close reason not UTF-8"),
        pytest.param(frame(TEXT, b"plain", mask=False), 1002, id="unmasked"),
        pytest.param(frame(TEXT, b"x", rsv=0x40), 1002, id="reserved bit"),
        pytest.param(frame(0x3, b"x"), 1002, id="reserved opcode"),
        pytest.param(frame(CONT, b"x"), 1002, id="continuation without a start"),
        pytest.param(frame(PING, b"x" * 126), 1002, id="control frame over 125 bytes"),
        # Judged by its header: the rest is never sent (a server that closes with unread
        # bytes resets the connection, and the client may lose the close frame).
        pytest.param(frame(TEXT, b"x" * (MAX_SIZE + 1))[:20], 1009, id="too big"),
    ],
)
async def test_bad_frames_get_uvicorn_s_close_codes_after_good_ones(served: Served, bad: bytes, code: int) -> None:
    client = await Client.connect(served.port)
    await client.send(text("fine") + bad + text("never"))
    texts, closed_with = await client.until_close()
    assert closed_with == code and texts in ([], ["fine"])  # closed at once, maybe before the echo
    await asyncio.wait_for(served.app.done.wait(), 5)
    # uvicorn's own drops the good frames that came in the same read as a frame its
    # parser refuses; ours hands them to the app first.
    assert received(served.app) in ([], ["fine"])
    if served.server.config.ws is BrokerWebSocketProtocol:
        assert received(served.app) == ["fine"]


async def test_what_the_app_sent_before_it_returns_is_written_before_the_connection_closes(served: Served) -> None:
    client = await Client.connect(served.port)
    await client.send(text("leave"))
    assert await client.texts(1) == ["last words"]


async def test_empty_frames_and_a_long_header_split_byte_by_byte(served: Served) -> None:
    client = await Client.connect(served.port)
    await client.send(frame(TEXT, b"") + frame(BINARY, b""))
    assert [await client.read() for _ in range(2)] == [(TEXT, b""), (BINARY, b"")]
    await client.send(text("y" * 300), piecewise=True)  # the 16-bit length form
    assert await client.texts(1) == ["y" * 300]
    assert received(served.app) == ["", b"", "y" * 300]


async def test_an_empty_close_reaches_the_app_as_1005(served: Served) -> None:
    client = await Client.connect(served.port)
    await client.send(text("hi"))
    assert await client.texts(1) == ["hi"]
    await client.send(frame(CLOSE, b""))
    assert (await client.read())[0] == CLOSE
    await asyncio.wait_for(served.app.done.wait(), 5)
    assert served.app.events[-1]["type"] == "websocket.disconnect" and served.app.events[-1]["code"] == 1005


async def test_a_fragmented_message_begun_before_the_accept_is_not_broken_by_a_whole_frame(served: Served) -> None:
    # RFC 6455: a new data frame inside a fragmented message is a protocol error, even
    # when the message began before ours could take over the parsing.
    served.app.accepting.clear()
    client = await Client.connect(served.port, early=frame(TEXT, b"a", fin=False), app=served.app)
    await client.send(text("b") + frame(CONT, b"c"))
    assert await client.close_code() == 1002
    await asyncio.wait_for(served.app.done.wait(), 5)
    assert received(served.app) == []


async def test_a_fragmented_message_over_the_limit_is_refused(served: Served) -> None:
    client = await Client.connect(served.port)
    half = b"x" * (MAX_SIZE // 2 + 1)
    await client.send(frame(TEXT, half, fin=False) + frame(CONT, half)[:20])
    assert await client.close_code() == 1009


async def test_ours_writes_a_burst_at_once() -> None:
    # A confirm or a delivery per frame used to cost a system call each.
    async with serve(BrokerWebSocketProtocol) as served:
        client = await Client.connect(served.port)
        await client.send(text("warm up"))
        assert await client.texts(1) == ["warm up"]
        (protocol,) = served.protocols()
        writes = 0
        real_write = protocol.transport.write

        def counted(data: bytes) -> None:
            nonlocal writes
            writes += 1
            real_write(data)

        protocol.transport.write = counted
        await client.send(text("burst 500"))
        assert await client.texts(500) == [f"b{n}" for n in range(500)]
        assert writes <= 2


async def test_ours_pauses_reading_only_when_the_app_falls_behind() -> None:
    # uvicorn's own pauses and resumes around every message: two system calls each.
    async with serve(BrokerWebSocketProtocol) as served:
        client = await Client.connect(served.port)
        await client.send(text("warm up"))
        assert await client.texts(1) == ["warm up"]
        (protocol,) = served.protocols()
        served.app.reading.clear()  # the app stops reading
        await client.send(b"".join(text(f"q{n}") for n in range(wsprotocol.QUEUED_MESSAGES - 2)))
        await asyncio.sleep(0.05)  # a fixed wait: it checks that something does NOT happen
        assert not protocol.read_paused  # a few waiting: no pause
        await client.send(b"".join(text(f"r{n}") for n in range(10)))
        await eventually(lambda: protocol.read_paused, what="reading paused")
        served.app.reading.set()
        assert len(await client.texts(wsprotocol.QUEUED_MESSAGES + 8)) == wsprotocol.QUEUED_MESSAGES + 8
        assert not protocol.read_paused


async def test_a_compressed_connection_is_left_to_uvicorn() -> None:
    async with serve(BrokerWebSocketProtocol, ws_per_message_deflate=True) as served:
        import websockets

        async with websockets.connect(f"ws://127.0.0.1:{served.port}/ws", compression="deflate") as ws:
            await ws.send("squeeze " * 50)
            assert await ws.recv() == "squeeze " * 50
            (protocol,) = served.protocols()
            assert protocol.conn.extensions and not protocol._parsing_here
