"""A change made in the Django admin of the running broker reaches the routing
of connected subscribers within a second."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import httpx
import pytest

from tests.e2e.client import WsClient
from tests.e2e.harness import ROOT, BrokerProcess
from tests.eventually import eventually

pytestmark = pytest.mark.e2e

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def admin_session(broker: BrokerProcess) -> httpx.Client:
    env = {**broker.env, "DJANGO_SUPERUSER_USERNAME": "op", "DJANGO_SUPERUSER_PASSWORD": "op-secret-42",
           "DJANGO_SUPERUSER_EMAIL": "op@example.invalid"}
    subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput"], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=60)
    http = httpx.Client(base_url=broker.url, timeout=10)
    token = CSRF.search(http.get("/admin/login/").text).group(1)  # type: ignore[union-attr]
    answer = http.post("/admin/login/?next=/admin/",
                       data={"username": "op", "password": "op-secret-42", "csrfmiddlewaretoken": token})
    assert answer.status_code == 302, answer.text
    return http


def option_value(html: str, field: str, label: str) -> str:
    select = re.search(rf'<select name="{field}".*?</select>', html, re.S).group(0)  # type: ignore[union-attr]
    return re.search(rf'<option value="(\d+)"[^>]*>{re.escape(label)}', select).group(1)  # type: ignore[union-attr]


async def test_a_binding_added_in_the_admin_routes_within_a_second(broker: BrokerProcess) -> None:
    with httpx.Client(base_url=broker.url) as api:
        assert api.post("/api/exchanges/", json={"name": "alerts", "type": "direct"}).status_code == 201
        assert api.post("/api/queues/", json={"name": "pager"}).status_code == 201
    subscriber = await WsClient.connect(broker.ws_url)
    await subscriber.request({"type": "subscribe", "id": "s", "queue": "pager"})

    http = await asyncio.to_thread(admin_session, broker)
    form = http.get("/admin/bindings/binding/add/").text
    data = {
        "csrfmiddlewaretoken": CSRF.search(form).group(1),  # type: ignore[union-attr]
        "exchange": option_value(form, "exchange", "alerts"),
        "queue": option_value(form, "queue", "pager"),
        "binding_key": "disk.full",
        "arguments": "{}",
        "_save": "Save",
    }
    saved = await asyncio.to_thread(http.post, "/admin/bindings/binding/add/", data=data)
    assert saved.status_code == 302, saved.text
    async with httpx.AsyncClient(base_url=broker.url) as api:

        async def routed() -> bool:  # each try publishes; only the one that is routed reaches the queue
            answer = (await api.post("/api/exchanges/alerts/publish/", json={"routing_key": "disk.full",
                                                                            "body": "page"})).json()
            return bool(answer["routed"] == 1)

        await eventually(routed, timeout=1, interval=0.05, what="the admin's binding at the router")
    assert (await subscriber.messages(1))[0]["body"] == "page"

    # Deleting the queue in the admin ends the subscription and the routing.
    changelist = http.get("/admin/queues/queue/").text
    queue_id = re.search(r'href="/admin/queues/queue/(\d+)/change/">pager<', changelist).group(1)  # type: ignore[union-attr]
    confirm = http.get(f"/admin/queues/queue/{queue_id}/delete/").text
    deleted = await asyncio.to_thread(http.post, f"/admin/queues/queue/{queue_id}/delete/",
                                      data={"csrfmiddlewaretoken": CSRF.search(confirm).group(1), "post": "yes"})  # type: ignore[union-attr]
    assert deleted.status_code == 302
    assert (await subscriber.recv())["type"] == "cancelled"
    async with httpx.AsyncClient(base_url=broker.url) as api:
        answer = (await api.post("/api/exchanges/alerts/publish/", json={"routing_key": "disk.full", "body": 2})).json()
    assert answer["routed"] == 0
    http.close()
    await subscriber.close()
