"""Tokens on the fast publish path, `createtoken`, the admin's tokens and permission rows,
and `runbroker` off loopback."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError
from django.test import Client

from access import asgi as access_asgi
from access.models import ApiToken, BrokerPermission, hash_token
from broker.runtime.runtime import Runtime
from tests.access.helpers import make_user
from tests.api.conftest import ready

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/exchanges/amq.default/publish/"


@pytest.fixture(autouse=True)
def fresh_token_cache() -> Iterator[None]:
    access_asgi.token_cache.clear()
    yield
    access_asgi.token_cache.clear()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def taken_by_django(response: httpx.Response) -> bool:
    return "cross-origin-opener-policy" in response.headers


# -- the fast publish path ---------------------------------------------------------------


async def test_the_fast_path_takes_a_token_with_write(http: httpx.AsyncClient, runtime: Runtime, settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False
    _, token = await database_sync_to_async(make_user)("pub", write=r"amq\.default")
    answer = await http.post(URL, json={"routing_key": "q", "body": 1}, headers=bearer(token))
    assert answer.status_code == 200 and answer.json()["routed"] == 1
    assert not taken_by_django(answer)
    assert ready(runtime) == 1


@pytest.mark.parametrize("scheme", ["Token", "token"])
async def test_the_fast_path_takes_drfs_token_scheme(
    http: httpx.AsyncClient, runtime: Runtime, settings: Any, scheme: str
) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False
    _, token = await database_sync_to_async(make_user)("pub", write=r"amq\.default")
    answer = await http.post(URL, json={"routing_key": "q", "body": 1}, headers={"authorization": f"{scheme} {token}"})
    assert answer.status_code == 200 and answer.json()["routed"] == 1
    assert not taken_by_django(answer)
    assert ready(runtime) == 1


async def test_the_fast_path_refuses_without_write(http: httpx.AsyncClient, runtime: Runtime, settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False
    _, token = await database_sync_to_async(make_user)("pub", write="orders")
    answer = await http.post(URL, json={"routing_key": "q", "body": 1}, headers=bearer(token))
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden")
    assert "write permission on exchange 'amq.default'" in answer.json()["error"]["message"]
    assert ready(runtime) == 0


async def test_the_fast_path_wants_credentials_when_anonymous_is_off(
    http: httpx.AsyncClient, runtime: Runtime, settings: Any
) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False
    answer = await http.post(URL, json={"routing_key": "q", "body": 1})
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
    assert answer.headers["www-authenticate"] == "Bearer"
    settings.BROKER_ALLOW_ANONYMOUS = True  # read per request, not at import
    assert (await http.post(URL, json={"routing_key": "q", "body": 1})).status_code == 200
    assert ready(runtime) == 1


async def test_a_bad_token_is_refused_on_the_fast_path(http: httpx.AsyncClient, runtime: Runtime, settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = True
    for header in ("Bearer nope", "Bearer a b", "Token nope", "Token a b"):
        answer = await http.post(URL, json={"routing_key": "q", "body": 1}, headers={"authorization": header})
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
    assert ready(runtime) == 0


@pytest.mark.parametrize("tokens", ["", " a b"])
async def test_a_malformed_token_header_is_refused_on_the_fast_path_as_a_bearer_one(
    http: httpx.AsyncClient, runtime: Runtime, settings: Any, tokens: str
) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = True

    async def answer(scheme: str) -> tuple[int, str, Any]:
        headers = {"authorization": scheme + tokens}
        response = await http.post(URL, json={"routing_key": "q", "body": 1}, headers=headers)
        assert not taken_by_django(response)
        return response.status_code, response.headers["www-authenticate"], response.json()

    assert await answer("Token") == await answer("Bearer")
    status, www_authenticate, body = await answer("Token")
    assert (status, www_authenticate, body["error"]["code"]) == (401, "Bearer", "unauthorized")
    assert body["error"]["message"] == "the Authorization header must be 'Bearer <token>' or 'Token <token>'"
    assert ready(runtime) == 0


async def test_the_fast_path_caches_tokens_for_a_few_seconds(
    http: httpx.AsyncClient, runtime: Runtime, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False
    _, token = await database_sync_to_async(make_user)("pub", write=".*")
    lookups: list[str] = []
    real = access_asgi.cached_token_permissions_sync

    def counting(raw: str) -> Any:
        lookups.append(raw)
        return real(raw)

    monkeypatch.setattr(access_asgi, "cached_token_permissions_sync", counting)
    for _ in range(3):
        assert (await http.post(URL, json={"routing_key": "q", "body": 1}, headers=bearer(token))).status_code == 200
    assert lookups == [token]  # one database lookup for three requests
    # Revoked: still served from the cache until it expires (README: up to TOKEN_CACHE_SECONDS) ...
    await database_sync_to_async(ApiToken.objects.all().delete)()
    assert (await http.post(URL, json={"routing_key": "q", "body": 1}, headers=bearer(token))).status_code == 200
    access_asgi.token_cache.clear()  # ... and refused once it has
    answer = await http.post(URL, json={"routing_key": "q", "body": 1}, headers=bearer(token))
    assert answer.status_code == 401


def test_the_token_cache_expires_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from access import selectors
    from access.rules import ANONYMOUS_ALL

    now = [100.0]
    monkeypatch.setattr(selectors.time, "monotonic", lambda: now[0])
    cache = selectors.TokenCache(seconds=5.0, size=3)
    cache.put("t", ANONYMOUS_ALL)
    cache.put("unknown", None)
    assert cache.get("t") == (True, ANONYMOUS_ALL) and cache.get("unknown") == (True, None)
    now[0] += 5.1
    assert cache.get("t") == (False, None)
    for n in range(10):
        cache.put(f"n{n}", None)
    assert len(cache._entries) <= 3


# -- createtoken ---------------------------------------------------------------------------


def test_createtoken_prints_a_working_token_once() -> None:
    user = User.objects.create_user("alice")
    out, err = io.StringIO(), io.StringIO()
    call_command("createtoken", "alice", "--name", "ci", stdout=out, stderr=err)
    token = out.getvalue().strip()
    row = ApiToken.objects.get(user=user)
    assert (row.name, row.key_hash) == ("ci", hash_token(token))
    assert "only its hash is stored" in err.getvalue()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/queues/").status_code == 200


def test_createtoken_for_an_unknown_or_inactive_user_fails() -> None:
    with pytest.raises(CommandError, match="does not exist"):
        call_command("createtoken", "nobody", stdout=io.StringIO())
    User.objects.create_user("gone", is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        call_command("createtoken", "gone", stdout=io.StringIO())
    assert not ApiToken.objects.exists()


# -- the admin -------------------------------------------------------------------------------


def test_a_token_added_in_the_admin_is_shown_once() -> None:
    admin = User.objects.create_superuser("root", "root@example.invalid", "pw")
    user = User.objects.create_user("alice")
    client = Client()
    client.force_login(admin)
    response = client.post("/admin/access/apitoken/add/", {"user": user.pk, "name": "laptop"}, follow=True)
    assert response.status_code == 200
    found = re.search(r"The new token of alice is ([A-Za-z0-9_-]+)", response.content.decode())
    assert found is not None
    row = ApiToken.objects.get(user=user, name="laptop")
    assert row.key_hash == hash_token(found.group(1))
    page = client.get(f"/admin/access/apitoken/{row.pk}/change/").content.decode()
    assert found.group(1) not in page and row.prefix in page  # shown once: now only its prefix


def test_a_staff_user_adds_tokens_in_the_admin_for_themselves_only() -> None:
    """With add_apitoken alone, a staff user made (and was shown) a token of any user, a
    superuser's included: every right of that user."""
    from django.contrib.auth.models import Permission

    root = User.objects.create_superuser("root", "root@example.invalid", "pw")
    staff = User.objects.create_user("clerk", password="pw", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["add_apitoken", "view_apitoken"]))
    client = Client()
    client.force_login(staff)
    form = client.get("/admin/access/apitoken/add/").content.decode()
    assert re.findall(r'<option value="(\d+)"', form) == [str(staff.pk)]
    refused = client.post("/admin/access/apitoken/add/", {"user": root.pk, "name": "mine now"})
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    assert "The new token" not in refused.content.decode() and not ApiToken.objects.exists()
    added = client.post("/admin/access/apitoken/add/", {"user": staff.pk, "name": "laptop"}, follow=True)
    assert "The new token of clerk is" in added.content.decode()
    assert list(ApiToken.objects.values_list("user__username", flat=True)) == ["clerk"]


def test_permission_rows_are_managed_in_the_admin_and_patterns_checked() -> None:
    admin = User.objects.create_superuser("root", "root@example.invalid", "pw")
    user = User.objects.create_user("alice")
    client = Client()
    client.force_login(admin)
    url = "/admin/access/brokerpermission/add/"
    bad = client.post(url, {"user": user.pk, "configure": "(", "write": "", "read": ".*"})
    assert bad.status_code == 200 and "is not a regular expression" in bad.content.decode()
    neither = client.post(url, {"configure": ".*", "write": "", "read": ""})
    assert neither.status_code == 200 and "either a user or a group" in neither.content.decode()
    assert not BrokerPermission.objects.exists()
    good = client.post(url, {"user": user.pk, "configure": "q.*", "write": "", "read": ".*"})
    assert good.status_code == 302
    assert BrokerPermission.objects.get().configure == "q.*"


def test_patterns_are_checked_on_save_and_a_row_has_a_user_or_a_group() -> None:
    user = User.objects.create_user("alice")
    with pytest.raises(ValidationError) as error:
        BrokerPermission.objects.create(user=user, configure="", write="[", read="")
    assert "write" in error.value.message_dict
    with pytest.raises(IntegrityError):
        BrokerPermission.objects.create(user=user, group=Group.objects.create(name="g"), configure=".*")


# -- runbroker ----------------------------------------------------------------------------------


def test_runbroker_off_loopback_turns_anonymous_access_off(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from subscriptions.management.commands import runbroker

    served: list[str] = []
    monkeypatch.setattr(runbroker, "run", lambda application, host, port, **options: served.append(host))
    settings.DO_MIGRATIONS = False
    settings.BROKER_ALLOW_ANONYMOUS = True  # the default on loopback HTTP_HOST ...
    settings.BROKER_ALLOW_ANONYMOUS_SET = False
    err = io.StringIO()
    call_command("runbroker", "--host", "0.0.0.0", stderr=err)  # ... moved off it by --host
    assert served == ["0.0.0.0"] and settings.BROKER_ALLOW_ANONYMOUS is False
    assert "anonymous access is off" in err.getvalue()


def test_runbroker_keeps_anonymous_access_when_said_outright(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from subscriptions.management.commands import runbroker

    monkeypatch.setattr(runbroker, "run", lambda application, host, port, **options: None)
    settings.DO_MIGRATIONS = False
    settings.BROKER_ALLOW_ANONYMOUS = True
    settings.BROKER_ALLOW_ANONYMOUS_SET = True
    err = io.StringIO()
    call_command("runbroker", "--host", "0.0.0.0", stderr=err)
    assert settings.BROKER_ALLOW_ANONYMOUS is True
    assert "anonymous access is ON" in err.getvalue()
