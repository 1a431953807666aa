"""`GET /health`: what this node is, and whether it can serve.

For load balancers and supervisors: 200 while this node reaches a router
(it is the router, or its cluster link follows one) and the router's message
store answers; 503 otherwise, e.g. on an edge during a failover, or through a
database outage (persistent messages cannot be confirmed then). The body says
which role the node has now (`router`, `standby`: a router candidate serving
as an edge, or `edge`), `store` (`true`, `false`, or `null` while no router is
known), and the memory guard's state, `alarm` included (publishers held back;
not a failure).

Answered in front of Django: probes come often, by IP address rather than a
host name in ALLOWED_HOSTS, and a 503 during a failover is news for the
probe, not an error for Django's log.
"""

from __future__ import annotations

from typing import Any

from broker.engine.jsoncodec import dumps
from broker.router import registry
from broker.runtime import memory


def node_health() -> tuple[int, dict[str, Any]]:
    current = registry.current()  # the router here if it runs here, else the link's
    role, router = ("none", False) if current is None else (current.role, current.available)
    store = None if current is None else current.store_reachable
    guard = memory.guard()
    payload = {"role": role, "router": router, "store": store, "cluster": registry.remote() is not None}
    if guard is not None:
        payload["memory"] = guard.state()
    return (200 if router and store is not False else 503), payload


class Health:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/health" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        status, payload = node_health()
        body = dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
