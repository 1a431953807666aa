"""The console at `/`: server-rendered topology with live counts, the links, CSRF and login."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from bindings.models import Binding
from broker.protocol.publish import PublishRequest
from broker.router.calls import on_loop
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
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


def test_home_shows_a_binding_to_an_exchange_apart_from_one_to_a_queue_of_that_name(
    runtime_thread: Runtime,
) -> None:
    events = Exchange.objects.create(name="events", type="topic")
    billing = Exchange.objects.create(name="billing", type="fanout")
    Binding.objects.create(exchange=events, destination_exchange=billing, binding_key="bill.*")
    Binding.objects.create(exchange=events, queue=Queue.objects.create(name="billing"), binding_key="bill.*")
    html = Client().get("/").content.decode()
    found = re.search(r'<script id="initial-state" type="application/json">(.*?)</script>', html, re.DOTALL)
    assert found is not None
    bindings = json.loads(found.group(1))["bindings"]
    assert [(b["exchange"], b["queue"], b["destination_exchange"]) for b in bindings] == [
        ("events", None, "billing"), ("events", "billing", None)]
    to_exchange, to_queue = re.findall(r'<tr data-exchange="events" .*?</tr>', html, re.DOTALL)
    assert 'data-destination-exchange="billing"' in to_exchange and "data-queue" not in to_exchange
    assert '<td><span class="tag">exchange</span> billing</td>' in to_exchange
    assert 'data-queue="billing"' in to_queue and "data-destination-exchange" not in to_queue
    assert "<td>billing</td>" in to_queue
    assert "None" not in to_exchange + to_queue


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


def test_home_lists_as_many_as_the_stats_frame_does(runtime_thread: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past LISTED queues the page lists the deepest LISTED, and the bindings between those
    listed, as the `stats` frame that follows it does: a broker of many queues costs the
    page no more."""
    monkeypatch.setattr("console.views.LISTED", 3)
    monkeypatch.setattr("broker.runtime.stats.LISTED", 3)  # the router chooses the queues
    orders = Exchange.objects.create(name="orders", type="fanout")
    for name in ("a", "b", "c", "d"):
        Binding.objects.create(exchange=orders, queue=Queue.objects.create(name=name))
    for name, count in (("a", 1), ("c", 2), ("d", 3)):
        for _ in range(count):
            on_loop(runtime_thread.loop, runtime_thread.publish, PublishRequest("", name, "1", {}, False, None))
    html = Client().get("/").content.decode()
    found = re.search(r'<script id="initial-state" type="application/json">(.*?)</script>', html, re.DOTALL)
    assert found is not None
    state = json.loads(found.group(1))
    assert [q["name"] for q in state["queues"]] == ["a", "c", "d"]
    assert len(state["exchanges"]) <= 3  # the default, orders, and amq.* ones when the database has them
    listed = "orders" in {x["name"] for x in state["exchanges"]}
    assert [b["queue"] for b in state["bindings"]] == (["a", "c", "d"] if listed else [])  # none to b
