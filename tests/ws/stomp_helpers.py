"""A STOMP client of /ws for the tests: WebsocketCommunicator with a `v1x.stomp`
subprotocol, frames written by hand and read with the broker's own parser."""

from __future__ import annotations

from typing import Any

from channels.testing import WebsocketCommunicator

from broker.protocol.stomp_frames import StompFrame, StompParser, encode_frame
from broker_project.asgi import application


class StompClient:
    def __init__(self, subprotocol: str | None = "v12.stomp", headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """`subprotocol` None: none offered (a STOMP CONNECT as the first message then selects STOMP)."""
        subprotocols = [subprotocol] if subprotocol is not None else None
        self.ws = WebsocketCommunicator(application, "/ws", headers=headers or [], subprotocols=subprotocols)
        self.parser = StompParser(max_frame_bytes=64 * 1024 * 1024)
        self.pending: list[StompFrame] = []
        self.raw: list[Any] = []  # every WebSocket message as it came (str or bytes)

    async def open(self) -> None:
        connected, subprotocol = await self.ws.connect()
        assert connected
        self.subprotocol = subprotocol

    async def connect(self, **headers: str) -> StompFrame:
        """CONNECT (accept-version 1.2 unless given); the CONNECTED or ERROR frame."""
        headers.setdefault("accept-version", "1.2")
        headers.setdefault("host", "/")
        await self.send("CONNECT", headers)
        return await self.receive()

    async def send(self, command: str, headers: dict[str, str] | None = None, body: bytes | str = b"") -> None:
        data = body.encode() if isinstance(body, str) else body
        frame = encode_frame(command, headers or {}, data)
        try:
            await self.ws.send_to(text_data=frame.decode())
        except UnicodeDecodeError:
            await self.ws.send_to(bytes_data=frame)

    async def send_raw(self, data: str) -> None:
        await self.ws.send_to(text_data=data)

    async def receive(self, timeout: float = 2.0) -> StompFrame:
        """The next frame (heart-beats are skipped)."""
        while not self.pending:
            output = await self.ws.receive_output(timeout=timeout)
            if output["type"] == "websocket.close":
                raise ConnectionError(f"closed with {output.get('code')} after {self.raw!r}")
            data = output.get("bytes")
            self.raw.append(data if data is not None else output.get("text"))
            chunk = data if data is not None else output["text"].encode()
            self.pending.extend(self.parser.feed(chunk))
        return self.pending.pop(0)

    async def receive_output(self, timeout: float = 2.0) -> dict[str, Any]:
        output: dict[str, Any] = await self.ws.receive_output(timeout=timeout)
        return output

    async def closed(self, timeout: float = 2.0) -> bool:
        """True once the server has closed the socket (after what it sent before)."""
        while True:
            output = await self.ws.receive_output(timeout=timeout)
            if output["type"] == "websocket.close":
                return True

    async def nothing(self, timeout: float = 0.2) -> bool:
        return not self.pending and bool(await self.ws.receive_nothing(timeout=timeout))

    async def close(self) -> None:
        await self.ws.disconnect()


def text(frame: StompFrame) -> str:
    return frame.body.decode()
