"""Rows written through the ORM or the admin: the signal path to the router, and clean()."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client

from bindings.models import Binding
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
from queues.models import Queue

from .conftest import Api

pytestmark = pytest.mark.django_db(transaction=True)


def test_orm_queue_is_routable_at_once_and_deleted_from_the_router(api: Api, runtime_thread: Runtime) -> None:
    row = Queue.objects.create(name="orm-q")
    status, body = api.post("/api/exchanges/amq.default/publish/", {"routing_key": "orm-q", "body": 1})
    assert (status, body["routed"]) == (200, 1)
    row.delete()
    assert "orm-q" not in runtime_thread.broker.queues
    assert api.post("/api/exchanges/amq.default/publish/", {"routing_key": "orm-q", "body": 1})[1]["routed"] == 0


def test_orm_binding_routes(api: Api, runtime_thread: Runtime) -> None:
    exchange = Exchange.objects.create(name="e", type="fanout")
    Binding.objects.create(exchange=exchange, queue=Queue.objects.create(name="q"))
    assert api.post("/api/exchanges/e/publish/", {"body": 1})[1]["routed"] == 1


def test_queue_clean() -> None:
    with pytest.raises(ValidationError) as refused:
        Queue(name="q", arguments={"max_length": -1}).full_clean()
    assert set(refused.value.message_dict) == {"arguments"}
    with pytest.raises(ValidationError) as refused:
        Queue(name="amq.q").full_clean()
    assert set(refused.value.message_dict) == {"name"}
    Queue(name="q", arguments={"message_ttl": 1000, "overflow": "reject-publish"}).full_clean()


def test_exchange_clean_refuses_reserved_names_for_new_rows_only() -> None:
    with pytest.raises(ValidationError) as refused:
        Exchange(name="amq.mine", type="direct").full_clean()
    assert set(refused.value.message_dict) == {"name"}
    builtin = Exchange.objects.create(name="amq.direct", type="direct")
    builtin.full_clean()  # an existing broker row stays editable


def test_exchange_clean_leaves_room_for_a_delayed_exchange_s_holding_queue() -> None:
    with pytest.raises(ValidationError) as refused:
        Exchange(name="d" * 244, type="x-delayed-message", arguments={"x-delayed-type": "direct"}).full_clean()
    assert set(refused.value.message_dict) == {"name"}
    Exchange(name="d" * 243, type="x-delayed-message", arguments={"x-delayed-type": "direct"}).full_clean()


def test_binding_clean() -> None:
    headers = Exchange.objects.create(name="h", type="headers")
    queue = Queue.objects.create(name="q")
    with pytest.raises(ValidationError) as refused:
        Binding(exchange=headers, queue=queue, arguments={"x-match": "most"}).full_clean()
    assert set(refused.value.message_dict) == {"arguments"}
    # A row named like the default exchange can only come from outside the API; binding to it is refused.
    default = Exchange.objects.create(name="amq.default", type="direct")
    with pytest.raises(ValidationError) as refused:
        Binding(exchange=default, queue=queue).full_clean()
    assert set(refused.value.message_dict) == {"exchange"}
    Binding.objects.create(exchange=headers, queue=queue, arguments={"a": 1})
    with pytest.raises(ValidationError):
        Binding(exchange=headers, queue=queue, arguments={"a": 1}).full_clean()
    Binding(exchange=headers, queue=queue, arguments={"a": 2}).full_clean()


@pytest.fixture
def admin_client(transactional_db: Any) -> Client:
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.login(username="admin", password="pw")
    return client


def test_admin_pages(admin_client: Client, runtime_thread: Runtime) -> None:
    exchange = Exchange.objects.create(name="e", type="direct")
    queue = Queue.objects.create(name="q")
    binding = Binding.objects.create(exchange=exchange, queue=queue)
    pages = (("exchanges", "exchange", exchange.pk), ("queues", "queue", queue.pk), ("bindings", "binding", binding.pk))
    for app, model, pk in pages:
        for path in (f"/admin/{app}/{model}/", f"/admin/{app}/{model}/add/", f"/admin/{app}/{model}/{pk}/change/"):
            assert admin_client.get(path).status_code == 200, path


def test_admin_refuses_bad_queue_arguments(admin_client: Client, runtime_thread: Runtime) -> None:
    response = admin_client.post(
        "/admin/queues/queue/add/", {"name": "q", "durable": "on", "arguments": '{"max_length": -1}'}
    )
    assert response.status_code == 200  # the form again, with the error
    assert not Queue.objects.exists()
    response = admin_client.post("/admin/queues/queue/add/", {"name": "q", "durable": "on", "arguments": "{}"})
    assert response.status_code == 302
    assert "q" in runtime_thread.broker.queues


def test_admin_refuses_duplicate_binding(admin_client: Client, runtime_thread: Runtime) -> None:
    exchange = Exchange.objects.create(name="e", type="direct")
    queue = Queue.objects.create(name="q")
    form = {"exchange": exchange.pk, "queue": queue.pk, "binding_key": "k", "arguments": "{}"}
    assert admin_client.post("/admin/bindings/binding/add/", form).status_code == 302
    assert admin_client.post("/admin/bindings/binding/add/", form).status_code == 200
    assert Binding.objects.count() == 1


def test_admin_binds_an_exchange_to_an_exchange_and_refuses_two_or_no_destinations(
    admin_client: Client, runtime_thread: Runtime
) -> None:
    source = Exchange.objects.create(name="e", type="direct")
    destination = Exchange.objects.create(name="f", type="fanout")
    queue = Queue.objects.create(name="q")
    form = {"exchange": source.pk, "binding_key": "k", "arguments": "{}"}
    for refused in ({}, {"queue": queue.pk, "destination_exchange": destination.pk}):
        answer = admin_client.post("/admin/bindings/binding/add/", {**form, **refused})
        assert answer.status_code == 200 and "give a queue or a destination exchange" in answer.content.decode()
    assert not Binding.objects.exists()
    assert admin_client.post("/admin/bindings/binding/add/", {**form, "destination_exchange": destination.pk}).status_code == 302
    assert admin_client.post("/admin/bindings/binding/add/", {**form, "destination_exchange": destination.pk}).status_code == 200
    assert str(Binding.objects.get()) == "e -> exchange f [k]"
    assert [b.destination for b in runtime_thread.broker.bindings.values()] == ["f"]


def test_a_saved_queue_or_exchange_cannot_be_renamed_in_the_admin(admin_client: Client, runtime_thread: Runtime) -> None:
    queue = Queue.objects.create(name="orders")
    exchange = Exchange.objects.create(name="events", type="fanout")
    for url in (f"/admin/queues/queue/{queue.pk}/change/", f"/admin/exchanges/exchange/{exchange.pk}/change/"):
        html = admin_client.get(url).content.decode()
        assert 'name="name"' not in html  # shown read-only, not as an input
    assert 'name="name"' in admin_client.get("/admin/queues/queue/add/").content.decode()


def test_a_queue_declared_with_both_spellings_before_may_be_declared_again_as_it_is(api: Api) -> None:
    """Both spellings of one argument are refused in a new declaration; a queue stored so
    by an earlier version is declared again as it is, as its clients do at start-up."""
    both = {"message_ttl": 1000, "x-message-ttl": 2000}
    status, body = api.post("/api/queues/", {"name": "new", "arguments": both})
    assert (status, body["error"]["code"]) == (400, "invalid")
    Queue.objects.create(name="old", arguments=both)
    assert api.post("/api/queues/", {"name": "old", "arguments": both})[0] in (200, 201)


def test_the_admin_deletes_none_of_the_broker_s_exchanges(admin_client: Client, runtime_thread: Runtime) -> None:
    """Deleted from the admin, `amq.topic` could not be made again: the API and the admin's
    form refuse `amq.` names."""
    builtin, _ = Exchange.objects.get_or_create(name="amq.topic", defaults={"type": "topic"})
    mine = Exchange.objects.create(name="mine", type="direct")
    url = f"/admin/exchanges/exchange/{builtin.pk}/delete/"
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    selected = {"action": "delete_selected", "_selected_action": [builtin.pk, mine.pk], "post": "yes"}
    assert admin_client.post("/admin/exchanges/exchange/", selected).status_code == 403
    assert set(Exchange.objects.values_list("name", flat=True)) == {"amq.topic", "mine"}
    assert {"amq.topic", "mine"} <= set(runtime_thread.broker.routing.exchanges)
    assert admin_client.post(f"/admin/exchanges/exchange/{mine.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Exchange.objects.filter(name="mine").exists()


def test_the_admin_deletes_no_holding_queue_alone(admin_client: Client, runtime_thread: Runtime) -> None:
    """As the API: deleted alone, a delayed exchange's waiting messages were lost, and it
    routed every later one at once."""
    Exchange.objects.create(name="later", type="x-delayed-message", arguments={"x-delayed-type": "direct"})
    holding = Queue.objects.get(name="amq.delayed.later")
    url = f"/admin/queues/queue/{holding.pk}/delete/"
    assert admin_client.get(url).status_code == 403
    selected = {"action": "delete_selected", "_selected_action": [holding.pk], "post": "yes"}
    assert admin_client.post("/admin/queues/queue/", selected).status_code == 403
    assert Queue.objects.filter(name="amq.delayed.later").exists()


def test_an_exchange_s_type_is_fixed_once_saved_as_in_the_api(admin_client: Client, runtime_thread: Runtime) -> None:
    """The admin changed the stored type while the API refuses it (`precondition_failed`)
    and the router may not follow: database and router then disagreed."""
    exchange = Exchange.objects.create(name="ex", type="direct")
    url = f"/admin/exchanges/exchange/{exchange.pk}/change/"
    assert 'name="type"' not in admin_client.get(url).content.decode()  # shown read-only
    answer = admin_client.post(url, {"type": "headers", "durable": "on", "arguments": "{}"})
    assert answer.status_code == 302
    assert Exchange.objects.get(name="ex").type == "direct"
    assert runtime_thread.broker.routing.exchanges["ex"].spec.type == "direct"
    exchange.type = "fanout"
    with pytest.raises(ValidationError) as refused:
        exchange.full_clean()  # a form of its own, or a script, is refused as well
    assert set(refused.value.message_dict) == {"type"}
    assert 'name="type"' in admin_client.get("/admin/exchanges/exchange/add/").content.decode()


def test_the_admin_binds_nothing_to_a_delayed_exchange_s_holding_queue(
    admin_client: Client, runtime_thread: Runtime
) -> None:
    """The API refuses it (only the delayed exchange fills that queue); the admin took it."""
    Exchange.objects.create(name="later", type="x-delayed-message", arguments={"x-delayed-type": "direct"})
    source = Exchange.objects.create(name="ex", type="direct")
    holding = Queue.objects.get(name="amq.delayed.later")
    answer = admin_client.post(
        "/admin/bindings/binding/add/", {"exchange": source.pk, "queue": holding.pk, "binding_key": "k", "arguments": "{}"}
    )
    assert answer.status_code == 200
    assert "holds a delayed exchange&#x27;s messages: it takes no binding" in answer.content.decode()
    assert not Binding.objects.exists() and not runtime_thread.broker.bindings


def test_the_admin_adds_no_queue_or_binding_past_the_limits(
    admin_client: Client, runtime_thread: Runtime, settings: Any
) -> None:
    """MAX_QUEUES and MAX_BINDINGS held for the API only: the admin went past them."""
    settings.MAX_QUEUES, settings.MAX_BINDINGS = 2, 1
    exchange = Exchange.objects.create(name="e", type="direct")
    first, second = Queue.objects.create(name="q1"), Queue.objects.create(name="q2")
    answer = admin_client.post("/admin/queues/queue/add/", {"name": "q3", "durable": "on", "arguments": "{}"})
    assert answer.status_code == 200 and "its limit (MAX_QUEUES=2)" in answer.content.decode()
    assert not Queue.objects.filter(name="q3").exists()
    change = admin_client.post(f"/admin/queues/queue/{first.pk}/change/", {"durable": "on", "arguments": "{}"})
    assert change.status_code == 302  # an existing queue stays editable

    form = {"exchange": exchange.pk, "binding_key": "k", "arguments": "{}"}
    assert admin_client.post("/admin/bindings/binding/add/", {**form, "queue": first.pk}).status_code == 302
    answer = admin_client.post("/admin/bindings/binding/add/", {**form, "queue": second.pk})
    assert answer.status_code == 200 and "its limit (MAX_BINDINGS=1)" in answer.content.decode()
    assert Binding.objects.count() == 1 and len(runtime_thread.broker.bindings) == 1


def test_the_admin_changes_no_holding_queue_and_no_queue_s_durability(admin_client: Client, runtime_thread: Runtime) -> None:
    """Saved with an x-max-length of 0, a delayed exchange's holding queue dropped the messages
    waiting there; unticked durable, it (or any queue: the API refuses that change,
    precondition_failed) was deleted at the next start with its stored messages."""
    Exchange.objects.create(name="later", type="x-delayed-message", arguments={"x-delayed-type": "direct"})
    holding = Queue.objects.get(name="amq.delayed.later")
    orders = Queue.objects.create(name="orders")
    url = f"/admin/queues/queue/{holding.pk}/change/"
    html = admin_client.get(url).content.decode()
    assert not any(f'name="{field}"' in html for field in ("durable", "auto_delete", "arguments"))  # shown only
    admin_client.post(url, {"auto_delete": "on", "arguments": '{"x-max-length": 0}'})  # durable unticked
    admin_client.post(f"/admin/queues/queue/{orders.pk}/change/", {"arguments": "{}"})
    assert Queue.objects.filter(name="amq.delayed.later").values_list("durable", "auto_delete", "arguments").get() \
        == (True, False, {})
    assert Queue.objects.get(name="orders").durable
    for name in ("amq.delayed.later", "orders"):
        spec = runtime_thread.broker.queues[name].spec
        assert (spec.durable, spec.auto_delete, dict(spec.arguments)) == (True, False, {})
    assert 'name="durable"' in admin_client.get("/admin/queues/queue/add/").content.decode()

    # A form of its own, or a script, is refused as well.
    holding.arguments = {"x-max-length": 0}
    with pytest.raises(ValidationError) as refused:
        holding.full_clean()
    assert "holds a delayed exchange's messages" in str(refused.value)
    orders.durable = False
    with pytest.raises(ValidationError) as refused:
        orders.full_clean()
    assert refused.value.message_dict == {"durable": ["queue 'orders' is durable: delete it and declare it anew"]}
    orders.durable, orders.arguments = True, {"x-max-length": 5}
    orders.full_clean()  # a queue's arguments stay the admin's to change


def test_a_delayed_exchange_s_x_delayed_type_is_fixed_once_saved(admin_client: Client, runtime_thread: Runtime) -> None:
    """Changed in the admin, the router refused the new x-delayed-type and the row kept it:
    the router routed as `direct`, the database (and the next start) as `headers`."""
    exchange = Exchange.objects.create(name="later", type="x-delayed-message", arguments={"x-delayed-type": "direct"})
    url = f"/admin/exchanges/exchange/{exchange.pk}/change/"
    for arguments in ('{"x-delayed-type": "headers"}', "{}"):
        answer = admin_client.post(url, {"durable": "on", "arguments": arguments})
        assert answer.status_code == 200  # the form again, with the error
        assert "exchange &#x27;later&#x27; routes as x-delayed-type &#x27;direct&#x27;" in answer.content.decode()
    assert Exchange.objects.get(name="later").arguments == {"x-delayed-type": "direct"}
    assert runtime_thread.broker.routing.exchanges["later"].spec.arguments == {"x-delayed-type": "direct"}
    answer = admin_client.post(url, {"durable": "on", "arguments": '{"x-delayed-type": "direct", "alternate-exchange": "amq.direct"}'})
    assert answer.status_code == 302  # its other arguments stay the admin's to change
    assert Exchange.objects.get(name="later").arguments["alternate-exchange"] == "amq.direct"


def test_the_admin_takes_an_emptied_arguments_box_as_no_arguments(admin_client: Client, runtime_thread: Runtime) -> None:
    """An emptied box, or `null`, was a 500 (NOT NULL constraint failed) on save."""
    source = Exchange.objects.create(name="source", type="direct")
    for number, blank in enumerate(("", "null")):
        forms = (
            ("/admin/queues/queue/add/", {"name": f"q{number}", "durable": "on", "arguments": blank}),
            ("/admin/exchanges/exchange/add/", {"name": f"x{number}", "type": "direct", "durable": "on", "arguments": blank}),
        )
        for url, form in forms:
            assert admin_client.post(url, form).status_code == 302, (url, blank)
        queue = Queue.objects.get(name=f"q{number}")
        binding = {"exchange": source.pk, "queue": queue.pk, "binding_key": "k", "arguments": blank}
        assert admin_client.post("/admin/bindings/binding/add/", binding).status_code == 302
        exchange = Exchange.objects.get(name=f"x{number}")
        assert admin_client.post(f"/admin/queues/queue/{queue.pk}/change/", {"arguments": blank}).status_code == 302
        change = {"durable": "on", "arguments": blank}
        assert admin_client.post(f"/admin/exchanges/exchange/{exchange.pk}/change/", change).status_code == 302
    assert [q.arguments for q in Queue.objects.all()] == [{}, {}]
    assert [x.arguments for x in Exchange.objects.filter(name__in=["x0", "x1"])] == [{}, {}]
    assert [(b.arguments, b.arguments_key) for b in Binding.objects.all()] == [({}, "{}"), ({}, "{}")]
    assert {"q0", "q1"} <= set(runtime_thread.broker.queues) and {"x0", "x1"} <= set(runtime_thread.broker.routing.exchanges)
    assert len(runtime_thread.broker.bindings) == 2


def test_the_admin_refuses_in_arguments_what_the_api_s_parser_refuses(
    admin_client: Client, runtime_thread: Runtime
) -> None:
    """An integer past 64 bits was stored (then the router's statistics frame failed, and no
    console was updated until it was removed); NaN, a lone surrogate and deep nesting were 500s."""
    queue = Queue.objects.create(name="q")
    exchange = Exchange.objects.create(name="h", type="headers")
    out_of_range, surrogate, too_deep = "a number is out of range", "a string holds a lone surrogate", \
        "the value is nested more than 512 levels deep"
    refused = {
        "99999999999999999999999": out_of_range,
        "NaN": out_of_range,
        "1e400": out_of_range,
        '"\\ud800"': surrogate,
        "[" * 600 + "]" * 600: too_deep,
        "[" * 5000 + "]" * 5000: too_deep,  # past Python's decoder: RecursionError
    }
    for value, problem in refused.items():
        for_queue, other = f'{{"x-max-length": {value}}}', f'{{"a": {value}}}'
        forms = (
            ("/admin/queues/queue/add/", {"name": "q2", "durable": "on", "arguments": for_queue}),
            ("/admin/exchanges/exchange/add/", {"name": "x2", "type": "direct", "durable": "on", "arguments": other}),
            ("/admin/bindings/binding/add/", {"exchange": exchange.pk, "queue": queue.pk, "arguments": other}),
            (f"/admin/queues/queue/{queue.pk}/change/", {"durable": "on", "arguments": for_queue}),
        )
        for url, form in forms:
            answer = admin_client.post(url, form)
            assert answer.status_code == 200, (url, value[:30])  # the form again, with the error
            assert problem in answer.content.decode(), (url, value[:30])
    assert list(Queue.objects.values_list("name", "arguments")) == [("q", {})]
    assert not Exchange.objects.filter(name="x2").exists() and not Binding.objects.exists()
    assert set(runtime_thread.broker.queues) == {"q"}

    deep: Any = []
    for _ in range(600):
        deep = [deep]
    for wrong, problem in ((10**23, out_of_range), (float("nan"), out_of_range), ("\ud800", surrogate), (deep, too_deep)):
        for row in (Queue(name="q3", arguments={"x-max-length": wrong}),
                    Exchange(name="x3", type="direct", arguments={"a": wrong}),
                    Binding(exchange=exchange, queue=queue, arguments={"a": wrong})):
            with pytest.raises(ValidationError) as refusal:
                row.full_clean()  # a form of its own, or a script, is refused as well
            assert problem in refusal.value.message_dict["arguments"][0]
