"""The credential of this project's own handler processes (`manage.py runhandlers`).

They are Django code of the same project, holding the same database and the
same `SECRET_KEY` as the broker: their token is signed with that key, so it is
never stored and needs no user. It may do everything, as a superuser may; it is
made afresh for each connection and lasts five minutes.
"""

from __future__ import annotations

from typing import Final

from django.contrib.auth.models import AnonymousUser
from django.core import signing

PREFIX: Final = "handlers."
_SALT: Final = "broker.access.handler-token"
_WHO: Final = "the project's handlers"
# A token is minted for each connection and declaration, and refused once older: one
# seen on the way is of no use for long.
MAX_AGE_SECONDS: Final = 300


def handler_token() -> str:
    return PREFIX + signing.dumps(_WHO, salt=_SALT)


def is_handler_token(token: str) -> bool:
    if not token.startswith(PREFIX):
        return False
    try:
        return bool(signing.loads(token[len(PREFIX) :], salt=_SALT, max_age=MAX_AGE_SECONDS) == _WHO)
    except signing.BadSignature:
        return False


def handler_principal() -> str:
    return _WHO


class HandlerUser(AnonymousUser):
    """Who the HTTP API sees behind a handler token: no row, every permission."""

    username = "handlers"  # type: ignore[assignment]

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    @property
    def is_anonymous(self) -> bool:  # type: ignore[override]
        return False

    is_superuser = True  # type: ignore[assignment]
    is_active = True  # type: ignore[assignment]
