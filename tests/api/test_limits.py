"""MAX_QUEUES and MAX_BINDINGS over HTTP (409 `limit_exceeded`, nothing changes), and CSRF:
a cross-site POST riding on a session is refused (README, "Limits")."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from bindings.models import Binding
from broker.runtime.runtime import Runtime
from queues.models import Queue

from .conftest import Api, error_code

pytestmark = pytest.mark.django_db(transaction=True)


def test_queues_past_max_queues_are_refused(api: Api, runtime_thread: Runtime, settings: Any) -> None:
    settings.MAX_QUEUES = 2
    assert api.post("/api/queues/", {"name": "a"})[0] == 201
    assert api.post("/api/queues/", {"name": "b"})[0] == 201
    status, body = api.post("/api/queues/", {"name": "c"})
    assert (status, body["error"]["code"]) == (409, "limit_exceeded")
    assert "MAX_QUEUES" in body["error"]["message"]
    assert sorted(Queue.objects.values_list("name", flat=True)) == ["a", "b"]
    assert "c" not in runtime_thread.broker.queues
    assert api.post("/api/queues/", {"name": "a"})[0] == 200  # redeclaring an existing one is fine
    assert error_code(api.post("/queues", {"name": "c", "durable": True})) == (409, "limit_exceeded")  # the original call too
    assert api.delete("/api/queues/b/")[0] == 204
    assert api.post("/api/queues/", {"name": "c"})[0] == 201  # room again


def test_bindings_past_max_bindings_are_refused(api: Api, runtime_thread: Runtime, settings: Any) -> None:
    settings.MAX_BINDINGS = 1
    api.post("/api/exchanges/", {"name": "ex", "type": "direct"})
    api.post("/api/queues/", {"name": "q"})
    assert api.post("/api/bindings/", {"exchange": "ex", "queue": "q", "binding_key": "a"})[0] == 201
    refused = api.post("/api/bindings/", {"exchange": "ex", "queue": "q", "binding_key": "b"})
    assert error_code(refused) == (409, "limit_exceeded")
    assert list(Binding.objects.values_list("binding_key", flat=True)) == ["a"]
    assert len(runtime_thread.broker.bindings) == 1
    assert api.post("/api/bindings/", {"exchange": "ex", "queue": "q", "binding_key": "a"})[0] == 200  # identical


def test_zero_means_no_limit(api: Api, runtime_thread: Runtime, settings: Any) -> None:
    settings.MAX_QUEUES = 0
    for n in range(5):
        assert api.post("/api/queues/", {"name": f"q{n}"})[0] == 201


def test_a_cross_site_post_with_a_session_is_refused(runtime_thread: Runtime) -> None:
    user = User.objects.create_superuser("op", "op@example.invalid", "pw")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    browser.get("/")  # the console sets the CSRF cookie its scripts send back
    token = browser.cookies["csrftoken"].value
    same_site = browser.post(
        "/api/queues/", {"name": "mine"}, content_type="application/json",
        HTTP_X_CSRFTOKEN=token, HTTP_ORIGIN="http://testserver",
    )
    assert same_site.status_code == 201
    # Another site's page cannot read the token; even with it, its Origin gives it away.
    for headers in ({"HTTP_ORIGIN": "https://evil.example"}, {"HTTP_ORIGIN": "https://evil.example", "HTTP_X_CSRFTOKEN": token}):
        refused = browser.post("/api/queues/", {"name": "theirs"}, content_type="application/json", **headers)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert not Queue.objects.filter(name="theirs").exists()
