"""A small WebSocket client for the tests: JSON frames, waits with timeouts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets


class WsClient:
    def __init__(self, connection: websockets.ClientConnection) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, url: str) -> WsClient:
        return cls(await websockets.connect(url, max_size=None))

    async def send(self, frame: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))  # type: ignore[no-any-return]

    async def request(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a frame with an id and return the reply carrying that id."""
        await self.send(frame)
        while True:
            reply = await self.recv(timeout)
            if reply.get("id") == frame["id"]:
                return reply

    async def messages(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        got = []
        while len(got) < count:
            frame = await self.recv(timeout)
            if frame["type"] == "message":
                got.append(frame)
        return got

    async def silent(self, timeout: float = 0.3) -> bool:
        """True when nothing arrives within `timeout`."""
        try:
            await self.recv(timeout)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        await self.connection.close()
