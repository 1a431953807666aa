"""The home page lists the topology with live counts and links to the consoles."""

from __future__ import annotations

from django.test import Client

from broker_project.publishing import PublishRequest
from broker_project.runtime import Runtime
from queues.models import Queue


def test_home_shows_queues_with_live_counts_and_the_links(runtime_thread: Runtime) -> None:
    Queue.objects.create(name="inbox")
    runtime_thread.call_threadsafe(runtime_thread.publish, PublishRequest("", "inbox", "1", {}, False, None))
    response = Client().get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "inbox" in html and "amq.default" in html
    assert '<td class="n">1</td>' in html  # one ready message, counted by the router
    for link in ("/admin/", "/api/", "/api/docs/", "/api/schema/"):
        assert f'href="{link}"' in html
