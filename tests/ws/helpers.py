"""Helpers of the WebSocket tests: topology through the ORM, frames to and from a client.

Topology is declared through the ORM, in a worker thread as a view would; the
model signals carry it to the router before the call returns (storage/sync.py).
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from bindings.models import Binding
from broker.engine.jsoncodec import dumps
from broker.protocol.publish import PublishRequest
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
from queues.models import Queue


@database_sync_to_async
def declare_queue(name: str, **fields: Any) -> None:
    Queue.objects.create(name=name, **fields)


@database_sync_to_async
def declare_exchange(name: str, type: str = "direct", **fields: Any) -> None:
    Exchange.objects.create(name=name, type=type, **fields)


@database_sync_to_async
def declare_binding(exchange: str, queue: str, binding_key: str = "") -> None:
    Binding.objects.create(
        exchange=Exchange.objects.get(name=exchange), queue=Queue.objects.get(name=queue), binding_key=binding_key
    )


@database_sync_to_async
def delete_queue(name: str) -> None:
    Queue.objects.get(name=name).delete()


async def send(client: WebsocketCommunicator, frame: dict[str, Any]) -> None:
    await client.send_json_to(frame)


async def receive(client: WebsocketCommunicator, timeout: float = 2) -> dict[str, Any]:
    reply: dict[str, Any] = await client.receive_json_from(timeout=timeout)
    return reply


async def request(client: WebsocketCommunicator, frame: dict[str, Any]) -> dict[str, Any]:
    await client.send_json_to(frame)
    return await receive(client)


async def subscribe(client: WebsocketCommunicator, sub_id: str, queue: str, **fields: Any) -> dict[str, Any]:
    reply = await request(client, {"type": "subscribe", "id": sub_id, "queue": queue, **fields})
    assert reply == {"type": "subscribed", "id": sub_id, "subscription": sub_id, "queue": queue}
    return reply


async def publish(runtime: Runtime, exchange: str, routing_key: str, body: Any, *, persistent: bool = True) -> str:
    message_id, _ = await runtime.publish(PublishRequest(exchange, routing_key, dumps(body), {}, persistent, None))
    return message_id


async def silent(client: WebsocketCommunicator, timeout: float = 0.2) -> bool:
    """True when the server sends nothing within `timeout` (and the connection is open)."""
    return bool(await client.receive_nothing(timeout=timeout))

