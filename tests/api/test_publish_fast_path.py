"""The async publish view and its fallback to the DRF action (exchanges/publish_view.py)."""

from __future__ import annotations

from django.contrib.auth.models import User
from rest_framework.test import APIClient

from broker_project.runtime import Runtime
from queues.models import Queue

URL = "/api/exchanges/amq.default/publish/"


def test_json_without_a_session_takes_the_fast_path(runtime_thread: Runtime) -> None:
    Queue.objects.create(name="q")
    answer = APIClient().post(URL, {"routing_key": "q", "body": 1}, format="json")
    assert answer.status_code == 200 and answer.json()["routed"] == 1
    slashless = APIClient().post(URL.rstrip("/"), {"routing_key": "q", "body": 2}, format="json")
    assert slashless.status_code == 200
    assert runtime_thread.broker.queue_counts("q").messages_ready == 2  # type: ignore[union-attr]


def test_a_logged_in_session_goes_through_drf_and_its_csrf_check(runtime_thread: Runtime) -> None:
    Queue.objects.create(name="q")
    User.objects.create_superuser("op", "op@example.invalid", "pw")
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="op", password="pw")
    answer = client.post(URL, {"routing_key": "q", "body": 1}, format="json")
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"
    assert runtime_thread.broker.queue_counts("q").messages_ready == 0  # type: ignore[union-attr]


def test_a_form_post_from_the_browsable_api_is_served_by_drf(runtime_thread: Runtime) -> None:
    Queue.objects.create(name="q")
    answer = APIClient().post(URL, {"routing_key": "q", "body": "from a form"}, format="multipart")
    assert (answer.status_code, answer.json()["routed"]) == (200, 1)
    (message,) = runtime_thread.call_threadsafe(
        runtime_thread.get, "q", count=1, ack=True
    )
    assert message["body"] == "from a form"  # a form field arrives as a string body
