"""Who a client is, and what it may do: ORM reads behind the doors' checks.

`token_user` finds the user of an API token (by its hash); `user_permissions`
builds a user's `Permissions` from its own rows and its groups' rows;
`permissions_or_unauthorized` decides for a client with or without a user,
reading BROKER_ALLOW_ANONYMOUS at call time (tests flip it).

`TokenCache` keeps token -> (user, permissions) for TOKEN_CACHE_SECONDS, for
the HTTP fast publish path, which must not query the database per request:
a deleted token, a deactivated user or a changed permission takes effect
there within that time.
"""

from __future__ import annotations

import time
from typing import Any, Final

from django.conf import settings
from django.db.models import Q

from access.handler_token import handler_principal, is_handler_token
from access.models import ApiToken, BrokerPermission, hash_token
from access.rules import ANONYMOUS_ALL, Permissions
from broker.engine.errors import Unauthorized
from broker.transport.loopback import Peer

# How stale the fast path's view of a token may be (README: revocation delay).
TOKEN_CACHE_SECONDS: Final = 5.0
# Entries kept at most; unknown tokens are cached too (no database query per
# guess), so the bound keeps a client sending random tokens from growing it.
TOKEN_CACHE_SIZE: Final = 10_000

NO_CREDENTIALS: Final = "authentication required: send Authorization: Bearer <token>, or log in"


def token_user(token: str) -> Any | None:
    """The active user owning `token`, or None."""
    if not token:
        return None
    row = ApiToken.objects.select_related("user").filter(key_hash=hash_token(token)).first()
    if row is None or not row.user.is_active:
        return None
    return row.user


def describe(user: Any) -> str:
    return f"user {user.get_username()!r}"


def user_permissions(user: Any) -> Permissions:
    """The union of the user's own permission rows and its groups' rows; superusers may do everything."""
    if user.is_superuser:
        return Permissions.all(describe(user))
    rows = BrokerPermission.objects.filter(Q(user=user) | Q(group__in=user.groups.all())).values_list(
        "configure", "write", "read"
    )
    configure, write, read = [], [], []
    for row_configure, row_write, row_read in rows:
        configure.append(row_configure)
        write.append(row_write)
        read.append(row_read)
    return Permissions(describe(user), configure=configure, write=write, read=read)


def anonymous_allowed(peer: Peer) -> bool:
    """May a client without credentials, who sent its request as `peer`, do everything?

    BROKER_ALLOW_ANONYMOUS set outright decides alone. Left to its default (on while the
    broker listens on loopback), it holds for clients on this machine only (`Peer.is_local`):
    a proxy on this machine that forwards other machines' requests (it names them in
    `X-Forwarded-For` or `Forwarded`, whether the server trusts it or not), or another ASGI
    server listening wider than HTTP_HOST says, does not open the broker to them."""
    if not settings.BROKER_ALLOW_ANONYMOUS:
        return False
    return settings.BROKER_ALLOW_ANONYMOUS_SET or peer.is_local()


def permissions_or_unauthorized(user: Any | None, *, peer: Peer) -> Permissions:
    """A user's permissions; without one, everything if anonymous clients are allowed
    (`anonymous_allowed`), else `unauthorized`."""
    if user is not None and user.is_authenticated:
        return user_permissions(user)
    if anonymous_allowed(peer):
        return ANONYMOUS_ALL
    raise Unauthorized(NO_CREDENTIALS)


def token_permissions(token: str) -> Permissions:
    """The permissions of `token`'s user; `unauthorized` for an unknown token."""
    if is_handler_token(token):
        return Permissions.all(handler_principal())
    user = token_user(token)
    if user is None:
        raise Unauthorized("the API token is not valid")
    return user_permissions(user)


class TokenCache:
    """token hash -> (permissions or None for unknown, expiry), for TOKEN_CACHE_SECONDS."""

    def __init__(self, seconds: float = TOKEN_CACHE_SECONDS, size: int = TOKEN_CACHE_SIZE) -> None:
        self.seconds = seconds
        self.size = size
        self._entries: dict[str, tuple[Permissions | None, float]] = {}

    def get(self, token: str) -> tuple[bool, Permissions | None]:
        """(known, permissions): `known` false when the token must be looked up."""
        entry = self._entries.get(hash_token(token))
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, token: str, permissions: Permissions | None) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[hash_token(token)] = (permissions, time.monotonic() + self.seconds)

    def clear(self) -> None:
        self._entries.clear()


def cached_token_permissions_sync(token: str) -> Permissions | None:
    """`token_permissions` without the exception: None for an unknown token (for the cache)."""
    if is_handler_token(token):  # `runhandlers`' own, as every other door takes it
        return Permissions.all(handler_principal())
    user = token_user(token)
    return None if user is None else user_permissions(user)
