"""Authentication and permissions over /ws: a token in the Authorization header or
`?token=`, or the session cookie; publish needs write, subscribe needs read.

An unauthenticated client (anonymous clients not allowed, or bad credentials)
gets an `unauthorized` error frame, then the close code 4401.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from broker.runtime.runtime import Runtime
from broker_project.asgi import websocket_application
from subscriptions.consumers import CLOSE_UNAUTHORIZED
from tests.access.helpers import grant_group, make_user, session_key
from tests.ws.conftest import Connect
from tests.ws.helpers import (
    declare_binding,
    declare_exchange,
    declare_queue,
    publish,
    receive,
    request,
    silent,
)

pytestmark = pytest.mark.django_db(transaction=True)

@pytest.fixture
def no_anonymous(settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False


@pytest.fixture
def anonymous(settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = True


user_with = database_sync_to_async(make_user)


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


async def as_user(connect: Connect, **rights: Any) -> WebsocketCommunicator:
    _, token = await user_with("u", **rights)
    return await connect(headers=bearer(token))


async def assert_refused_at_connect(client: WebsocketCommunicator) -> None:
    frame = await receive(client)
    assert (frame["type"], frame["id"], frame["code"]) == ("error", None, "unauthorized")
    closed = await client.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": CLOSE_UNAUTHORIZED}


# -- authentication ----------------------------------------------------------------


async def test_without_credentials_a_client_is_closed_with_4401(connect: Connect, no_anonymous: None) -> None:
    await assert_refused_at_connect(await connect())


async def test_anonymous_clients_may_do_everything_when_allowed(connect: Connect, anonymous: None) -> None:
    await declare_queue("q")
    client = await connect()
    assert (await request(client, {"type": "publish", "id": "p", "routing_key": "q", "body": 1}))["routed"] == 1
    assert (await request(client, {"type": "subscribe", "id": "s", "queue": "q"}))["type"] == "subscribed"


async def test_by_default_anonymous_access_is_for_this_machine_s_clients_only(
    runtime: Runtime, settings: Any
) -> None:
    """On because the broker listens on loopback: not for a client a proxy forwards from
    another machine (uvicorn puts its X-Forwarded-For address in the scope)."""
    settings.BROKER_ALLOW_ANONYMOUS, settings.BROKER_ALLOW_ANONYMOUS_SET = True, False
    remote = WebsocketCommunicator(websocket_application, "/ws")
    remote.scope["client"] = ("203.0.113.9", 50000)
    connected, _ = await remote.connect()
    assert connected
    await assert_refused_at_connect(remote)
    local = WebsocketCommunicator(websocket_application, "/ws")
    local.scope["client"] = ("127.0.0.1", 50001)
    assert (await local.connect())[0]
    assert await request(local, {"type": "ping"}) == {"type": "pong"}
    await local.disconnect()


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/ws?token=nope", []),
        ("/ws?token=", []),
        ("/ws", [(b"authorization", b"Bearer nope")]),
        ("/ws", [(b"authorization", b"Bearer a b")]),
        ("/ws", [(b"authorization", b"Token nope")]),
        ("/ws", [(b"authorization", b"Token a b")]),
    ],
)
async def test_a_bad_token_is_refused_even_when_anonymous_is_allowed(
    connect: Connect, anonymous: None, path: str, headers: list[tuple[bytes, bytes]]
) -> None:
    await assert_refused_at_connect(await connect(path, headers))


async def test_a_bearer_header_authenticates(connect: Connect, no_anonymous: None) -> None:
    await declare_queue("q")
    _, token = await user_with("alice", read="q")
    client = await connect(headers=bearer(token))
    assert (await request(client, {"type": "subscribe", "id": "s", "queue": "q"}))["type"] == "subscribed"


@pytest.mark.parametrize("scheme", ["Token", "token"])
async def test_drfs_token_scheme_authenticates_as_bearer_does(
    connect: Connect, no_anonymous: None, scheme: str
) -> None:
    await declare_queue("q")
    _, token = await user_with("alice", read="q")
    client = await connect(headers=[(b"authorization", f"{scheme} {token}".encode())])
    assert (await request(client, {"type": "subscribe", "id": "s", "queue": "q"}))["type"] == "subscribed"


@pytest.mark.parametrize("tokens", [b"", b" a b"])
async def test_a_malformed_token_header_is_refused_as_a_malformed_bearer_one(
    connect: Connect, anonymous: None, tokens: bytes
) -> None:
    frames: list[dict[str, Any]] = []
    for scheme in (b"Bearer", b"Token"):
        client = await connect(headers=[(b"authorization", scheme + tokens)])
        frames.append(await receive(client))
        assert await client.receive_output(timeout=2) == {"type": "websocket.close", "code": CLOSE_UNAUTHORIZED}
    assert frames[0] == frames[1]
    assert (frames[1]["code"], frames[1]["message"]) == (
        "unauthorized",
        "the Authorization header must be 'Bearer <token>' or 'Token <token>'",
    )


async def test_a_token_query_parameter_authenticates(connect: Connect, no_anonymous: None) -> None:
    await declare_queue("q")
    _, token = await user_with("alice", read="q")
    client = await connect(f"/ws?token={token}")
    assert (await request(client, {"type": "subscribe", "id": "s", "queue": "q"}))["type"] == "subscribed"


async def test_the_session_cookie_authenticates(connect: Connect, no_anonymous: None) -> None:
    await declare_queue("q")

    def logged_in() -> str:
        user, _ = make_user("alice", read="q")
        return session_key(user)

    key = await database_sync_to_async(logged_in)()
    client = await connect(headers=[(b"cookie", f"csrftoken=x; sessionid={key}".encode())])
    assert (await request(client, {"type": "subscribe", "id": "s", "queue": "q"}))["type"] == "subscribed"
    refused = await request(client, {"type": "publish", "id": "p", "routing_key": "q", "body": 1})
    assert (refused["type"], refused["code"]) == ("error", "forbidden")


async def test_a_stale_session_cookie_is_anonymous(connect: Connect, settings: Any) -> None:
    settings.BROKER_ALLOW_ANONYMOUS = False
    await assert_refused_at_connect(await connect(headers=[(b"cookie", b"sessionid=expired")]))
    settings.BROKER_ALLOW_ANONYMOUS = True
    client = await connect(headers=[(b"cookie", b"sessionid=expired")])
    assert await request(client, {"type": "ping", "id": 1}) == {"type": "pong", "id": 1}


# -- publish: write on the exchange ------------------------------------------------------


async def test_publishing_needs_write_on_the_exchange(connect: Connect, runtime: Runtime, no_anonymous: None) -> None:
    await declare_exchange("x", "fanout")
    await declare_queue("q", durable=False)
    await declare_binding("x", "q")
    client = await as_user(connect, write="x")
    assert (await request(client, {"type": "publish", "id": "ok", "exchange": "x", "body": 1}))["routed"] == 1
    refused = await request(client, {"type": "publish", "id": "no", "routing_key": "q", "body": 2})
    assert (refused["type"], refused["id"], refused["code"]) == ("error", "no", "forbidden")
    assert refused["message"] == "user 'u' has no write permission on exchange 'amq.default'"
    # Without an id a refusal still gets an error: the publish failed (docs/protocol.md).
    await client.send_json_to({"type": "publish", "exchange": "amq.default", "routing_key": "q", "body": 3})
    silent_refusal = await receive(client)
    assert (silent_refusal["id"], silent_refusal["code"]) == (None, "forbidden")
    assert runtime.broker.queue_counts("q").messages_ready == 1  # type: ignore[union-attr]


async def test_the_default_exchange_is_written_as_amq_default(connect: Connect, runtime: Runtime, no_anonymous: None) -> None:
    await declare_queue("q", durable=False)
    client = await as_user(connect, write=r"amq\.default")
    assert (await request(client, {"type": "publish", "id": 1, "routing_key": "q", "body": 1}))["routed"] == 1
    refused = await request(client, {"type": "publish", "id": 2, "exchange": "other", "body": 1})
    assert refused["code"] == "forbidden"


# -- subscribe: read on the queue or the exchange ------------------------------------------


async def test_subscribing_to_a_queue_needs_read_on_it(connect: Connect, runtime: Runtime, no_anonymous: None) -> None:
    await declare_queue("mine")
    await declare_queue("theirs")
    await publish(runtime, "", "theirs", "secret")
    client = await as_user(connect, read="mine")
    refused = await request(client, {"type": "subscribe", "id": "s1", "queue": "theirs"})
    assert (refused["id"], refused["code"]) == ("s1", "forbidden")
    assert "read permission on queue 'theirs'" in refused["message"]
    await client.send_json_to({"type": "SUBSCRIBE", "payload": {"queue_name": "theirs"}})  # the original frame too
    assert (await receive(client))["code"] == "forbidden"
    assert await silent(client)  # nothing delivered
    assert runtime.broker.queue_counts("theirs").consumers == 0  # type: ignore[union-attr]
    assert (await request(client, {"type": "subscribe", "id": "s2", "queue": "mine"}))["type"] == "subscribed"


async def test_subscribing_to_an_exchange_needs_read_on_it(connect: Connect, runtime: Runtime, no_anonymous: None) -> None:
    await declare_exchange("news", "topic")
    await declare_exchange("secrets", "topic")
    before = set(runtime.broker.queues)
    client = await as_user(connect, read="news")
    refused = await request(client, {"type": "subscribe", "id": "s1", "exchange": "secrets", "binding_key": "#"})
    assert (refused["code"], refused["message"]) == ("forbidden", "user 'u' has no read permission on exchange 'secrets'")
    assert set(runtime.broker.queues) == before  # no private queue was made
    reply = await request(client, {"type": "subscribe", "id": "s2", "exchange": "news", "binding_key": "#"})
    assert reply["type"] == "subscribed" and reply["queue"].startswith("amq.gen-")


async def test_frames_on_the_connection_itself_need_no_permission(connect: Connect, no_anonymous: None) -> None:
    client = await as_user(connect, configure="", write="", read="")
    assert await request(client, {"type": "ping", "id": "p"}) == {"type": "pong", "id": "p"}
    assert (await request(client, {"type": "watch", "id": "w"}))["type"] == "watching"


# -- who has which rights ---------------------------------------------------------------------


async def test_superusers_may_do_everything(connect: Connect, no_anonymous: None) -> None:
    await declare_queue("q")
    client = await as_user(connect, superuser=True)
    assert (await request(client, {"type": "publish", "id": 1, "routing_key": "q", "body": 1}))["routed"] == 1
    assert (await request(client, {"type": "subscribe", "id": "s", "queue": "q"}))["type"] == "subscribed"


async def test_group_rights_add_to_the_users_own(connect: Connect, no_anonymous: None) -> None:
    await declare_queue("mine")
    await declare_queue("team")
    await declare_queue("other")
    await database_sync_to_async(grant_group)("team", read="team")
    client = await as_user(connect, read="mine", groups=("team",))
    for queue in ("mine", "team"):
        assert (await request(client, {"type": "subscribe", "id": queue, "queue": queue}))["type"] == "subscribed"
    assert (await request(client, {"type": "subscribe", "id": "o", "queue": "other"}))["code"] == "forbidden"


# -- connections per user --------------------------------------------------------------


async def test_connections_per_user_are_limited(connect: Connect, settings: Any, no_anonymous: None) -> None:
    settings.MAX_CONNECTIONS_PER_USER = 2
    _, alice = await user_with("alice", read=".*")
    _, bob = await user_with("bob", read=".*")
    first, second = await connect(headers=bearer(alice)), await connect(headers=bearer(alice))
    third = await connect(headers=bearer(alice))  # accepted, so the client can read the code
    closed = await third.receive_output(timeout=2)
    assert (closed["type"], closed["code"], closed["reason"]) == ("websocket.close", 1013, "too_many_connections")
    other = await connect(headers=bearer(bob))  # another user has a count of its own
    assert await request(other, {"type": "ping", "id": 1}) == {"type": "pong", "id": 1}
    await first.disconnect()
    again = await connect(headers=bearer(alice))  # a closed connection frees its place
    assert await request(again, {"type": "ping", "id": 2}) == {"type": "pong", "id": 2}
    assert await request(second, {"type": "ping", "id": 3}) == {"type": "pong", "id": 3}


async def test_a_connection_the_server_closes_frees_its_place_at_once(
    connect: Connect, settings: Any, no_anonymous: None
) -> None:
    settings.MAX_CONNECTIONS_PER_USER = 1
    _, alice = await user_with("alice", read=".*")
    first = await connect(headers=bearer(alice))
    await first.send_to(text_data="x" * (settings.MAX_MESSAGE_BYTES + 70 * 1024))  # over the frame limit
    closed = await first.receive_output(timeout=2)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1009)
    # The client has not acknowledged the close yet: its place is free all the same.
    again = await connect(headers=bearer(alice))
    assert await request(again, {"type": "ping", "id": 1}) == {"type": "pong", "id": 1}
