"""Which web pages may open a WebSocket to the broker: the `Origin` check (and the `Host` check of
the answers given in front of Django).

A browser sends any page's cookies with its WebSocket handshake, so without this
check a page of another site could act as the logged-in user. `OriginGuard` wraps
the WebSocket application: a handshake whose `Origin` is not allowed is refused
with HTTP 403 before the consumer runs, and logged once per origin (a page that
retries in a loop does not flood the log). A handshake without `Origin` comes
from a program, not a browser page, and is let through: CSRF does not apply to it.

ALLOWED_ORIGINS (settings) lists what is allowed: `*`, whole origins
(`https://app.example.com:8443`), or hosts matched as in ALLOWED_HOSTS (`example.com`,
`.example.com` for its subdomains too) on any scheme and port. Left empty, the hosts
of ALLOWED_HOSTS are used that way.

Imports Django's host helpers and settings, and the broker's error type.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from broker.engine.errors import BrokerError

log = logging.getLogger("broker.ws")

# Distinct refused origins remembered for "log once"; past it, nothing more is logged.
_LOGGED_MAX: Final = 1024


class OriginPolicy:
    def __init__(self, allowed: Sequence[str]) -> None:
        self.any = "*" in allowed
        # Whole origins (with a scheme) compared as normalised text; the rest are host patterns.
        self.origins = frozenset(_normalise(item) for item in allowed if "://" in item)
        self.hosts = [item.lower() for item in allowed if "://" not in item and item != "*"]

    def allows(self, origin: str | None) -> bool:
        if origin is None or self.any:
            return True
        if _normalise(origin) in self.origins:
            return True
        try:
            host = urlsplit(origin).netloc.rpartition("@")[2]
        except ValueError:
            return False
        domain, _port = split_domain_port(host)
        return bool(domain) and validate_host(domain, self.hosts)


_current: tuple[tuple[str, ...], OriginPolicy] | None = None


def current_policy() -> OriginPolicy:
    """The policy of the settings as they are now: rebuilt when they change (tests
    override them); a handshake or a change by an anonymous client is not a hot path."""
    global _current
    allowed = tuple(settings.ALLOWED_ORIGINS) or tuple(settings.ALLOWED_HOSTS)
    if _current is None or _current[0] != allowed:
        _current = (allowed, OriginPolicy(allowed))
    return _current[1]


def check_host(scope: dict[str, Any]) -> None:
    """Django's ALLOWED_HOSTS check, for the HTTP answers given in front of Django (the
    publish fast path, `/metrics`): without it, a page of another site could read them
    through a name of its own that resolves here (DNS rebinding)."""
    host = next((value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"host"), "")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        raise BrokerError(f"invalid Host header {host!r}: add it to ALLOWED_HOSTS")


def _normalise(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _origin(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            return str(value.decode("latin-1"))
    return None


class OriginGuard:
    """ASGI middleware for the WebSocket route: refuse a disallowed `Origin` with 403."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._logged: set[str] = set()

    @property
    def policy(self) -> OriginPolicy:
        return current_policy()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            origin = _origin(scope)
            if not self.policy.allows(origin):
                self._log_once(origin or "", scope)
                # Closing before accepting is the ASGI way to answer the handshake with 403.
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)

    def _log_once(self, origin: str, scope: dict[str, Any]) -> None:
        if origin in self._logged or len(self._logged) >= _LOGGED_MAX:
            return
        self._logged.add(origin)
        client = scope.get("client") or ("?", 0)
        log.info(
            "WebSocket refused: origin %r is not in ALLOWED_ORIGINS (or ALLOWED_HOSTS); first seen from %s",
            origin,
            client[0],
        )
