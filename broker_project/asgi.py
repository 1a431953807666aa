"""The ASGI application: HTTP (API, admin, UI, static files) and WebSocket at /ws.

Served in-process by `runbroker`, next to the router. Under another server
(`daphne broker_project.asgi:application`) the first connection starts the
router on that server's loop, so one such process is a whole broker too;
with REDIS_URL set it starts a cluster link instead, and the process is an
edge of the cluster's router (issue 6).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "broker_project.settings")
django_http = get_asgi_application()  # sets Django up before the imports below

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from broker.cluster.edge import EdgeLink, current_link  # noqa: E402
from broker.transport.fast_publish import FastPublish  # noqa: E402
from broker.transport.health import Health  # noqa: E402
from broker.transport.origins import OriginGuard  # noqa: E402
from broker.runtime.runtime import Runtime, current_runtime  # noqa: E402
from subscriptions.consumers import BrokerConsumer  # noqa: E402
from broker.transport.limits import ConnectionLimit  # noqa: E402

_starting = asyncio.Lock()
T = TypeVar("T")


async def _ensure(current: Callable[[], T | None], start: Callable[[], Awaitable[T]]) -> T:
    """What `current()` gives, or what `start()` starts on the current loop; once per process."""
    found = current()
    if found is not None:
        return found
    async with _starting:
        found = current()
        return found if found is not None else await start()


async def _start_runtime() -> Runtime:
    from broker.transport.server import new_runtime

    runtime = new_runtime()
    await runtime.start()
    return runtime


async def _start_link() -> EdgeLink:
    from channels.layers import get_channel_layer

    link = EdgeLink(get_channel_layer())
    await link.start()
    await link.wait_for_router(1.0)  # a router that runs answers the hello at once
    return link


async def ensure_runtime() -> Runtime:
    """The router of this process, started on the current loop if none runs."""
    return await _ensure(current_runtime, _start_runtime)


async def ensure_link() -> EdgeLink:
    """The cluster link of this process, started on the current loop if none runs."""
    return await _ensure(current_link, _start_link)


class StartRouter:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.cluster = bool(settings.REDIS_URL)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and current_runtime() is None:
            await (ensure_link() if self.cluster else ensure_runtime())
        await self.app(scope, receive, send)


# A refused Origin gets 403 before anything else; then at most MAX_CONNECTIONS_PER_IP (README, "Limits").
websocket_application = OriginGuard(ConnectionLimit(URLRouter([path("ws", BrokerConsumer.as_asgi())])))

application = StartRouter(
    ProtocolTypeRouter(
        {
            "http": Health(FastPublish(ASGIStaticFilesHandler(django_http))),
            "websocket": websocket_application,
        }
    )
)
