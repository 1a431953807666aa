"""The client's session against a stand-in server: what happens while it restores a lost
connection, and when it is closed at awkward moments."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conftest import FAST_BACKOFF
from websockets.asyncio.server import ServerConnection, serve

from pubsub_client import Client, ClientClosed, RequestTimeout
from tests.e2e.harness import free_port


async def test_a_subscribe_made_while_a_connection_is_restored_is_sent_on_it() -> None:
    """The first connection drops after subscribing "a"; the second answers its
    resubscription late, and a subscribe made meanwhile must still reach it."""
    connections = 0
    subscribed: list[tuple[int, str]] = []

    async def handler(connection: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        number = connections
        async for text in connection:
            frame = json.loads(text)
            if frame.get("type") != "subscribe":
                continue
            subscribed.append((number, frame["queue"]))
            if number == 2 and frame["queue"] == "a":
                await asyncio.sleep(0.5)  # the restore waits for this answer
            await connection.send(json.dumps({"type": "subscribed", "id": frame["id"],
                                              "subscription": frame["id"], "queue": frame["queue"]}))
            if number == 1:
                await connection.close()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            await client.subscribe("a")
            for _ in range(100):
                if connections == 2:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # the restore is under way, waiting for "a"'s answer
            await client.subscribe("b", timeout=5)
    assert (2, "b") in subscribed


async def test_a_client_closed_while_it_connects_does_not_connect() -> None:
    async def handler(connection: ServerConnection) -> None:
        async for _ in connection:
            pass

    async def slow_handshake(connection: ServerConnection, request: Any) -> None:
        await asyncio.sleep(0.3)

    port = free_port()
    async with serve(handler, "127.0.0.1", port, process_request=slow_handshake):
        client = Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF)
        opening = asyncio.create_task(client.open())
        await asyncio.sleep(0.1)
        await client.close()
        try:
            await opening
        except ClientClosed:
            pass
        assert not client.connected


async def test_a_ping_without_an_answer_raises_the_package_s_own_timeout() -> None:
    async def handler(connection: ServerConnection) -> None:
        async for _ in connection:
            pass  # never answers

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            try:
                await client.session.ping(timeout=0.2)
            except RequestTimeout:
                pass
            else:
                raise AssertionError("no timeout")
