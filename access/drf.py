"""The HTTP doors: DRF's authentication and permission classes, and the request's Permissions.

`BearerTokenAuthentication` reads `Authorization: Bearer <token>`, or
`Authorization: Token <token>` as DRF's TokenAuthentication spells it (listed
before DRF's SessionAuthentication, so an unauthenticated request's answer is
401 with `WWW-Authenticate: Bearer`); `BrokerAccess` lets in authenticated
users, and anonymous clients while BROKER_ALLOW_ANONYMOUS is on. Views then
ask `request_permissions(request)` before they change anything.

The original service's calls (legacy/views.py) are plain Django views
without CSRF: they take only tokens (`legacy_permissions`), never the session
cookie, which another site could make a browser send.
"""

from __future__ import annotations

from typing import Any, Final

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS, BasePermission

from access.handler_token import HandlerUser, is_handler_token
from access.rules import Permissions
from access.selectors import anonymous_allowed, permissions_or_unauthorized, token_permissions, token_user
from broker.engine.errors import Forbidden, Unauthorized
from broker.transport.loopback import Peer
from broker.transport.origins import current_policy

_CACHE_ATTRIBUTE = "_broker_permissions"
# The Authorization schemes that carry an API token, lowercased (compared case-insensitively):
# RFC 6750's Bearer, and DRF's Token for clients written against TokenAuthentication.
TOKEN_SCHEMES: Final = (b"bearer", b"token")


def bearer_token(header: bytes) -> str | None:
    """The token of an `Authorization: Bearer <token>` (or `Token <token>`) header; None for
    no header or another scheme.

    Raises `unauthorized` for a Bearer or Token header without exactly one token."""
    parts = header.split()
    if not parts or parts[0].lower() not in TOKEN_SCHEMES:
        return None
    if len(parts) != 2:
        raise Unauthorized("the Authorization header must be 'Bearer <token>' or 'Token <token>'")
    try:
        return parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise Unauthorized("the API token is not valid") from None


class BearerTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Any) -> tuple[Any, None] | None:
        try:
            token = bearer_token(get_authorization_header(request))
        except Unauthorized as error:
            raise exceptions.AuthenticationFailed(error.message) from None
        if token is None:
            return None
        if is_handler_token(token):
            return HandlerUser(), None
        user = token_user(token)
        if user is None:
            raise exceptions.AuthenticationFailed("the API token is not valid")
        return user, None

    def authenticate_header(self, request: Any) -> str:
        return "Bearer"


class BrokerAccess(BasePermission):
    """Authenticated users; anonymous clients only while BROKER_ALLOW_ANONYMOUS is on.

    Reading (lists, details) needs nothing more; changes are checked per name by the views."""

    def has_permission(self, request: Any, view: Any) -> bool:
        if request.user.is_authenticated:
            return True
        if not anonymous_allowed(peer_of(request)):
            return False
        try:
            refuse_foreign_page(request)
        except Forbidden as error:
            raise exceptions.PermissionDenied(error.message) from None
        return True


def peer_of(request: Any) -> Peer:
    """Who sent the request: its client address as Django has it (the ASGI server's, which a
    trusted proxy's `X-Forwarded-For` may have rewritten), and the addresses proxies named."""
    meta = request.META
    return Peer.of(meta.get("REMOTE_ADDR") or None, meta.get("HTTP_X_FORWARDED_FOR"), meta.get("HTTP_FORWARDED"))


def refuse_foreign_page(request: Any) -> None:
    """Raise `forbidden` for an anonymous change sent by a page of an origin the WebSocket's
    check would refuse (ALLOWED_ORIGINS, or the hosts of ALLOWED_HOSTS).

    Anonymous clients may change anything while BROKER_ALLOW_ANONYMOUS is on, and a browser
    sends a form, or a `fetch` in `no-cors` mode, from any site's page to the broker with no
    credentials needed: without this, a page the developer opened could purge or delete
    queues on their machine. Browsers send `Origin` with every such request; programs send
    none, or send credentials (a token cannot be set by another site's form)."""
    if request.method in SAFE_METHODS:
        return
    origin = request.META.get("HTTP_ORIGIN")
    if origin is not None and not current_policy().allows(origin):
        raise Forbidden(
            f"a page of origin {origin!r} may not change the broker anonymously: "
            "add the origin to ALLOWED_ORIGINS, or send an API token"
        )


def request_permissions(request: Any) -> Permissions:
    """The permissions of the request's user, loaded once per request."""
    cached: Permissions | None = getattr(request, _CACHE_ATTRIBUTE, None)
    if cached is None:
        cached = permissions_or_unauthorized(request.user, peer=peer_of(request))
        setattr(request, _CACHE_ATTRIBUTE, cached)
    return cached


def legacy_permissions(request: Any) -> Permissions:
    """The permissions of a token-bearing request, or of an anonymous client."""
    token = bearer_token(request.META.get("HTTP_AUTHORIZATION", "").encode("latin-1"))
    if token is None:
        refuse_foreign_page(request)
        return permissions_or_unauthorized(None, peer=peer_of(request))
    return token_permissions(token)
