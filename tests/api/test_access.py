"""Authentication and permissions over HTTP: the API, the original service's calls, tokens.

Every rule of access/rules.py both ways, with real users and tokens: allowed,
and refused with 403 `forbidden` changing nothing. Anonymous clients are
refused (401 `unauthorized`) only while BROKER_ALLOW_ANONYMOUS is off.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from access.models import ApiToken, hash_token
from bindings.models import Binding
from broker.protocol.publish import PublishRequest
from broker.router.calls import on_loop
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
from queues.models import Queue
from tests.access.helpers import grant_group, make_user

from .conftest import Api, error_code

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def no_anonymous(settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False  # pytest-django restores it


@pytest.fixture
def anonymous(settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = True


def client_of(token: str) -> Api:
    api = Api()
    api.client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


def refused(answer: tuple[int, Any], *words: str) -> None:
    status, body = answer
    assert (status, body["error"]["code"]) == (403, "forbidden"), body
    for word in words:
        assert word in body["error"]["message"]


def ready(runtime: Runtime, queue: str) -> int:
    return runtime.broker.queue_counts(queue).messages_ready  # type: ignore[union-attr]


def put_message(runtime: Runtime, queue: str) -> None:
    on_loop(runtime.loop, runtime.publish, PublishRequest("", queue, "1", {}, False, None))


# -- authentication ------------------------------------------------------------


def test_without_credentials_the_api_is_401_when_anonymous_is_off(api: Api, no_anonymous: None) -> None:
    response = api.client.post("/api/queues/", {"name": "q"}, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")
    assert response["WWW-Authenticate"] == "Bearer"
    assert error_code(api.get("/api/queues/")) == (401, "unauthorized")
    assert error_code(api.get("/api/exchanges/")) == (401, "unauthorized")
    assert not Queue.objects.exists()


def test_anonymous_clients_may_do_everything_when_allowed(api: Api, anonymous: None, runtime_thread: Runtime) -> None:
    assert api.post("/api/exchanges/", {"name": "x", "type": "fanout"})[0] == 201
    assert api.post("/api/queues/", {"name": "q"})[0] == 201
    assert api.post("/api/bindings/", {"exchange": "x", "queue": "q"})[0] == 201
    assert api.post("/api/exchanges/x/publish/", {"body": 1})[1]["routed"] == 1
    assert api.post("/api/queues/q/get/", {})[0] == 200
    assert api.post("/api/queues/q/purge/")[0] == 200


def test_a_bearer_token_authenticates(no_anonymous: None) -> None:
    _, token = make_user("alice")
    assert client_of(token).get("/api/queues/")[0] == 200


@pytest.mark.parametrize("scheme", ["Token", "token", "TOKEN", "bearer"])
def test_drfs_token_scheme_authenticates_as_bearer_does(no_anonymous: None, scheme: str) -> None:
    _, token = make_user("alice")
    api = Api()
    api.client.credentials(HTTP_AUTHORIZATION=f"{scheme} {token}")
    assert api.get("/api/queues/")[0] == 200
    refused(api.post("/api/queues/", {"name": "q2"}), "user 'alice'")  # authenticated as alice


@pytest.mark.parametrize(
    "header", ["Bearer nope", "Bearer", "Bearer a b", "Token nope", "Token", "Token a b", "token a b"]
)
def test_a_bad_token_is_401_even_when_anonymous_is_allowed(anonymous: None, header: str) -> None:
    api = Api()
    api.client.credentials(HTTP_AUTHORIZATION=header)
    assert error_code(api.get("/api/queues/")) == (401, "unauthorized")


@pytest.mark.parametrize("tokens", ["", " a b"])
def test_a_malformed_token_header_is_refused_as_a_malformed_bearer_one(anonymous: None, tokens: str) -> None:
    def answer(scheme: str) -> Any:
        response = APIClient().get("/api/queues/", HTTP_AUTHORIZATION=scheme + tokens)
        return response.status_code, response["WWW-Authenticate"], response.json()

    assert answer("Token") == answer("Bearer")
    status, www_authenticate, body = answer("Token")
    assert (status, www_authenticate, body["error"]["code"]) == (401, "Bearer", "unauthorized")
    assert body["error"]["message"] == "the Authorization header must be 'Bearer <token>' or 'Token <token>'"


def test_the_handlers_token_may_do_everything_and_a_forged_one_nothing(no_anonymous: None) -> None:
    from access.handler_token import handler_token

    token = handler_token()
    assert client_of(token).post("/api/queues/", {"name": "handled"})[0] == 201
    assert Queue.objects.filter(name="handled").exists()
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert error_code(client_of(forged).post("/api/queues/", {"name": "other"})) == (401, "unauthorized")
    assert not Queue.objects.filter(name="other").exists()


def test_a_handlers_token_lasts_five_minutes(no_anonymous: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from access.handler_token import MAX_AGE_SECONDS, handler_token

    token = handler_token()
    later = time.time() + MAX_AGE_SECONDS + 1
    monkeypatch.setattr("django.core.signing.time.time", lambda: later)
    assert error_code(client_of(token).get("/api/queues/")) == (401, "unauthorized")


def test_an_inactive_users_token_is_refused(no_anonymous: None) -> None:
    user, token = make_user("gone")
    user.is_active = False
    user.save()
    assert error_code(client_of(token).get("/api/queues/")) == (401, "unauthorized")


def test_a_deleted_token_is_refused(no_anonymous: None) -> None:
    _, token = make_user("alice")
    ApiToken.objects.all().delete()
    assert error_code(client_of(token).get("/api/queues/")) == (401, "unauthorized")


def test_a_session_authenticates_the_api(api: Api, no_anonymous: None) -> None:
    user, _ = make_user("alice", configure="q")
    api.client.force_login(user)
    assert api.post("/api/queues/", {"name": "q"})[0] == 201


def test_only_the_tokens_hash_is_stored() -> None:
    user, token = make_user("alice")
    row = ApiToken.objects.get(user=user)
    assert row.key_hash == hash_token(token) and token not in row.key_hash
    assert row.prefix == token[:8]


def test_any_authenticated_user_may_read_everything(no_anonymous: None, runtime_thread: Runtime) -> None:
    Exchange.objects.create(name="x", type="fanout")
    Queue.objects.create(name="q")
    binding = Binding.objects.create(exchange=Exchange.objects.get(name="x"), queue=Queue.objects.get(name="q"))
    _, token = make_user("reader")  # no permission rows at all
    api = client_of(token)
    for path in ("/api/exchanges/", "/api/exchanges/x/", "/api/queues/", "/api/queues/q/", "/api/bindings/"):
        assert api.get(path)[0] == 200, path
    assert api.get(f"/api/bindings/{binding.pk}/")[0] == 200


# -- configure ---------------------------------------------------------------------


def test_declaring_and_deleting_an_exchange_need_configure(no_anonymous: None, runtime_thread: Runtime) -> None:
    _, token = make_user("alice", configure=r"ex\..*")
    api = client_of(token)
    assert api.post("/api/exchanges/", {"name": "ex.a", "type": "topic"})[0] == 201
    refused(api.post("/api/exchanges/", {"name": "other", "type": "topic"}), "user 'alice'", "configure", "'other'")
    assert not Exchange.objects.filter(name="other").exists()
    Exchange.objects.create(name="other", type="topic")
    refused(api.delete("/api/exchanges/other/"), "configure", "exchange 'other'")
    assert Exchange.objects.filter(name="other").exists()
    assert api.delete("/api/exchanges/ex.a/")[0] == 204


def test_declaring_deleting_and_purging_a_queue_need_configure(no_anonymous: None, runtime_thread: Runtime) -> None:
    _, token = make_user("alice", configure=r"q\..*")
    api = client_of(token)
    assert api.post("/api/queues/", {"name": "q.a"})[0] == 201
    refused(api.post("/api/queues/", {"name": "other"}), "configure", "queue 'other'")
    assert not Queue.objects.filter(name="other").exists()
    Queue.objects.create(name="other")
    put_message(runtime_thread, "other")
    refused(api.post("/api/queues/other/purge/"), "configure", "queue 'other'")
    assert ready(runtime_thread, "other") == 1
    refused(api.delete("/api/queues/other/"), "configure")
    assert Queue.objects.filter(name="other").exists()
    put_message(runtime_thread, "q.a")
    assert api.post("/api/queues/q.a/purge/") == (200, {"purged": 1})
    assert api.delete("/api/queues/q.a/")[0] == 204


def test_a_generated_queue_name_is_checked_as_generated(no_anonymous: None, runtime_thread: Runtime) -> None:
    _, allowed = make_user("gen", configure=r"amq\.gen-.*")
    status, body = client_of(allowed).post("/api/queues/", {"name": ""})
    assert status == 201 and body["name"].startswith("amq.gen-")
    _, token = make_user("named", configure=r"q\..*")
    refused(client_of(token).post("/api/queues/", {"name": ""}), "configure", "queue 'amq.gen-")
    assert Queue.objects.count() == 1


# -- bindings: write on the destination, read on the exchange ------------------------


@pytest.fixture
def topology(runtime_thread: Runtime) -> Runtime:
    Exchange.objects.create(name="x", type="direct")
    Queue.objects.create(name="q")
    return runtime_thread


@pytest.mark.parametrize(
    ("configure", "write", "read", "missing"),
    [
        ("", "", "x", "write permission on queue 'q'"),
        ("q", "", "x", "write permission on queue 'q'"),  # configure was enough: not RabbitMQ's rule
        ("", "q", "", "read permission on exchange 'x'"),
    ],
)
def test_creating_a_binding_needs_write_on_the_queue_and_read_on_the_exchange(
    no_anonymous: None, topology: Runtime, configure: str, write: str, read: str, missing: str
) -> None:
    _, token = make_user("half", configure=configure, write=write, read=read)
    refused(client_of(token).post("/api/bindings/", {"exchange": "x", "queue": "q", "binding_key": "k"}), missing)
    assert not Binding.objects.exists()
    _, both = make_user("both", write="q", read="x")  # as RabbitMQ's queue.bind: no configure
    assert client_of(both).post("/api/bindings/", {"exchange": "x", "queue": "q", "binding_key": "k"})[0] == 201


def test_a_binding_is_no_way_to_publish_where_one_may_not_write(no_anonymous: None, runtime_thread: Runtime) -> None:
    """Binding an exchange one may write to into one one may not would route one's
    messages there: as RabbitMQ, the binding needs write on its destination."""
    Exchange.objects.create(name="mine", type="fanout")
    Exchange.objects.create(name="secret", type="fanout")
    Queue.objects.create(name="secretq")
    Binding.objects.create(exchange=Exchange.objects.get(name="secret"), queue=Queue.objects.get(name="secretq"))
    _, token = make_user("u", configure="secret", write="mine", read="mine")
    api = client_of(token)
    refused(api.post("/api/exchanges/secret/publish/", {"body": 1}), "write permission on exchange 'secret'")
    refused(
        api.post("/api/bindings/", {"exchange": "mine", "destination_exchange": "secret"}),
        "write permission on exchange 'secret'",
    )
    assert api.post("/api/exchanges/mine/publish/", {"body": 2})[1]["routed"] == 0
    assert ready(runtime_thread, "secretq") == 0


def test_a_dead_letter_exchange_needs_write_on_it_and_read_on_the_queue(
    no_anonymous: None, runtime_thread: Runtime
) -> None:
    """As RabbitMQ: the queue publishes there. Without the check, a TTL of 0 let a user
    publish through an exchange they may not write to, into anyone's queue."""
    _, token = make_user("alice", configure=r"alice\..*", write=r"alice\..*", read=r"alice\..*")
    api, path = client_of(token), "/api/queues/"
    forged = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "payments", "x-message-ttl": 0}
    refused(api.post(path, {"name": "alice.q", "arguments": forged}), "write permission on exchange 'amq.default'")
    refused(
        api.post(path, {"name": "alice.q", "arguments": {"dead_letter_exchange": "amq.direct"}}),
        "write permission on exchange 'amq.direct'",
    )
    assert not Queue.objects.filter(name="alice.q").exists()
    _, writer = make_user("bob", configure=r"bob\..*", write=r"bob\..*")  # no read on the queue
    refused(
        client_of(writer).post(path, {"name": "bob.q", "arguments": {"x-dead-letter-exchange": "bob.dlx"}}),
        "read permission on queue 'bob.q'",
    )
    assert api.post(path, {"name": "alice.q", "arguments": {"x-dead-letter-exchange": "alice.dlx"}})[0] == 201


def test_an_alternate_exchange_needs_write_on_it_and_read_on_the_exchange(
    no_anonymous: None, runtime_thread: Runtime
) -> None:
    _, token = make_user("alice", configure=r"alice\..*", write=r"alice\..*", read=r"alice\..*")
    api = client_of(token)
    declared = {"name": "alice.y", "type": "direct", "arguments": {"alternate-exchange": "amq.direct"}}
    refused(api.post("/api/exchanges/", declared), "write permission on exchange 'amq.direct'")
    assert not Exchange.objects.filter(name="alice.y").exists()
    declared["arguments"] = {"alternate-exchange": "alice.alt"}
    assert api.post("/api/exchanges/", declared)[0] == 201


def test_binding_an_exchange_to_an_exchange_needs_write_on_the_destination_and_read_on_the_source(
    no_anonymous: None, topology: Runtime
) -> None:
    Exchange.objects.create(name="y", type="fanout")
    binding = {"exchange": "x", "destination_exchange": "y"}
    _, token = make_user("half", configure="y", write="q", read="x")
    refused(client_of(token).post("/api/bindings/", binding), "write permission on exchange 'y'")
    _, token = make_user("other-half", write="y", read="")
    refused(client_of(token).post("/api/bindings/", binding), "read permission on exchange 'x'")
    assert not Binding.objects.exists()
    _, both = make_user("both", write="y", read="x")
    status, body = client_of(both).post("/api/bindings/", binding)
    assert status == 201
    refused(client_of(token).delete(f"/api/bindings/{body['id']}/"), "read permission on exchange 'x'")
    _, configurer = make_user("configurer", configure="y", read="x")
    refused(client_of(configurer).delete(f"/api/bindings/{body['id']}/"), "write permission on exchange 'y'")
    assert client_of(both).delete(f"/api/bindings/{body['id']}/")[0] == 204
    # Two destinations are invalid whoever asks, before any permission is looked at.
    status, answer = client_of(token).post("/api/bindings/", {**binding, "queue": "q"})
    assert (status, answer["error"]["code"]) == (400, "invalid")


@pytest.mark.parametrize(("configure", "write", "read"), [("", "", "x"), ("q", "", "x"), ("", "q", "")])
def test_deleting_a_binding_needs_the_same(
    no_anonymous: None, topology: Runtime, configure: str, write: str, read: str
) -> None:
    binding = Binding.objects.create(exchange=Exchange.objects.get(name="x"), queue=Queue.objects.get(name="q"))
    _, token = make_user("half", configure=configure, write=write, read=read)
    refused(client_of(token).delete(f"/api/bindings/{binding.pk}/"))
    assert Binding.objects.filter(pk=binding.pk).exists()
    _, both = make_user("both", write="q", read="x")
    assert client_of(both).delete(f"/api/bindings/{binding.pk}/")[0] == 204


# -- write and read --------------------------------------------------------------------


def test_publishing_needs_write_on_the_exchange(no_anonymous: None, topology: Runtime) -> None:
    Binding.objects.create(exchange=Exchange.objects.get(name="x"), queue=Queue.objects.get(name="q"))
    _, token = make_user("pub", write="x")
    api = client_of(token)
    assert api.post("/api/exchanges/x/publish/", {"body": 1})[1]["routed"] == 1
    refused(api.post("/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": 2}), "exchange 'amq.default'")
    assert ready(topology, "q") == 1


def test_the_default_exchange_is_written_as_amq_default(no_anonymous: None, topology: Runtime) -> None:
    _, token = make_user("pub", write=r"amq\.default")
    api = client_of(token)
    assert api.post("/api/exchanges/amq.default/publish/", {"routing_key": "q", "body": 1})[1]["routed"] == 1
    refused(api.post("/api/exchanges/x/publish/", {"body": 2}), "write", "exchange 'x'")


def test_getting_from_a_queue_needs_read_on_it(no_anonymous: None, topology: Runtime) -> None:
    Queue.objects.create(name="other")
    put_message(topology, "q")
    put_message(topology, "other")
    _, token = make_user("reader", read="q")
    api = client_of(token)
    refused(api.post("/api/queues/other/get/", {}), "read permission on queue 'other'")
    assert ready(topology, "other") == 1
    status, messages = api.post("/api/queues/q/get/", {})
    assert status == 200 and len(messages) == 1


# -- who has which rights ------------------------------------------------------------------


def test_superusers_may_do_everything(no_anonymous: None, topology: Runtime) -> None:
    _, token = make_user("root", superuser=True)
    api = client_of(token)
    assert api.post("/api/queues/", {"name": "anything"})[0] == 201
    assert api.post("/api/bindings/", {"exchange": "x", "queue": "q"})[0] == 201
    assert api.post("/api/exchanges/x/publish/", {"body": 1})[1]["routed"] == 1


def test_a_users_rights_are_its_own_rows_and_its_groups(no_anonymous: None, topology: Runtime) -> None:
    grant_group("ops", configure=r"ops\..*")
    grant_group("other")  # a group with nothing adds nothing
    _, token = make_user("alice", configure=r"mine\..*", groups=("ops", "other"))
    api = client_of(token)
    assert api.post("/api/queues/", {"name": "mine.a"})[0] == 201
    assert api.post("/api/queues/", {"name": "ops.a"})[0] == 201
    refused(api.post("/api/queues/", {"name": "theirs"}))
    _, outsider = make_user("bob", configure=r"mine\..*")
    refused(client_of(outsider).post("/api/queues/", {"name": "ops.b"}))


# -- the original service's calls --------------------------------------------------------


def legacy(
    token: str | None, path: str, data: Any, session_of: Any = None, *, scheme: str = "Bearer"
) -> tuple[int, Any]:
    client = Client()
    if session_of is not None:
        client.force_login(session_of)
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"} if token else {}
    response = client.post(path, json.dumps(data), content_type="application/json", **headers)
    return response.status_code, response.json()


def test_the_original_calls_need_a_token_when_anonymous_is_off(no_anonymous: None, topology: Runtime) -> None:
    user, token = make_user("root", superuser=True)
    assert error_code(legacy(None, "/queues", {"name": "q2"})) == (401, "unauthorized")
    # No CSRF on these calls: a session cookie is no credential here.
    assert error_code(legacy(None, "/queues", {"name": "q2"}, session_of=user)) == (401, "unauthorized")
    assert not Queue.objects.filter(name="q2").exists()
    assert legacy(token, "/queues", {"name": "q2"})[0] == 200
    assert legacy(token, "/queues", {"name": "q3"}, scheme="Token")[0] == 200
    assert Client().get("/ping").json() == {"message": "PONG"}  # open to all


@pytest.mark.parametrize(
    ("header", "anonymous_allowed"), [(None, False), ("Bearer nope", True), ("Token a b", True), ("Bearer", False)]
)
def test_the_original_calls_401_names_the_bearer_scheme(
    settings: Any, topology: Runtime, header: str | None, anonymous_allowed: bool
) -> None:
    """docs/protocol.md, "Errors": every 401 carries `WWW-Authenticate: Bearer`, as the API's."""
    settings.BROKER_ALLOW_ANONYMOUS = anonymous_allowed
    headers = {"HTTP_AUTHORIZATION": header} if header else {}
    for path, data in (("/queues", {"name": "q2"}), ("/publish", {"exchange_name": "", "key": "q", "payload": 1})):
        response = Client().post(path, json.dumps(data), content_type="application/json", **headers)
        assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")
        assert response["WWW-Authenticate"] == "Bearer"
    assert not Queue.objects.filter(name="q2").exists() and ready(topology, "q") == 0


def test_the_original_publish_over_the_memory_limit_says_when_to_retry(
    anonymous: None, topology: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.runtime.memory.guard", lambda: SimpleNamespace(alarm=True))
    response = Client().post("/publish", json.dumps({"exchange_name": "", "key": "q", "payload": 1}),
                             content_type="application/json")
    assert (response.status_code, response.json()["error"]["code"]) == (503, "resource_limit")
    assert response["Retry-After"] == "1"  # as the API's answer
    assert ready(topology, "q") == 0


def test_the_original_calls_check_the_same_permissions(no_anonymous: None, topology: Runtime) -> None:
    _, none = make_user("none", configure="", write="", read="")
    refused(legacy(none, "/exchanges", {"name": "y", "type": "fanout"}), "configure", "exchange 'y'")
    refused(legacy(none, "/queues", {"name": "q2"}), "configure", "queue 'q2'")
    refused(legacy(none, "/bindings", {"exchange_name": "x", "queue_name": "q", "key": "k"}), "queue 'q'")
    _, configurer = make_user("configurer", configure="q", read="x")  # the API's rule: write on the queue
    refused(legacy(configurer, "/bindings", {"exchange_name": "x", "queue_name": "q"}), "write permission on queue 'q'")
    refused(legacy(none, "/publish", {"exchange_name": "x", "key": "k", "payload": 1}), "write", "exchange 'x'")
    refused(legacy(none, "/publish", {"exchange_name": "", "key": "q", "payload": 1}), "exchange 'amq.default'")
    # null is no name: it reached the default exchange, past its permission check.
    assert error_code(legacy(none, "/publish", {"exchange_name": None, "key": "q", "payload": 1})) == (400, "invalid")
    assert not Exchange.objects.filter(name="y").exists() and not Queue.objects.filter(name="q2").exists()
    assert not Binding.objects.exists() and ready(topology, "q") == 0

    _, all_ = make_user("all", configure=".*", write=".*", read=".*")
    assert legacy(all_, "/exchanges", {"name": "y", "type": "fanout"})[0] == 200
    assert legacy(all_, "/queues", {"name": "q2"})[0] == 200
    assert legacy(all_, "/bindings", {"exchange_name": "x", "queue_name": "q", "key": "k"})[0] == 200
    assert legacy(all_, "/publish", {"exchange_name": "x", "key": "k", "payload": 1})[1]["routed"] == 1
    _, binder = make_user("binder", write="q", read="x")
    assert legacy(binder, "/bindings", {"exchange_name": "x", "queue_name": "q", "key": "k2"})[0] == 200


def test_the_original_calls_stay_open_when_anonymous_is_allowed(anonymous: None, topology: Runtime) -> None:
    assert legacy(None, "/publish", {"exchange_name": "", "key": "q", "payload": 1})[1]["routed"] == 1
    assert error_code(legacy("wrong", "/publish", {"exchange_name": "", "key": "q", "payload": 1})) == (
        401,
        "unauthorized",
    )
    # A malformed Token header is refused as a malformed Bearer one.
    bearer, token = (
        legacy("a b", "/publish", {"exchange_name": "", "key": "q", "payload": 1}, scheme=scheme)
        for scheme in ("Bearer", "Token")
    )
    assert bearer == token and error_code(token) == (401, "unauthorized")
    assert ready(topology, "q") == 1


# -- the web console -----------------------------------------------------------------------


def test_the_console_asks_for_a_login_and_takes_a_session(no_anonymous: None) -> None:
    response = Client().get("/")
    assert (response.status_code, response["Location"]) == (302, "/admin/login/?next=/")
    user, token = make_user("alice")
    # A token is for programs: the page wants the browser's session.
    assert Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/").status_code == 302
    client = Client()
    client.force_login(user)
    assert client.get("/").status_code == 200


def test_a_user_who_is_not_staff_logs_in_at_the_apis_login(no_anonymous: None) -> None:
    make_user("alice")
    client = Client()
    response = client.post("/api/auth/login/", {"username": "alice", "password": "pw", "next": "/"})
    assert (response.status_code, response["Location"]) == (302, "/")
    assert client.get("/").status_code == 200
    assert client.get("/api/queues/").status_code == 200


FOREIGN = "https://evil.example"


def test_another_site_s_page_cannot_change_the_broker_anonymously(anonymous: None, runtime_thread: Runtime) -> None:
    """What a form, or `fetch` in no-cors mode, on any site's page would send to a broker on
    the reader's machine: the browser adds `Origin`, and no credentials are needed."""
    Queue.objects.create(name="work")
    put_message(runtime_thread, "work")
    client = Client(HTTP_ORIGIN=FOREIGN)
    answers = [
        client.post("/api/queues/", {"name": "evil"}),
        client.post("/api/queues/work/purge/"),
        client.delete("/api/queues/work/"),
        client.post("/queues", json.dumps({"name": "evil2"}), content_type="text/plain"),
        client.post("/publish", json.dumps({"exchange_name": "", "key": "work", "payload": 1}), content_type="text/plain"),
    ]
    for answer in answers:
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden")
        assert "ALLOWED_ORIGINS" in answer.json()["error"]["message"]
    assert list(Queue.objects.values_list("name", flat=True)) == ["work"]
    assert ready(runtime_thread, "work") == 1
    assert client.get("/api/queues/").status_code == 200  # reading: the page cannot see the answer


@pytest.mark.parametrize("origin", ["http://localhost:8060", "http://127.0.0.1", "https://app.example.com"])
def test_an_allowed_page_and_programs_still_change_it(
    anonymous: None, runtime_thread: Runtime, settings: Any, origin: str
) -> None:
    settings.ALLOWED_ORIGINS = ["localhost", "127.0.0.1", "https://app.example.com"]
    assert Client(HTTP_ORIGIN=origin).post("/api/queues/", {"name": "a"}).status_code == 201
    assert Client().post("/api/queues/", {"name": "b"}).status_code == 201  # no Origin: a program


def test_a_token_from_another_site_s_page_is_checked_as_usual(anonymous: None, runtime_thread: Runtime) -> None:
    """A page cannot set `Authorization` on a request it sends without CORS, so a token is
    the sender's own."""
    _, token = make_user("alice", configure=".*")
    client = Client(HTTP_ORIGIN=FOREIGN, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.post("/api/queues/", {"name": "a"}).status_code == 201


@pytest.fixture
def anonymous_by_default(settings: Any) -> None:
    """Anonymous access as it is by default: on because the broker listens on loopback."""
    settings.BROKER_ALLOW_ANONYMOUS = True
    settings.BROKER_ALLOW_ANONYMOUS_SET = False


def test_by_default_anonymous_access_is_for_this_machine_s_clients_only(
    anonymous_by_default: None, runtime_thread: Runtime
) -> None:
    """A proxy on this machine that forwards other machines' requests (uvicorn rewrites the
    client's address from its X-Forwarded-For), or another ASGI server listening wider than
    HTTP_HOST, did not close the broker to them: they could do everything."""
    remote = Client(REMOTE_ADDR="203.0.113.9")
    answer = remote.post("/api/queues/", {"name": "q"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
    answer = remote.post("/queues", json.dumps({"name": "q"}), content_type="application/json")
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
    assert remote.get("/api/queues/").status_code == 401
    assert remote.get("/").status_code == 302  # the console asks for a login
    assert not Queue.objects.exists()
    for local in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert Client(REMOTE_ADDR=local).post("/api/queues/", {"name": f"q-{local}"}).status_code == 201
    _, token = make_user("alice", configure=".*")
    assert Client(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION=f"Bearer {token}").post(
        "/api/queues/", {"name": "by-token"}
    ).status_code == 201


@pytest.mark.parametrize(
    "forwarded",
    [
        {"HTTP_X_FORWARDED_FOR": "203.0.113.9"},  # a proxy no one trusts: daphne, a Unix socket
        {"HTTP_X_FORWARDED_FOR": "127.0.0.1, 203.0.113.9"},  # a client's own "127.0.0.1" first
        {"HTTP_FORWARDED": 'for="[2001:db8::7]:4711";proto=https'},
        {"HTTP_FORWARDED": "for=unknown"},
    ],
)
@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", None])
def test_by_default_a_request_a_proxy_forwards_from_elsewhere_must_authenticate(
    anonymous_by_default: None, runtime_thread: Runtime, forwarded: dict[str, str], peer: str | None
) -> None:
    """Whether the server believed the proxy or not (daphne never does, nor uvicorn on a
    Unix socket, nor for a proxy on ::1 with FORWARDED_ALLOW_IPS of 127.0.0.1 alone), the
    proxy names the client it forwards: one of elsewhere is not this machine's."""
    client = Client(**forwarded) if peer is None else Client(REMOTE_ADDR=peer, **forwarded)
    if peer is None:
        client.defaults.pop("REMOTE_ADDR", None)
    answer = client.post("/api/queues/", {"name": "q"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
    assert not Queue.objects.exists()
    here = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="::1", HTTP_FORWARDED="for=127.0.0.1")
    assert here.post("/api/queues/", {"name": "q"}).status_code == 201  # forwarded from this machine


def test_anonymous_access_set_outright_holds_for_every_client(anonymous: None, runtime_thread: Runtime, settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS_SET = True  # BROKER_ALLOW_ANONYMOUS=true in the environment
    assert Client(REMOTE_ADDR="203.0.113.9").post("/api/queues/", {"name": "q"}).status_code == 201
