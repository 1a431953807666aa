"""WebSocket fixtures: clients of /ws on the test's loop, beside the `runtime` router."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from channels.testing import WebsocketCommunicator

from broker.runtime.runtime import Runtime
from broker_project.asgi import application

# connect(path="/ws", headers=[...]): a connected client.
Connect = Callable[..., Awaitable[WebsocketCommunicator]]


@pytest.fixture
async def connect(runtime: Runtime) -> AsyncIterator[Connect]:
    """Open as many clients as a test needs; each still open is closed afterwards."""
    opened: list[WebsocketCommunicator] = []

    async def open_client(path: str = "/ws", headers: list[tuple[bytes, bytes]] | None = None) -> WebsocketCommunicator:
        client = WebsocketCommunicator(application, path, headers=headers or [])
        connected, _ = await client.connect()
        assert connected
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.disconnect()


@pytest.fixture
async def ws(connect: Connect) -> WebsocketCommunicator:
    return await connect()
