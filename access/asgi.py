"""The doors in front of Django: the WebSocket at /ws and the HTTP fast publish path.

`websocket_permissions(scope)` runs once per connection (at connect): it takes
an `Authorization: Bearer` (or DRF's `Token`) header, else a `?token=` query
parameter, else Django's session cookie (the web console's). A token that is
given must be valid, whatever BROKER_ALLOW_ANONYMOUS says; without credentials
the connection is anonymous, which costs no database query.

`fast_publish_permissions(scope)` does the same for the fast publish path
from the `Authorization` header alone (session requests go to Django, where
CSRF is checked), through a `TokenCache`: a busy publisher's token is looked
up at most once every TOKEN_CACHE_SECONDS. `metrics_scrape(scope)` asks the
same for `/metrics`, and says whether the scraper was let in by its token.

Which right each WebSocket frame then needs is the broker's to say
(broker/transport/authorization.py).
"""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace
from typing import Any, Final
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.http.cookie import parse_cookie

from access.drf import bearer_token
from access.rules import Permissions
from access.selectors import (
    TokenCache,
    cached_token_permissions_sync,
    permissions_or_unauthorized,
    token_permissions,
    token_user,
)
from broker.engine.errors import Unauthorized
from broker.transport.loopback import Peer

Headers = list[tuple[bytes, bytes]]

INVALID_TOKEN: Final = "the API token is not valid"

token_cache = TokenCache()


def _header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _query_token(scope: dict[str, Any]) -> str | None:
    query = scope.get("query_string", b"")
    if b"token=" not in query:
        return None
    values = parse_qs(query.decode("latin-1"), keep_blank_values=True).get("token")
    return values[0] if values else None


def _session_user(session_key: str) -> Any:
    engine = import_module(settings.SESSION_ENGINE)
    # django.contrib.auth.get_user needs only `request.session`; it checks the
    # session's auth hash, so a changed password ends the session here too.
    return get_user(SimpleNamespace(session=engine.SessionStore(session_key)))  # type: ignore[arg-type]


def _peer(scope: dict[str, Any]) -> Peer:
    """Who sent the request: the client's address in the ASGI scope (uvicorn rewrites it from
    a trusted proxy's `X-Forwarded-For`; None for a Unix socket or an in-process test), and
    the addresses proxies named."""
    client = scope.get("client")
    headers: Headers = scope.get("headers", [])
    named = [(_header(headers, name) or b"").decode("latin-1") or None for name in (b"x-forwarded-for", b"forwarded")]
    return Peer.of(str(client[0]) if client else None, named[0], named[1])


def _resolve(token: str | None, session_key: str | None, peer: Peer) -> Permissions:
    if token is not None:
        return token_permissions(token)
    user = _session_user(session_key) if session_key else None
    return permissions_or_unauthorized(user, peer=peer)


async def websocket_permissions(scope: dict[str, Any]) -> Permissions:
    """What this WebSocket client may do; `unauthorized` when it may not connect."""
    headers: Headers = scope.get("headers", [])
    token = bearer_token(_header(headers, b"authorization") or b"")
    if token is None:
        token = _query_token(scope)
    session_key: str | None = None
    if token is None:
        cookie = _header(headers, b"cookie")
        if cookie is not None:
            session_key = parse_cookie(cookie.decode("latin-1")).get(settings.SESSION_COOKIE_NAME) or None
    if token is None and session_key is None:
        return permissions_or_unauthorized(None, peer=_peer(scope))  # no credentials: no database query
    if token == "":
        raise Unauthorized(INVALID_TOKEN)
    permissions: Permissions = await database_sync_to_async(_resolve)(token, session_key, _peer(scope))
    return permissions


def _stomp_resolve(login: str, passcode: str) -> Permissions:
    permissions = token_permissions(passcode)
    user = token_user(passcode)
    if login and user is not None and user.get_username() != login:
        raise Unauthorized(f"the API token is not {login!r}'s")
    return permissions


async def stomp_permissions(login: str, passcode: str) -> Permissions:
    """What a STOMP client that sent `login` (a user name, or empty) and `passcode` (an API
    token of that user) at CONNECT may do; `unauthorized` unless the token is valid and is
    that user's."""
    if not passcode:
        raise Unauthorized("passcode: give an API token (manage.py createtoken USER) as the passcode")
    permissions: Permissions = await database_sync_to_async(_stomp_resolve)(login, passcode)
    return permissions


async def fast_publish_permissions(scope: dict[str, Any]) -> Permissions:
    """The publisher's permissions from its token (Bearer or Token scheme; cached), or an anonymous client's."""
    token = bearer_token(_header(scope.get("headers", []), b"authorization") or b"")
    if token is None:
        return permissions_or_unauthorized(None, peer=_peer(scope))
    known, permissions = token_cache.get(token)
    if not known:
        permissions = await database_sync_to_async(cached_token_permissions_sync)(token)
        token_cache.put(token, permissions)
    if permissions is None:
        raise Unauthorized(INVALID_TOKEN)
    return permissions


async def metrics_scrape(scope: dict[str, Any]) -> bool:
    """For `/metrics`: True when the request's API token was accepted, False for an anonymous
    client where they are allowed; `unauthorized` otherwise.

    An `Authorization` header of another scheme than Bearer or Token (`Basic`, say) carries
    no token: the client is anonymous, as for the rest of the API. A page of another site
    can send such a header, so it must not count as the scraper's own credentials."""
    token = bearer_token(_header(scope.get("headers", []), b"authorization") or b"")
    await fast_publish_permissions(scope)
    return token is not None
