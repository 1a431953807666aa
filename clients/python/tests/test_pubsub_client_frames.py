"""What the client sends, against a stand-in server: frames the broker could not read are
refused at the call, a frame is sent again exactly as it was first sent, a publish over the
broker's size limit fails instead of closing every connection after it, refusals the broker
may take back are retried, and deliveries the broker has requeued are not handed out."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import FAST_BACKOFF
from websockets.asyncio.server import ServerConnection, serve

from pubsub_client import Backoff, Client, ConnectionFailed, InvalidRequest, TooLarge
from tests.e2e.harness import free_port

Handler = Callable[[ServerConnection], Awaitable[None]]


async def send(connection: ServerConnection, **frame: Any) -> None:
    await connection.send(json.dumps(frame))


async def delivery(connection: ServerConnection, subscription: str, tag: int, body: Any) -> None:
    await send(connection, type="message", subscription=subscription, delivery_tag=tag, exchange="",
               routing_key="q", body=body, message_id=f"m{tag}", headers={})


async def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition did not come true in time")


class Server:
    """A stand-in broker: every frame it receives is kept, with its connection's number."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, dict[str, Any]]] = []
        self.texts: list[str] = []
        self.connections = 0

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [frame for _, frame in self.frames if frame.get("type") == kind]

    def handler(self, answer: Callable[[ServerConnection, int, str, dict[str, Any]], Awaitable[None]]) -> Handler:
        async def handle(connection: ServerConnection) -> None:
            self.connections += 1
            number = self.connections
            async for text in connection:
                assert isinstance(text, str)
                frame = json.loads(text)  # the real broker refuses the whole frame when this fails
                self.texts.append(text)
                self.frames.append((number, frame))
                await answer(connection, number, text, frame)

        return handle


async def answer_all(connection: ServerConnection, number: int, text: str, frame: dict[str, Any]) -> None:
    """What a broker that takes everything answers."""
    kind = frame.get("type")
    if kind == "publish":
        await send(connection, type="confirm", id=frame["id"], message_id=frame["message_id"], routed=1)
    elif kind == "subscribe":
        await send(connection, type="subscribed", id=frame["id"], subscription=frame["id"], queue="q")
    elif kind == "unsubscribe":
        await send(connection, type="unsubscribed", id=frame["id"])
    elif kind == "ping":
        await send(connection, type="pong", id=frame["id"])


# -- frames the broker could not read ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"body": math.nan}, "body"),
        ({"body": {"a": [math.inf]}}, "body"),
        ({"body": 2**64}, "body"),
        ({"body": "\ud800"}, "body"),
        ({"body": {1: "a"}}, "body"),
        ({"body": object()}, "body"),
        ({"body": "b", "headers": {"x": -math.inf}}, "headers"),
        ({"body": "b", "headers": {"x": "\udfff"}}, "headers"),
        ({"body": "b", "routing_key": "\ud800"}, "routing_key"),
    ],
)
async def test_a_publish_the_broker_could_not_read_is_refused_at_the_call(options: dict[str, Any], field: str) -> None:
    """Before, it went out (Python's `json` writes NaN, and lone surrogates); the broker
    refused the whole frame without its id, and the publish waited for ever."""
    server = Server()
    port = free_port()
    async with serve(server.handler(answer_all), "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            body = options.pop("body")
            with pytest.raises(InvalidRequest) as refused:
                await client.publish("x", body, timeout=2, **options)
            assert refused.value.code == "invalid"
            assert field in refused.value.message
            with pytest.raises(InvalidRequest):
                await client.publish_nowait("x", body, timeout=2, **options)
            await client.ping()
    assert server.of_type("publish") == []


async def test_a_subscribe_with_arguments_the_broker_could_not_read_is_refused_at_the_call() -> None:
    server = Server()
    port = free_port()
    async with serve(server.handler(answer_all), "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            with pytest.raises(InvalidRequest, match="arguments"):
                await client.subscribe(exchange="h", arguments={"x-match": math.nan}, timeout=2)
            await client.ping()
    assert server.of_type("subscribe") == []


async def test_a_body_that_is_not_json_published_while_reconnecting_is_refused_and_reconnecting_goes_on() -> None:
    """Before, it was kept unserialized until the reconnect sent it: the `TypeError` ended the
    reconnect task, and the client never connected again."""
    server = Server()

    async def first_drops(connection: ServerConnection, number: int, text: str, frame: dict[str, Any]) -> None:
        if number == 1 and frame.get("type") == "ping":
            await connection.close()
            return
        await answer_all(connection, number, text, frame)

    port = free_port()
    backoff = Backoff(initial=0.5, maximum=0.5, jitter=0)
    async with serve(server.handler(first_drops), "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=backoff) as client:
            with pytest.raises(ConnectionFailed):  # the first connection drops under the ping
                await client.session.ping(timeout=1)
            assert not client.connected  # within the backoff
            with pytest.raises(InvalidRequest):
                await client.publish("x", {"when": object()}, timeout=3)
            await wait_for(lambda: client.connected)
            assert server.connections == 2
            result = await client.publish("x", {"n": 1}, timeout=5)
            assert result.routed == 1
    assert server.connections == 2


async def test_a_publish_is_sent_again_as_it_was_first_sent_whatever_its_caller_did_to_the_body() -> None:
    """The same message_id must carry the same message: before, the re-send serialized the
    caller's body again, with what the caller had changed in it since."""
    server = Server()

    async def drops_the_first_publish(connection: ServerConnection, number: int, text: str,
                                      frame: dict[str, Any]) -> None:
        if number == 1 and frame.get("type") == "publish":
            await asyncio.sleep(0.2)  # the caller changes its body meanwhile
            await connection.close()
            return
        await answer_all(connection, number, text, frame)

    port = free_port()
    async with serve(server.handler(drops_the_first_publish), "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            body = {"items": [1, 2]}
            publishing = asyncio.create_task(client.publish("x", body, message_id="m-1", timeout=5))
            await wait_for(lambda: len(server.of_type("publish")) == 1)
            body["items"].append(3)
            assert (await publishing).message_id == "m-1"
    sent = server.of_type("publish")
    assert [frame["body"] for frame in sent] == [{"items": [1, 2]}, {"items": [1, 2]}]
    assert [frame["message_id"] for frame in sent] == ["m-1", "m-1"]


# -- a publish over the broker's size limit ---------------------------------------------------

LIMIT = 1100  # the stand-in broker's frame limit, in UTF-8 bytes


async def test_a_publish_over_the_size_limit_fails_too_large_and_the_others_are_sent_again() -> None:
    """The broker closes the connection with 1009. Before, the publish was sent again on the
    next connection, which closed too, for ever. The largest in UTF-8 bytes is the one: the
    600 `é` (1,200 bytes) and not the 900 `a`, which has more characters."""
    server = Server()

    async def closes_over_the_limit(connection: ServerConnection, number: int, text: str,
                                    frame: dict[str, Any]) -> None:
        if frame.get("type") == "publish" and len(text.encode()) > LIMIT:
            await connection.close(1009, "message too big")
            return
        if number == 1 and frame.get("type") == "publish":
            return  # no confirm on the first connection: both publishes are waiting
        await answer_all(connection, number, text, frame)

    port = free_port()
    async with serve(server.handler(closes_over_the_limit), "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            small = asyncio.create_task(client.publish("x", "a" * 900, timeout=5))
            await wait_for(lambda: len(server.of_type("publish")) == 1)
            with pytest.raises(TooLarge):
                await client.publish("x", "é" * 600, timeout=5)
            assert (await small).routed == 1
            await client.ping()
    assert server.connections == 2
    assert [len(frame["body"]) for frame in server.of_type("publish")] == [900, 600, 900]


# -- refusals the broker may take back ------------------------------------------------------


@pytest.mark.parametrize("code", ["rate_limited", "unavailable"])
async def test_publish_subscribe_and_ping_refused_for_now_are_sent_again(code: str) -> None:
    """Before, only `unavailable` was: a `rate_limited` publish, subscribe or ping failed."""
    server = Server()
    refused: set[str] = set()

    async def refuses_each_kind_once(connection: ServerConnection, number: int, text: str,
                                     frame: dict[str, Any]) -> None:
        kind = str(frame.get("type"))
        if kind not in refused:
            refused.add(kind)
            await send(connection, type="error", id=frame["id"], code=code, message="later")
            return
        await answer_all(connection, number, text, frame)

    port = free_port()
    async with serve(server.handler(refuses_each_kind_once), "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            assert (await client.publish("x", "b", message_id="m", timeout=5)).message_id == "m"
            assert (await client.subscribe("q", timeout=5)).queue == "q"
            assert await client.session.ping(timeout=5) >= 0
    kinds = [frame["type"] for _, frame in server.frames]
    assert kinds == ["publish", "publish", "subscribe", "subscribe", "ping", "ping"]
    assert server.connections == 1


@pytest.mark.parametrize("code", ["rate_limited", "unavailable"])
async def test_an_unsubscribe_refused_for_now_is_sent_again_and_deliveries_go_on_until_it_is_done(code: str) -> None:
    """Before, the subscription was ended client-side at once and the refusal swallowed: the
    broker went on delivering to it, and an auto-ack subscription's deliveries were lost."""
    server = Server()

    async def refuses_the_first_unsubscribe(connection: ServerConnection, number: int, text: str,
                                            frame: dict[str, Any]) -> None:
        if frame.get("type") == "unsubscribe" and len(server.of_type("unsubscribe")) == 1:
            await delivery(connection, frame["id"], 1, "still subscribed")
            await send(connection, type="error", id=frame["id"], code=code, message="later")
            return
        await answer_all(connection, number, text, frame)

    port = free_port()
    async with serve(server.handler(refuses_the_first_unsubscribe), "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            sub = await client.subscribe("q", ack="auto", timeout=5)
            await sub.cancel()
            received = await sub.next(timeout=1)
            assert received is not None and received.body == "still subscribed"
            assert await sub.next(timeout=1) is None
    assert len(server.of_type("unsubscribe")) == 2


async def test_an_unsubscribe_without_an_answer_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    server = Server()

    async def ignores_the_first_unsubscribe(connection: ServerConnection, number: int, text: str,
                                            frame: dict[str, Any]) -> None:
        if frame.get("type") == "unsubscribe" and len(server.of_type("unsubscribe")) == 1:
            return
        await answer_all(connection, number, text, frame)

    monkeypatch.setattr("pubsub_client.session.UNSUBSCRIBE_TIMEOUT", 0.3, raising=False)
    port = free_port()
    async with serve(server.handler(ignores_the_first_unsubscribe), "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            sub = await client.subscribe("q", timeout=5)
            await asyncio.wait_for(sub.cancel(), 5)
    assert len(server.of_type("unsubscribe")) == 2


# -- deliveries the broker has requeued ------------------------------------------------------


async def test_a_client_ack_delivery_of_a_lost_connection_is_not_handed_out_while_reconnecting() -> None:
    """Before, the connection's number changed only once the next one was open: during the
    backoff, the buffered delivery was handed out though the broker had requeued it."""
    server = Server()

    async def delivers_then_drops(connection: ServerConnection, number: int, text: str,
                                  frame: dict[str, Any]) -> None:
        await answer_all(connection, number, text, frame)
        if number == 1 and frame.get("type") == "subscribe":
            await delivery(connection, frame["id"], 1, "held")
            await connection.close()

    port = free_port()
    backoff = Backoff(initial=1.0, maximum=1.0, jitter=0)
    async with serve(server.handler(delivers_then_drops), "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=backoff) as client:
            sub = await client.subscribe("q", timeout=5)
            await wait_for(lambda: not client.connected)
            assert server.connections == 1  # within the backoff
            assert await sub.next(timeout=0.2) is None


@pytest.mark.parametrize(("ack", "handed_out"), [("client", False), ("auto", True)])
async def test_deliveries_buffered_before_a_cancel(ack: str, handed_out: bool) -> None:
    """Once unsubscribed, the broker has requeued the client-ack deliveries: not handed out.
    Auto-ack ones are the caller's: handed out."""
    server = Server()

    async def delivers_on_subscribe(connection: ServerConnection, number: int, text: str,
                                    frame: dict[str, Any]) -> None:
        await answer_all(connection, number, text, frame)
        if frame.get("type") == "subscribe":
            await delivery(connection, frame["id"], 1, "buffered")

    port = free_port()
    async with serve(server.handler(delivers_on_subscribe), "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            sub = await client.subscribe("q", ack=ack, timeout=5)
            await wait_for(lambda: len(sub._buffer) == 1)
            await sub.cancel()
            received = await sub.next(timeout=0.5)
            assert (received is not None) is handed_out
            assert await sub.next(timeout=0.1) is None
