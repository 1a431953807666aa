"""The console at `/`: server-rendered topology with live counts, the links, CSRF and login."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from broker.protocol.publish import PublishRequest
from broker.router.calls import on_loop
from broker.runtime.runtime import Runtime
from queues.models import Queue


def test_home_shows_queues_with_live_counts_and_the_links(runtime_thread: Runtime) -> None:
    Queue.objects.create(name="inbox")
    on_loop(runtime_thread.loop, runtime_thread.publish, PublishRequest("", "inbox", "1", {}, False, None))
    response = Client().get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "inbox" in html and "amq.default" in html
    assert '<td class="n" data-field="messages_ready">1</td>' in html  # one ready message, counted by the router
    for link in ("/admin/", "/api/", "/api/docs/", "/api/schema/"):
        assert f'href="{link}"' in html


def test_home_embeds_the_initial_state_and_loads_the_console_script(runtime_thread: Runtime) -> None:
    Queue.objects.create(name="inbox")
    html = Client().get("/").content.decode()
    found = re.search(r'<script id="initial-state" type="application/json">(.*?)</script>', html, re.DOTALL)
    assert found is not None
    state = json.loads(found.group(1))
    assert [q["name"] for q in state["queues"]] == ["inbox"]
    assert {"name": "", "type": "direct", "durable": True, "arguments": {}, "features": []} in state["exchanges"]  # the default exchange, as in `stats`
    assert 'type="module" src="/static/console/main.js"' in html


@pytest.mark.django_db
def test_home_sets_the_csrf_cookie_for_the_scripts() -> None:
    response = Client().get("/")
    assert "csrftoken" in response.cookies


@pytest.mark.django_db
def test_home_sends_anonymous_users_to_the_login_page_unless_allowed(settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False  # pytest-django restores it
    response = Client().get("/")
    assert (response.status_code, response["Location"]) == (302, "/admin/login/?next=/")
    client = Client()
    client.force_login(User.objects.create_user("ops"))
    assert client.get("/").status_code == 200
