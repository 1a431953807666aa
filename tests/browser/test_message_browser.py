"""The admin's message browser in headless Chromium against the real `runbroker`: filter a
dead-letter queue by a JSON field, replay the matches, and see them arrive at their origin
queue and vanish from the dead-letter queue."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.browser.conftest import screenshot
from tests.e2e.harness import ROOT, BrokerProcess

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture reports it: a skip here, a failure under CI
    expect = None

pytestmark = pytest.mark.browser


def dead_letters(broker: BrokerProcess, count: int) -> None:
    """`count` orders published to `shop` (key `new`), rejected by a client of `work`, so they
    wait in `work.dead`; even ones are French."""
    with httpx.Client(base_url=broker.url, timeout=10) as api:
        for path, data in (
            ("/api/exchanges/", {"name": "shop", "type": "direct"}),
            ("/api/exchanges/", {"name": "shop.dlx", "type": "fanout"}),
            ("/api/queues/", {"name": "work.dead"}),
            ("/api/bindings/", {"exchange": "shop.dlx", "queue": "work.dead"}),
            ("/api/queues/", {"name": "work", "arguments": {"x-dead-letter-exchange": "shop.dlx"}}),
            ("/api/bindings/", {"exchange": "shop", "queue": "work", "binding_key": "new"}),
        ):
            assert api.post(path, json=data).status_code == 201
        for n in range(count):
            order = {"order": {"n": n, "country": "fr" if n % 2 == 0 else "de"}}
            assert api.post("/api/exchanges/shop/publish/", json={"routing_key": "new", "body": order}).status_code == 200

    # Playwright's sync API holds this thread's event loop: the sync client, not asyncio.
    with connect(broker.ws_url) as ws:
        ws.send(json.dumps({"type": "subscribe", "id": "s", "queue": "work", "ack": "client", "prefetch": 0}))
        tags: list[int] = []
        while len(tags) < count:
            frame = json.loads(ws.recv(timeout=10))
            if frame["type"] == "message":
                tags.append(frame["delivery_tag"])
        ws.send(json.dumps({"type": "nack", "delivery_tag": tags[-1], "multiple": True, "requeue": False}))
        ws.send(json.dumps({"type": "unsubscribe", "id": "s"}))
        ws.recv(timeout=10)


def log_in(page: Any, broker: BrokerProcess) -> None:
    env = {**broker.env, "DJANGO_SUPERUSER_USERNAME": "ops", "DJANGO_SUPERUSER_PASSWORD": "ops-secret-42",
           "DJANGO_SUPERUSER_EMAIL": "ops@example.invalid"}
    subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput"], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=60)
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "ops-secret-42")
    page.locator('input[type="submit"]').click()
    page.wait_for_url(f"{broker.url}/admin/")


def test_filter_a_dead_letter_queue_by_a_json_field_and_replay_the_matches(page: Any, broker: BrokerProcess) -> None:
    dead_letters(broker, 6)
    log_in(page, broker)
    page.goto("/admin/queues/queue/?q=work.dead")
    page.get_by_role("link", name="Browse messages").first.click()
    expect(page.locator("#match-count")).to_have_text("6")
    page.fill('input[name="path"]', "order.country")
    page.fill('input[name="value"]', '"fr"')
    page.locator('#browser-filter input[type="submit"]').click()
    expect(page.locator("#match-count")).to_have_text("3")
    expect(page.locator("#browser tbody tr")).to_have_count(3)
    screenshot(page, "admin-message-browser-filtered")

    page.select_option('select[name="action"]', "replay")
    page.check('input[name="scope"][value="all"]')
    page.locator('#browser-actions input[type="submit"]').click()
    expect(page.locator(".messagelist")).to_contain_text("Replayed 3 message(s)")
    expect(page.locator("#match-count")).to_have_text("0")  # the filter stays: none of them is left
    screenshot(page, "admin-message-browser-replayed")

    with httpx.Client(base_url=broker.url, timeout=10) as api:
        work = api.get("/api/queues/work/messages/").json()
        dead = api.get("/api/queues/work.dead/messages/").json()
    assert sorted(m["body"]["order"]["n"] for m in work["messages"]) == [0, 2, 4]
    assert sorted(m["body"]["order"]["n"] for m in dead["messages"]) == [1, 3, 5]

    # The selected ones only: delete one German order by its checkbox.
    page.goto("/admin/queues/queue/?q=work.dead")
    page.get_by_role("link", name="Browse messages").first.click()
    first = page.locator('#browser tbody input[name="ids"]').first
    first.check()
    page.select_option('select[name="action"]', "delete")
    page.locator('#browser-actions input[type="submit"]').click()
    expect(page.locator(".messagelist")).to_contain_text("Deleted 1 message(s)")
    expect(page.locator("#match-count")).to_have_text("2")
