"""The ASGI application: HTTP (API, admin, console, static files) and WebSocket at /ws.

Served in-process by `runbroker`, next to the router. Under another server
(`daphne broker_project.asgi:application`) the first connection starts the
router on that server's loop, so one such process is a whole broker too;
with REDIS_URL set it starts a cluster link instead, and the process is an
edge of the cluster's router (docs/deploy.md).
"""

from __future__ import annotations

import os
from typing import Any, cast

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "broker_project.settings")
django_http = get_asgi_application()  # sets Django up before the imports below

from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from access.asgi import fast_publish_permissions, metrics_scrape  # noqa: E402
from broker.transport.cors import BrowserModuleCors  # noqa: E402
from broker.transport.fast_publish import FastPublish  # noqa: E402
from broker.transport.health import Health  # noqa: E402
from broker.transport.limits import ConnectionLimit  # noqa: E402
from broker.transport.metrics import Metrics  # noqa: E402
from broker.transport.origins import OriginGuard  # noqa: E402
from broker.transport.request_bodies import BodyLimit  # noqa: E402
from broker.transport.startup import StartRouter  # noqa: E402
from storage.store import OrmMessageStore  # noqa: E402
from subscriptions.consumers import BrokerConsumer  # noqa: E402

# A refused Origin gets 403 before anything else; then at most MAX_CONNECTIONS_PER_IP (README, "Limits").
# (The casts: Channels' type stubs want an ASGI route where Django's `path` makes a view's.)
websocket_route = cast(Any, path("ws", cast(Any, BrokerConsumer.as_asgi())))
websocket_application = OriginGuard(ConnectionLimit(URLRouter([websocket_route])))

# The browser module may be imported by the pages that may open the WebSocket (broker/transport/cors.py).
static_and_django = BrowserModuleCors(ASGIStaticFilesHandler(django_http), prefix=f"{settings.STATIC_URL}pubsub/")
# Every request's body is read, and one past the limit refused, before anything else (Django has no cap).
http_application = BodyLimit(
    Health(
        Metrics(FastPublish(static_and_django, authenticate=fast_publish_permissions), authenticate=metrics_scrape)
    ),
    limit=lambda: settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
)

application = StartRouter(
    ProtocolTypeRouter({"http": http_application, "websocket": websocket_application}),
    new_store=lambda fence: OrmMessageStore(fence=fence),
    layer=get_channel_layer,
)
