"""The admin's branding, and its pages of stored messages: titled by queue name, listed with
exchange and body, one query for the whole list."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from access.models import BrokerPermission
from bindings.models import Binding
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
from pubsub.streams import forget_admin_streams, refresh_streams
from queues.models import Message, Queue

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("op", password="op-secret-42"))
    return client


def stored(queue: Queue, number: int, *, exchange: str = "orders", body: str = '{"id": 42}') -> Message:
    return Message.objects.create(
        id=number, queue=queue, message_id=f"m-{number}", exchange=exchange, routing_key="orders.eu",
        body=body, published_at="2026-11-28T12:00:00.000000Z",
    )


def test_the_admin_is_branded(admin_client: Client) -> None:
    page = admin_client.get("/admin/").content.decode()
    assert "Pub/sub broker" in page and "Django administration" not in page
    assert "<title>Broker administration | Pub/sub broker admin</title>" in page


def test_a_stored_message_is_titled_with_its_queue_s_name(admin_client: Client) -> None:
    message = stored(Queue.objects.create(name="eu-orders"), 1)
    assert str(message) == "m-1 in queue eu-orders"
    page = admin_client.get(f"/admin/queues/message/{message.pk}/change/").content.decode()
    assert "m-1 in queue eu-orders" in page


def test_the_list_of_stored_messages_shows_exchange_and_body(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    queue = Queue.objects.create(name="eu-orders")
    stored(queue, 1)
    stored(queue, 2, exchange="", body='"' + "x" * 200 + '"')
    for number in range(3, 13):
        stored(queue, number)
    admin_client.get("/admin/queues/message/")  # the session and the user are cached from here on
    forget_admin_streams()
    refresh_streams()  # read now: not again (every few seconds, at a request's start) in the one counted
    with django_assert_max_num_queries(8):  # not one per row
        page = admin_client.get("/admin/queues/message/").content.decode()
    assert '<td class="field-exchange_name">orders</td>' in page
    assert '<td class="field-exchange_name">(default)</td>' in page  # the default exchange
    assert '<td class="field-body_preview">{&quot;id&quot;: 42}</td>' in page
    assert "x" * 200 not in page and "x" * 50 in page  # a preview, not the whole body


def test_the_admin_lists_handler_processes_and_the_retries_waiting(admin_client: Client) -> None:
    import datetime

    from django.utils import timezone

    from pubsub.models import HandlerAttempt, HandlerStatus

    now = timezone.now()
    common = {"hostname": "h", "pid": 1, "concurrency": 2, "started_at": now, "handled": 7, "failed": 1}
    HandlerStatus.objects.create(process="h:1:1", handler="shop.handlers.bill", queue="billing", seen_at=now, **common)
    HandlerStatus.objects.create(
        process="h:2:1", handler="shop.handlers.ship", queue="shipping", seen_at=now - datetime.timedelta(minutes=5),
        **common,
    )
    HandlerAttempt.objects.create(
        store_id=9, message_id="m-9", handler="shop.handlers.bill", queue="billing", attempts=2, last_error="KeyError: 'x'"
    )
    page = admin_client.get("/admin/pubsub/handlerstatus/").content.decode()
    assert "shop.handlers.bill" in page and "shop.handlers.ship" in page
    assert page.count('alt="True"') == 1 and page.count('alt="False"') == 1  # the silent one is not running
    page = admin_client.get("/admin/pubsub/handlerattempt/").content.decode()
    assert "m-9" in page and "KeyError: &#x27;x&#x27;" in page
    assert admin_client.get("/admin/pubsub/handlerattempt/add/").status_code == 403


def test_the_admin_names_handler_processes_and_retries_in_the_plural(admin_client: Client) -> None:
    page = admin_client.get("/admin/").content.decode()
    assert "Handler processes" in page and "Handler retries" in page
    assert "Handler processs" not in page and "Handler retrys" not in page


def test_deleting_a_queue_in_the_admin_counts_its_stored_messages_without_reading_them(
    admin_client: Client,
) -> None:
    queue = Queue.objects.create(name="backlog")
    Message.objects.bulk_create(
        Message(id=n, queue=queue, message_id=f"m-{n}", body="1", published_at="") for n in range(1, 301)
    )
    exchange = Exchange.objects.create(name="orders", type="direct")
    binding = Binding.objects.create(exchange=exchange, queue=queue, binding_key="eu")
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(f"/admin/queues/queue/{queue.pk}/delete/").content.decode()
    assert f'Queue: <a href="/admin/queues/queue/{queue.pk}/change/">backlog</a> (300 stored messages)' in page
    assert f'Binding: <a href="/admin/bindings/binding/{binding.pk}/change/">' in page
    assert "300 stored messages" in page and "m-1 in queue" not in page
    assert "<li>Messages: 300</li>" in page and "<li>Bindings: 1</li>" in page
    reads = [q["sql"] for q in queries.captured_queries if '"queues_message"."id" =' in q["sql"] or "m-1" in q["sql"]]
    assert reads == [] and sum("queues_message" in q["sql"] for q in queries.captured_queries) == 1  # the count

    admin_client.post(f"/admin/queues/queue/{queue.pk}/delete/", {"post": "yes"})
    assert not Queue.objects.exists() and not Message.objects.exists() and not Binding.objects.exists()


def test_a_queue_s_stored_messages_go_with_it_for_whoever_may_delete_queues(client: Client) -> None:
    staff = User.objects.create_user("clerk", password="clerk-secret-42", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_queue", "delete_queue"]))
    BrokerPermission.objects.create(user=staff, configure="backlog", write="", read="")  # as the API's delete
    client.force_login(staff)
    queue = Queue.objects.create(name="backlog")
    stored(queue, 1)
    page = client.get(f"/admin/queues/queue/{queue.pk}/delete/").content.decode()
    assert "1 stored messages" in page and "doesn't have permission" not in page
    client.post(f"/admin/queues/queue/{queue.pk}/delete/", {"post": "yes"})
    assert not Queue.objects.exists() and not Message.objects.exists()


def test_the_admin_deletes_no_stored_message_behind_the_router_s_back(admin_client: Client) -> None:
    """The router holds a queue's head in memory: a row deleted in the admin would still be
    delivered. The queue's message browser deletes through the router."""
    message = stored(Queue.objects.create(name="eu-orders"), 1)
    assert admin_client.get(f"/admin/queues/message/{message.pk}/delete/").status_code == 403
    assert "delete_selected" not in admin_client.get("/admin/queues/message/").content.decode()
    admin_client.post("/admin/queues/message/", {"action": "delete_selected", "_selected_action": [message.pk],
                                                 "post": "yes"})
    assert Message.objects.filter(pk=message.pk).exists()


# -- the message browser's input and rights ---------------------------------------------------


def published_to(client: Client, queue: str, count: int) -> None:
    for number in range(count):
        answer = client.post("/api/exchanges/amq.default/publish/", {"routing_key": queue, "body": number},
                             content_type="application/json")
        assert answer.status_code == 200, answer.content


@pytest.mark.django_db(transaction=True)
def test_the_message_browser_answers_bad_input_with_its_page_and_an_error(
    admin_client: Client, runtime_thread: Runtime
) -> None:
    """`?offset=²` (a digit to str.isdigit, not to int), an offset of 5,000 digits (past
    int()'s limit) and a bad filter with "all that match" were 500s."""
    queue = Queue.objects.create(name="q")
    published_to(admin_client, "q", 1)
    url = f"/admin/queues/queue/{queue.pk}/messages/"
    for offset in ("\u00b2", "9" * 5000, "1" * 19, "-1"):
        answer = admin_client.get(url, {"offset": offset})
        assert answer.status_code == 200
        page = answer.content.decode()
        assert "ffset: must be a whole number of at most 18 digits" in page  # the admin capitalizes messages
        assert page.count("<tr class=\"ready\"") == 1  # the first page, shown
    assert admin_client.get(url, {"offset": "9" * 18}).status_code == 200
    assert "must be a whole number" not in admin_client.get(url, {"offset": "0"}).content.decode()

    bad_path = ".".join(["a"] * 40)
    answer = admin_client.post(f"{url}?path={bad_path}", {"action": "delete", "scope": "all"}, follow=True)
    assert answer.status_code == 200
    assert "nvalid: " in answer.content.decode()  # the action's error, on the page
    assert runtime_thread.broker.queues["q"].depth == 1  # nothing deleted


@pytest.mark.django_db(transaction=True)
def test_the_message_browser_s_actions_need_the_change_permission(
    admin_client: Client, runtime_thread: Runtime
) -> None:
    """Deleting, moving and replaying needed only the view permission of queues."""
    queue = Queue.objects.create(name="q")
    published_to(admin_client, "q", 2)
    viewer = User.objects.create_user("viewer", password="viewer-secret-42", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_queue"))
    BrokerPermission.objects.create(user=viewer, configure=".*", write=".*", read=".*")
    client = Client()
    client.force_login(viewer)
    url = f"/admin/queues/queue/{queue.pk}/messages/"
    page = client.get(url).content.decode()
    assert page.count('<tr class="ready"') == 2 and 'id="browser-actions"' not in page and 'name="ids"' not in page
    for action in ("delete", "move", "replay"):
        answer = client.post(url, {"action": action, "scope": "all", "exchange": "", "routing_key": "elsewhere"})
        assert answer.status_code == 403
    assert runtime_thread.broker.queues["q"].depth == 2

    viewer.user_permissions.add(Permission.objects.get(codename="change_queue"))
    assert 'id="browser-actions"' in client.get(url).content.decode()
    first = re.search(r'<tr class="ready" data-id="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert client.post(url, {"action": "delete", "ids": [first]}).status_code == 302
    assert runtime_thread.broker.queues["q"].depth == 1


# -- the broker's rights ------------------------------------------------------------------------


def test_the_admin_asks_for_the_broker_rights_the_api_asks_for(client: Client) -> None:
    """A staff user with Django's model permissions purged queue `orders` (an x-max-length of 0),
    bound an exchange into it, and could delete it, in the admin, while the API refused them
    (403): only the message browser asked for the broker's rights."""
    from django.contrib.contenttypes.models import ContentType

    from pubsub.models import ChangeStream

    clerk = User.objects.create_user("clerk", password="clerk-secret-42", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(
        content_type__app_label__in=["queues", "exchanges", "bindings", "pubsub"],
        content_type__model__in=["queue", "exchange", "binding", "changestream"],
    ))
    BrokerPermission.objects.create(user=clerk, configure="mine.*", write="mine.*", read="mine.*")
    orders = Queue.objects.create(name="orders")
    other = Exchange.objects.create(name="other", type="fanout")
    mine = Exchange.objects.create(name="mine", type="fanout")
    binding = Binding.objects.create(exchange=other, queue=orders)
    queues_model = ContentType.objects.get_for_model(Queue).pk
    stream = ChangeStream.objects.create(content_type_id=queues_model, exchange="other")
    client.force_login(clerk)

    def refused(url: str, form: dict[str, Any], why: str) -> None:
        answer = client.post(url, form, follow=True)
        assert answer.status_code == 200, url
        assert f"orbidden: user &#x27;clerk&#x27; has no {why}" in answer.content.decode(), url

    configure_orders = "configure permission on queue &#x27;orders&#x27;"
    refused(f"/admin/queues/queue/{orders.pk}/change/", {"durable": "on", "arguments": '{"x-max-length": 0}'},
            configure_orders)
    refused("/admin/queues/queue/add/", {"name": "orders-2", "durable": "on", "arguments": "{}"},
            "configure permission on queue &#x27;orders-2&#x27;")
    refused("/admin/queues/queue/add/", {"name": "mine-q", "durable": "on", "arguments": '{"x-dead-letter-exchange": "other"}'},
            "write permission on exchange &#x27;other&#x27;")
    refused("/admin/exchanges/exchange/add/", {"name": "events", "type": "direct", "durable": "on", "arguments": "{}"},
            "configure permission on exchange &#x27;events&#x27;")
    refused("/admin/exchanges/exchange/add/", {"name": "mine-x", "type": "direct", "durable": "on",
                                                "arguments": '{"alternate-exchange": "other"}'},
            "write permission on exchange &#x27;other&#x27;")
    refused("/admin/bindings/binding/add/", {"exchange": mine.pk, "queue": orders.pk, "binding_key": "", "arguments": "{}"},
            "write permission on queue &#x27;orders&#x27;")
    stream_form = {"content_type": queues_model, "fields": "", "enabled": "on"}
    refused("/admin/pubsub/changestream/add/", {**stream_form, "exchange": "other"},
            "write permission on exchange &#x27;other&#x27;")
    refused(f"/admin/pubsub/changestream/{stream.pk}/change/", {**stream_form, "exchange": "mine"},
            "write permission on exchange &#x27;other&#x27;")
    for url, why in (
        (f"/admin/queues/queue/{orders.pk}/delete/", configure_orders),
        (f"/admin/exchanges/exchange/{other.pk}/delete/", "configure permission on exchange &#x27;other&#x27;"),
        (f"/admin/bindings/binding/{binding.pk}/delete/", "write permission on queue &#x27;orders&#x27;"),
        (f"/admin/pubsub/changestream/{stream.pk}/delete/", "write permission on exchange &#x27;other&#x27;"),
    ):
        assert "orbidden" in client.get(url, follow=True).content.decode()  # not even the confirmation page
        refused(url, {"post": "yes"}, why)
    refused("/admin/queues/queue/", {"action": "delete_selected", "_selected_action": [orders.pk], "post": "yes"},
            configure_orders)

    assert list(Queue.objects.values_list("name", "arguments")) == [("orders", {})]
    assert set(Exchange.objects.values_list("name", flat=True)) >= {"other", "mine"}
    assert not Exchange.objects.filter(name__in=["events", "mine-x"]).exists()
    assert list(Binding.objects.values_list("pk", flat=True)) == [binding.pk]
    assert list(ChangeStream.objects.values_list("exchange", flat=True)) == ["other"]

    # What the rights allow is done.
    assert client.post("/admin/queues/queue/add/", {"name": "mine-q", "durable": "on", "arguments": "{}"}).status_code == 302
    mine_q = Queue.objects.get(name="mine-q")
    form = {"exchange": mine.pk, "queue": mine_q.pk, "binding_key": "", "arguments": "{}"}
    assert client.post("/admin/bindings/binding/add/", form).status_code == 302
    assert client.post("/admin/pubsub/changestream/add/", {**stream_form, "exchange": "mine"}).status_code == 302
    assert client.post(f"/admin/queues/queue/{mine_q.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Queue.objects.filter(name="mine-q").exists()
