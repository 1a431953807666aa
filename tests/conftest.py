"""Shared fixtures: a running router on the test's loop or on a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from broker.engine.errors import BrokerError
from broker.router.local import LocalRouter
from broker.runtime.runtime import Runtime
from tests.stopping import stop_within


class Sink:
    """A client connection as the router sees it: keeps what it is sent."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def deliver(self, frames: list[str], counted: bool = False) -> None:
        self.frames.extend(frames)

    def cancelled(self, subscription: str, reason: str) -> None:
        self.frames.append(f"cancelled {subscription}")

    def unsubscribed(self, subscription: str) -> None:
        self.frames.append(f"unsubscribed {subscription}")

    def refused(self, frame_id: object, error: BrokerError) -> None:
        self.frames.append(f"refused {frame_id}: {error.code}")


def new_runtime() -> Runtime:
    from channels.layers import get_channel_layer

    from broker.transport.startup import delivery_credit
    from storage.store import OrmMessageStore

    # A short checkpoint so tests see acknowledgements reach the database quickly; the
    # credit `runbroker` gives connections.
    return Runtime(OrmMessageStore(), checkpoint_seconds=0.2, layer=get_channel_layer(), credit=delivery_credit())


def _new_router() -> LocalRouter:
    return LocalRouter(new_runtime())


@pytest.fixture
async def runtime(transactional_db: Any) -> AsyncIterator[Runtime]:
    """The router on the test's own event loop (async tests, WebsocketCommunicator)."""
    router = _new_router()
    await router.start()
    yield router.runtime
    await stop_within(router.stop(), "the router")


@pytest.fixture
def runtime_thread(transactional_db: Any) -> Iterator[Runtime]:
    """The router on a loop in a thread of its own, as under the ASGI server, for sync tests
    (DRF's APIClient): views reach it through broker/router/calls.py exactly as in production."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-router", daemon=True)
    thread.start()
    router = _new_router()
    asyncio.run_coroutine_threadsafe(router.start(), loop).result(timeout=30)
    yield router.runtime
    asyncio.run_coroutine_threadsafe(router.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()
