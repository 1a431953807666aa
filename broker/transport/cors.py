"""CORS for the browser module: pages of other origins may import `/static/pubsub/`.

A browser fetches an ES module in CORS mode, so a page of another origin can import
`/static/pubsub/client.js` only if the answer carries `Access-Control-Allow-Origin`.
The files under `/static/pubsub/`, and no other, carry it for the origins the
WebSocket's `Origin` check allows (broker/transport/origins.py: ALLOWED_ORIGINS, or
the hosts of ALLOWED_HOSTS): a page that may not open the WebSocket has no use for
the module. Credentials are never allowed; the module is public, and the WebSocket
authenticates on its own.
"""

from __future__ import annotations

from typing import Any

from broker.transport.origins import OriginGuard


class BrowserModuleCors(OriginGuard):
    """ASGI middleware in front of the static files. An OriginGuard for its `policy`
    (the same settings, read the same way), which it applies to HTTP instead."""

    def __init__(self, app: Any, *, prefix: str) -> None:
        super().__init__(app)
        self.prefix = prefix

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        origin: bytes | None = next((value for name, value in scope.get("headers", ()) if name == b"origin"), None)
        allowed = origin if origin is not None and self.policy.allows(origin.decode("latin-1")) else None

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                # Vary on every answer: a cache must not hand one origin's answer to another.
                headers = [*message.get("headers", ()), (b"vary", b"Origin")]
                if allowed is not None:
                    headers.append((b"access-control-allow-origin", allowed))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)
