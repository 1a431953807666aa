"""`GET /health` (broker/transport/health.py): a node's role, and 200 only while it reaches a router."""

from __future__ import annotations

import httpx

from broker.runtime.runtime import Runtime
from broker.transport.health import Health, node_health


async def test_a_node_running_the_router_is_healthy(runtime: Runtime) -> None:
    from broker_project.asgi import application

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3") as client:
        answer = await client.get("/health")  # by IP, as probes do: no ALLOWED_HOSTS check
        head = await client.head("/health")
    assert answer.status_code == 200
    assert answer.json() == {"role": "router", "router": True, "store": True, "cluster": False}
    assert head.status_code == 200 and head.content == b""


async def test_a_node_without_a_router_says_so_with_503() -> None:
    async def never(scope: object, receive: object, send: object) -> None:
        raise AssertionError("/health must not reach the application")

    transport = httpx.ASGITransport(app=Health(never))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        answer = await client.get("/health")
    assert answer.status_code == 503
    assert answer.json() == {"role": "none", "router": False, "store": None, "cluster": False}
    assert node_health()[0] == 503
