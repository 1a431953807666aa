"""Helpers of the HTTP API tests: a JSON client and a fake WebSocket connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from broker.engine.queues import AckMode
from broker.router.calls import on_loop
from broker.runtime.runtime import Runtime
from broker_project.asgi import application
from queues.models import Queue
from tests.conftest import Sink


class Api:
    """DRF's APIClient speaking JSON, returning (status, decoded body)."""

    def __init__(self) -> None:
        self.client = APIClient()

    def get(self, path: str, **params: Any) -> tuple[int, Any]:
        response = self.client.get(path, params, format="json")
        return response.status_code, response.json() if response.content else None

    def post(self, path: str, data: Any = None) -> tuple[int, Any]:
        response = self.client.post(path, data, format="json")
        return response.status_code, response.json() if response.content else None

    def delete(self, path: str) -> tuple[int, Any]:
        response = self.client.delete(path)
        return response.status_code, response.json() if response.content else None


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The whole ASGI application (the fast publish path in front of Django), with queue `q`."""
    await database_sync_to_async(Queue.objects.create)(name="q")
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client


def ready(runtime: Runtime) -> int:
    """Messages waiting in queue `q`."""
    return runtime.broker.queue_counts("q").messages_ready  # type: ignore[union-attr]


def error_code(answer: tuple[int, Any]) -> tuple[int, str]:
    status, body = answer
    return status, body["error"]["code"]


def subscribe_private(runtime: Runtime, exchange: str, binding_key: str = "#") -> tuple[int, str]:
    """Subscribe a fake connection to `exchange` through a private queue; (connection, queue)."""
    connection = on_loop(runtime.loop, runtime.connect, Sink())
    queue = on_loop(
        runtime.loop,
        runtime.subscribe,
        connection,
        subscription="s1",
        subscription_json='"s1"',
        ack_mode=AckMode.CLIENT,
        prefetch=0,
        exchange=exchange,
        binding_key=binding_key,
    )
    return connection, queue
