"""The ASGI fast path for JSON publishes (broker/transport/fast_publish.py), and
what it leaves to Django: session requests, forms, bad hosts get Django's rules."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User

from broker.runtime.runtime import Runtime
from broker_project.asgi import application
from queues.models import Queue
from tests.access.helpers import session_key
from tests.api.conftest import ready

URL = "/api/exchanges/amq.default/publish/"


def taken_by_django(response: httpx.Response) -> bool:
    return "cross-origin-opener-policy" in response.headers  # Django's SecurityMiddleware adds it


async def test_a_json_publish_is_answered_in_front_of_django(http: httpx.AsyncClient, runtime: Runtime) -> None:
    for url in (URL, URL.rstrip("/")):
        answer = await http.post(url, json={"routing_key": "q", "body": {"n": 1}})
        assert answer.status_code == 200 and answer.json()["routed"] == 1
        assert not taken_by_django(answer)
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert ready(runtime) == 2


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"routing_key": "q"}', 400, "invalid"),  # no body field
        (b"{not json", 400, "invalid"),
        (b"[1, 2]", 400, "invalid"),
        # orjson would read it as a float: the subscribers would get another number.
        (b'{"routing_key": "q", "body": {"n": 18446744073709551616}}', 400, "invalid"),
        (b'{"body": "x" }' + b" " * (1024 * 1024 + 70 * 1024), 413, "too_large"),
    ],
)
async def test_bad_publishes_get_the_api_errors_and_change_nothing(
    http: httpx.AsyncClient, runtime: Runtime, body: bytes, status: int, code: str
) -> None:
    answer = await http.post(URL, content=body, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert ready(runtime) == 0


async def test_a_missing_exchange_is_not_found(http: httpx.AsyncClient) -> None:
    answer = await http.post("/api/exchanges/nope/publish/", json={"body": 1})
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")


async def test_a_host_outside_allowed_hosts_is_refused(http: httpx.AsyncClient, runtime: Runtime) -> None:
    answer = await http.post(URL, json={"routing_key": "q", "body": 1}, headers={"host": "evil.example"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid")
    assert ready(runtime) == 0


async def test_forms_go_to_django(http: httpx.AsyncClient, runtime: Runtime) -> None:
    answer = await http.post(URL, data={"routing_key": "q", "body": "from a form"})
    assert answer.status_code == 200 and taken_by_django(answer)
    assert ready(runtime) == 1


@database_sync_to_async
def logged_in_session() -> str:
    return session_key(User.objects.create_superuser("op", "op@example.invalid", "pw"))


async def test_a_logged_in_session_goes_to_django_and_its_csrf_check(http: httpx.AsyncClient, runtime: Runtime) -> None:
    http.cookies.set("sessionid", await logged_in_session())
    answer = await http.post(URL, json={"routing_key": "q", "body": 1})
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden")
    assert taken_by_django(answer)
    assert ready(runtime) == 0


async def test_a_page_of_another_site_cannot_publish_anonymously(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """A `fetch` in no-cors mode with a Blob body sends no Content-Type, and an `Origin`:
    such a request goes to Django, which refuses an anonymous change from that origin."""
    answer = await http.post(URL, content=b'{"routing_key": "q", "body": 1}', headers={"origin": "https://evil.example"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden")
    assert ready(runtime) == 0
    answer = await http.post(URL, content=b'{"routing_key": "q", "body": 1}', headers={"origin": "http://localhost"})
    assert answer.status_code == 415  # an allowed page, through Django: it needs a Content-Type
    answer = await http.post(URL, json={"routing_key": "q", "body": 1}, headers={"origin": "http://localhost"})
    assert answer.status_code == 200 and ready(runtime) >= 1


async def test_by_default_a_remote_client_must_authenticate(runtime: Runtime, settings: Any) -> None:
    """Anonymous access is on by default because the broker listens on loopback: for this
    machine's clients only, not for those a proxy forwards (their address in the scope)."""
    settings.BROKER_ALLOW_ANONYMOUS, settings.BROKER_ALLOW_ANONYMOUS_SET = True, False
    await database_sync_to_async(Queue.objects.create)(name="q")
    transport = httpx.ASGITransport(app=application, client=("203.0.113.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as remote:
        answer = await remote.post(URL, json={"routing_key": "q", "body": 1})
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
        assert not taken_by_django(answer)
        assert (await remote.get("/metrics")).status_code == 401
    assert ready(runtime) == 0
