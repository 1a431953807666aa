"""The load generator's ceiling: a trivial peer that does the least a broker could.

`python -m bench.ceiling_server WS_PORT HTTP_PORT`. Over WebSocket it speaks
just enough of both dialects (our JSON frames and STOMP) for the benchmark's
clients: every publish is confirmed at once; a client-ack subscription to a
queue named `bench.fill.*` is an endless pre-filled queue (a pre-encoded
message per ack, up to the prefetch); any other subscription gets every
publish forwarded as a delivery, unparsed. Over HTTP every request gets the
same 200 answer. Running the benchmark's own clients against it shows how
fast they can go at all, so a broker result near it is marked as capped by
the generator. Loopback only; runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Final

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.typing import Subprotocol

OURS_MESSAGE: Final = (
    '{"type":"message","subscription":"s","delivery_tag":1,"redelivered":false,"message_id":"m","exchange":"",'
    '"routing_key":"bench.fill","body":{"ts":0.000000,"seq":0,"kind":"bench","pad":"' + "x" * 56 + '"},'
    '"headers":{},"persistent":true,"published_at":"2026-01-01T00:00:00.000000Z"}'
)
STOMP_MESSAGE: Final = (
    "MESSAGE\nsubscription:s\ndestination:/amq/queue/bench.fill\nmessage-id:m\nack:T_1\npersistent:true\n"
    'content-type:application/json\n\n{"ts":0.000000,"seq":0,"kind":"bench","pad":"' + "x" * 56 + '"}\x00'
)
HTTP_ANSWER: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 29\r\n\r\n"
    b'{"message_id":"m","routed":1}'
)

live: set[ServerConnection] = set()


def select_subprotocol(ws: ServerConnection, offered: object) -> Subprotocol | None:
    """STOMP clients offer v12.stomp; our JSON clients offer none."""
    return Subprotocol("v12.stomp") if "v12.stomp" in offered else None  # type: ignore[operator]


async def handle(ws: ServerConnection) -> None:
    push = ""  # the pre-encoded message of an endless-queue subscription, if any
    try:
        async for data in ws:
            text = data if isinstance(data, str) else data.decode()
            if text.startswith("{"):
                if '"type":"publish"' in text:
                    i = text.find('"id":') + 5
                    await ws.send('{"type":"confirm","id":' + text[i : text.find(",", i)] + ',"routed":1}')
                    if live:
                        broadcast(live, '{"type":"message","delivery_tag":1,"m":' + text + "}")
                elif '"type":"ack"' in text:
                    if push:
                        await ws.send(push)
                elif '"type":"subscribe"' in text:
                    i = text.find('"id":') + 5
                    await ws.send('{"type":"subscribed","id":' + text[i : text.find(",", i)] + "}")
                    if '"ack":"client"' in text and '"queue":"bench.fill' in text:
                        push = OURS_MESSAGE
                        for _ in range(100):
                            await ws.send(push)
                    else:
                        live.add(ws)
            elif text.startswith("SEND"):
                i = text.find("\nreceipt:") + 9
                await ws.send("RECEIPT\nreceipt-id:" + text[i : text.find("\n", i)] + "\n\n\x00")
                if live:
                    broadcast(live, "MESSAGE\nsubscription:s\nmessage-id:m\nack:T_1\n\n" + text[text.find("\n\n") + 2 :])
            elif text.startswith("ACK"):
                if push:
                    await ws.send(push)
            elif text.startswith("SUBSCRIBE"):
                i = text.find("\nreceipt:") + 9
                await ws.send("RECEIPT\nreceipt-id:" + text[i : text.find("\n", i)] + "\n\n\x00")
                if "ack:client-individual" in text and "/amq/queue/bench.fill" in text:
                    push = STOMP_MESSAGE
                    for _ in range(100):
                        await ws.send(push)
                else:
                    live.add(ws)
            elif text.startswith("CONNECT"):
                await ws.send("CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00")
    finally:
        live.discard(ws)


class HttpAnswer(asyncio.Protocol):
    """Answers each request (headers plus content-length body) with HTTP_ANSWER, keep-alive."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            i = head.find(b"content-length:")
            j = head.find(b"\r\n", i)
            length = int(head[i + 15 : j if j > 0 else None]) if i >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(HTTP_ANSWER)


async def main(ws_port: int, http_port: int) -> None:
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, finish)
    http = await asyncio.get_running_loop().create_server(HttpAnswer, "127.0.0.1", http_port)
    async with serve(
        handle,
        "127.0.0.1",
        ws_port,
        compression=None,
        ping_interval=None,
        max_queue=1024,
        max_size=None,
        select_subprotocol=select_subprotocol,
    ):
        await stop
    http.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
