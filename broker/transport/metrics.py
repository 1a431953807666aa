"""`GET /metrics`: this node's Prometheus metrics (README, "Metrics").

Every node answers for itself, as each RabbitMQ node does: its role, its
client connections and subscriptions by protocol, its memory and its alarm,
the process's own figures (`prometheus-client`'s process collector); a node
that runs the router adds the queues and exchanges (broker/runtime/metrics.py),
its writer's commits and whether the message store answers.

Answered in front of Django, on the router's loop (the engine is read where it
lives). Protected like the API: an API token (Bearer or Token), or none where
anonymous clients are allowed (on loopback, by default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.engine.broker import Broker
from broker.engine.errors import BrokerError
from broker.engine.jsoncodec import dumps
from broker.router import registry
from broker.router.local import LocalRouter
from broker.runtime import memory
from broker.runtime.metrics import PREFIX, EngineMetrics, EngineSnapshot

from . import census
from .http_errors import error_response
from .origins import check_host

ROLES: Final = ("router", "standby", "edge", "none")
CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"

# The request's scope -> True when its API token was accepted, False for an anonymous client
# where they are allowed; raises a BrokerError when refused.
Authenticate = Callable[[dict[str, Any]], Awaitable[bool]]


class NodeCollector(Collector):
    """What this process is and holds: read by `read()` on the loop that serves the clients,
    where the census's sets, the registry and the guard change; `collect` then yields only
    what was read, so the thread that writes the exposition reads nothing that changes
    (a set that grows while it is counted raises)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

    @classmethod
    def read(cls) -> NodeCollector:
        current = registry.current()
        role = "none" if current is None else current.role
        roles = GaugeMetricFamily(f"{PREFIX}node_role", "This node's role in its cluster (1 for its role).",
                                  labels=["role"])
        for name in ROLES:
            roles.add_metric([name], 1 if name == role else 0)
        connections = GaugeMetricFamily(f"{PREFIX}connections", "Client connections open on this node.",
                                        labels=["protocol", "transport"])
        subscriptions = GaugeMetricFamily(f"{PREFIX}subscriptions", "Subscriptions of this node's clients.",
                                          labels=["protocol", "transport"])
        for (protocol, transport), (opened, subscribed) in census.counts().items():
            connections.add_metric([protocol, transport], opened)
            subscriptions.add_metric([protocol, transport], subscribed)
        families: list[Metric] = [roles, connections, subscriptions]
        guard = memory.guard()
        if guard is not None:
            families += [
                GaugeMetricFamily(f"{PREFIX}memory_used_bytes", "Resident memory as the memory guard last read it.",
                                  value=guard.used),
                GaugeMetricFamily(f"{PREFIX}memory_limit_bytes", "The memory limit (MEMORY_LIMIT).", value=guard.limit),
                GaugeMetricFamily(f"{PREFIX}memory_alarm", "1 while publishers are held back by the memory alarm.",
                                  value=1 if guard.alarm else 0),
            ]
        local = registry.local()
        watch = local.runtime.store_watch if isinstance(local, LocalRouter) else None
        if watch is not None:
            families.append(GaugeMetricFamily(f"{PREFIX}store_reachable", "1 while the message store answers.",
                                              value=1 if watch.reachable else 0))
        return cls(families)


async def metrics_text() -> bytes:
    """The whole exposition: the library's registry (its metrics lock what they share), this
    node's families, then the router's engine if it runs here. This node's are read on this
    loop and the engine on the router's (the same loop under `runbroker`); the text is
    written in a thread."""
    node = NodeCollector.read()
    local = registry.local()
    snapshot = None
    router_loop = local.runtime.loop if isinstance(local, LocalRouter) else None
    if isinstance(local, LocalRouter) and router_loop is not None:
        runtime = local.runtime
        if router_loop is asyncio.get_running_loop():
            snapshot = runtime.metrics.snapshot(runtime.broker)
        else:  # served on another loop than the router's (a server of its own)
            snapshot = await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(_snapshot(runtime.metrics, runtime.broker), router_loop)
            )

    def write() -> bytes:
        text = generate_latest(REGISTRY) + generate_latest(node)
        return text if snapshot is None else text + EngineMetrics.text(snapshot).encode()

    return await asyncio.to_thread(write)


async def _snapshot(metrics: EngineMetrics, broker: Broker) -> EngineSnapshot:
    return metrics.snapshot(broker)


class Metrics:
    def __init__(self, app: Any, *, authenticate: Authenticate) -> None:
        self.app = app
        self._authenticate = authenticate

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/metrics" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        try:
            if not await self._authenticate(scope):
                # Anonymous (an Authorization header of another scheme than Bearer or Token
                # included): a page of another site could read it through a name of its own
                # that resolves here (DNS rebinding), and may send such a header. A scrape
                # whose token was accepted is the scraper's own, and may name the node by
                # its address.
                check_host(scope)
        except BrokerError as error:
            status, payload = error_response(error)
            await _answer(send, scope, status, b"application/json", dumps(payload).encode())
            return
        await _answer(send, scope, 200, CONTENT_TYPE, await metrics_text())


async def _answer(send: Any, scope: dict[str, Any], status: int, content_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
