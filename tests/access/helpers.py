"""Users, groups, permission rows, tokens and sessions for the tests of the doors (sync ORM)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group, User
from django.contrib.sessions.backends.db import SessionStore

from access.models import ApiToken, BrokerPermission


def make_user(
    name: str,
    *,
    configure: str | None = None,
    write: str | None = None,
    read: str | None = None,
    superuser: bool = False,
    groups: tuple[str, ...] = (),
    **fields: Any,
) -> tuple[User, str]:
    """A user (with one permission row when any pattern is given) and an API token of theirs."""
    if superuser:
        user = User.objects.create_superuser(name, f"{name}@example.invalid", "pw")
    else:
        user = User.objects.create_user(name, f"{name}@example.invalid", "pw", **fields)
    if (configure, write, read) != (None, None, None):
        BrokerPermission.objects.create(user=user, configure=configure or "", write=write or "", read=read or "")
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    _, token = ApiToken.issue(user=user, name="test")
    return user, token


def grant_group(name: str, *, configure: str = "", write: str = "", read: str = "") -> Group:
    group = Group.objects.get_or_create(name=name)[0]
    BrokerPermission.objects.create(group=group, configure=configure, write=write, read=read)
    return group


def session_key(user: User) -> str:
    """A logged-in session of `user`, as the login page would leave it."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return str(session.session_key)
