"""The client's session against a stand-in server: what happens while it restores a lost
connection, and when it is closed at awkward moments."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import pytest
from conftest import FAST_BACKOFF
from websockets.asyncio.server import ServerConnection, serve

from pubsub_client import (
    BrokerError,
    Client,
    ClientClosed,
    ConnectionFailed,
    Event,
    EventKind,
    RequestTimeout,
    SyncClient,
)
from pubsub_client.models import AckMode
from pubsub_client.session import Session
from pubsub_client.subscription import Subscription
from tests.e2e.harness import free_port


async def subscribes(connection: ServerConnection) -> AsyncIterator[dict[str, Any]]:
    """The subscribe frames a client sends to the stand-in server, as they come."""
    async for text in connection:
        frame = json.loads(text)
        if frame.get("type") == "subscribe":
            yield frame


async def send_message(connection: ServerConnection, subscription: str) -> None:
    """One client-acknowledged delivery, tag 1, to that subscription."""
    await connection.send(json.dumps({"type": "message", "subscription": subscription, "delivery_tag": 1,
                                      "exchange": "", "routing_key": "a", "body": "held",
                                      "message_id": "m1", "headers": {}}))


async def answer_subscribe(connection: ServerConnection, frame: dict[str, Any]) -> None:
    await connection.send(json.dumps({"type": "subscribed", "id": frame["id"],
                                      "subscription": frame["id"], "queue": frame["queue"]}))


async def test_a_subscribe_made_while_a_connection_is_restored_is_sent_on_it() -> None:
    """The first connection drops after subscribing "a"; the second answers its
    resubscription late, and a subscribe made meanwhile must still reach it."""
    connections = 0
    subscribed: list[tuple[int, str]] = []

    async def handler(connection: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        number = connections
        async for frame in subscribes(connection):
            subscribed.append((number, frame["queue"]))
            if number == 2 and frame["queue"] == "a":
                await asyncio.sleep(0.5)  # the restore waits for this answer
            await answer_subscribe(connection, frame)
            if number == 1:
                await connection.close()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            await client.subscribe("a")
            for _ in range(100):
                if connections == 2:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # the restore is under way, waiting for "a"'s answer
            await client.subscribe("b", timeout=5)
    assert (2, "b") in subscribed


async def test_a_client_closed_while_it_connects_does_not_connect() -> None:
    async def handler(connection: ServerConnection) -> None:
        async for _ in connection:
            pass

    async def slow_handshake(connection: ServerConnection, request: Any) -> None:
        await asyncio.sleep(0.3)

    port = free_port()
    async with serve(handler, "127.0.0.1", port, process_request=slow_handshake):
        client = Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF)
        opening = asyncio.create_task(client.open())
        await asyncio.sleep(0.1)
        await client.close()
        try:
            await opening
        except ClientClosed:
            pass
        assert not client.connected


async def test_a_ping_without_an_answer_raises_the_package_s_own_timeout() -> None:
    async def handler(connection: ServerConnection) -> None:
        async for _ in connection:
            pass  # never answers

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            try:
                await client.session.ping(timeout=0.2)
            except RequestTimeout:
                pass
            else:
                raise AssertionError("no timeout")


async def test_a_connection_lost_while_it_is_restored_is_replaced_at_once() -> None:
    """The second connection drops while the client waits for its resubscription's answer:
    the client dials again after its backoff, not after the restore's 15 s."""
    opened: list[float] = []

    async def handler(connection: ServerConnection) -> None:
        opened.append(asyncio.get_running_loop().time())
        number = len(opened)
        async for frame in subscribes(connection):
            if number == 2:
                await asyncio.sleep(0.2)
                await connection.close()  # no answer: lost during the restore
                return
            await answer_subscribe(connection, frame)
            if number == 1:
                await connection.close()

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            await client.subscribe("a")
            for _ in range(150):
                if len(opened) >= 3:
                    break
                await asyncio.sleep(0.02)
    assert len(opened) >= 3 and opened[2] - opened[1] < 2.0


def test_a_sync_client_called_from_its_own_on_event_raises_instead_of_waiting_for_ever() -> None:
    errors: list[BaseException] = []
    holder: list[SyncClient] = []

    def on_event(event: Event) -> None:
        if event.kind is EventKind.CONNECTED:
            try:
                holder[0].ping()
            except RuntimeError as error:
                errors.append(error)

    async def handler(connection: ServerConnection) -> None:
        async for _ in connection:
            pass

    port = free_port()

    async def serve_for(seconds: float) -> None:
        async with serve(handler, "127.0.0.1", port):
            await asyncio.sleep(seconds)

    server = threading.Thread(target=asyncio.run, args=(serve_for(3.0),), daemon=True)
    server.start()
    time.sleep(0.3)
    with SyncClient(f"http://127.0.0.1:{port}", on_event=on_event) as client:
        holder.append(client)
        client.open()
        time.sleep(0.2)
    assert errors and "would wait for ever" in str(errors[0])


def test_a_sync_client_that_cannot_be_made_leaves_no_thread() -> None:
    before = threading.active_count()
    with pytest.raises(ValueError):
        SyncClient("ftp://nowhere")
    assert threading.active_count() == before


async def test_a_publish_s_timeout_counts_a_send_the_broker_does_not_read() -> None:
    """A broker that stops reading (its memory alarm) holds the client's sends: the
    publishes still time out, and none is left behind to be sent again later."""
    stop = asyncio.Event()

    async def handler(connection: ServerConnection) -> None:
        await stop.wait()  # reads nothing until the test is over
        async for _ in connection:
            pass

    port = free_port()
    async with serve(handler, "127.0.0.1", port, max_size=None, max_queue=1):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            try:
                big = base64.b64encode(os.urandom(600_000)).decode()  # not compressed away
                started = asyncio.get_running_loop().time()
                async with asyncio.timeout(10):  # they once waited for ever
                    outcomes = await asyncio.gather(
                        *(client.publish("", big, routing_key="q", timeout=1.0) for _ in range(60)),
                        return_exceptions=True,
                    )
                took = asyncio.get_running_loop().time() - started
                assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
                assert took < 5
                assert client.session._publishes == {}
            finally:
                stop.set()


def test_a_sync_publish_nowait_gives_up_waiting_for_a_lost_connection_after_its_timeout() -> None:
    stop = threading.Event()

    async def handler(connection: ServerConnection) -> None:
        async for _ in connection:
            pass

    port = free_port()

    async def serve_until_stopped() -> None:
        async with serve(handler, "127.0.0.1", port):
            await asyncio.to_thread(stop.wait)

    server = threading.Thread(target=asyncio.run, args=(serve_until_stopped(),), daemon=True)
    server.start()
    time.sleep(0.3)
    with SyncClient(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
        client.open()
        stop.set()  # the broker goes away, and does not come back
        server.join(5)
        started = time.monotonic()
        with pytest.raises(ConnectionFailed):
            client.publish_nowait("", "x", routing_key="q", timeout=0.5)
        assert time.monotonic() - started < 3


async def test_a_subscribe_made_while_publishes_are_sent_again_is_sent_too() -> None:
    """After a reconnect the client sends its unconfirmed publishes again; the broker reads
    them slowly, and a subscribe made meanwhile must still be sent before the client says
    it is ready."""
    connections = 0
    subscribed: list[tuple[int, str]] = []

    async def handler(connection: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        number = connections
        publishes = 0
        async for text in connection:
            frame = json.loads(text)
            if frame.get("type") == "publish":
                publishes += 1
                if number == 1 and publishes == 20:
                    await connection.close()  # never confirmed: sent again on the next connection
                continue
            if frame.get("type") != "subscribe":
                continue
            subscribed.append((number, frame["queue"]))
            await answer_subscribe(connection, frame)
            if number == 2 and frame["queue"] == "a":
                await asyncio.sleep(1.0)  # reads nothing for a while: the publishes' sends wait

    port = free_port()
    async with serve(handler, "127.0.0.1", port, max_size=None, max_queue=1):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            await client.subscribe("a")
            body = base64.b64encode(os.urandom(600_000)).decode()
            publishing = [asyncio.create_task(client.publish("", body, routing_key="q")) for _ in range(20)]
            for _ in range(200):
                if connections == 2:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # the restore is sending the publishes again
            await client.subscribe("b", timeout=10)
            assert (2, "b") in subscribed
        await asyncio.gather(*publishing, return_exceptions=True)


async def test_a_publish_nowait_s_timeout_counts_a_send_the_broker_does_not_read() -> None:
    stop = asyncio.Event()

    async def handler(connection: ServerConnection) -> None:
        await stop.wait()
        async for _ in connection:
            pass

    port = free_port()
    async with serve(handler, "127.0.0.1", port, max_size=None, max_queue=1):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            try:
                body = base64.b64encode(os.urandom(600_000)).decode()
                async with asyncio.timeout(10):
                    with pytest.raises(ConnectionFailed):
                        for _ in range(60):
                            await client.publish_nowait("", body, routing_key="q", timeout=1.0)
            finally:
                stop.set()


def test_a_sync_client_closed_from_its_own_on_event_raises_and_stays_usable() -> None:
    errors: list[BaseException] = []
    holder: list[SyncClient] = []

    def on_event(event: Event) -> None:
        if event.kind is EventKind.CONNECTED:
            try:
                holder[0].close()
            except RuntimeError as error:
                errors.append(error)

    async def handler(connection: ServerConnection) -> None:
        async for text in connection:
            frame = json.loads(text)
            if frame.get("type") == "ping":
                await connection.send(json.dumps({"type": "pong", "id": frame["id"]}))

    port = free_port()
    stop = threading.Event()

    async def serve_until_stopped() -> None:
        async with serve(handler, "127.0.0.1", port):
            await asyncio.to_thread(stop.wait)

    server = threading.Thread(target=asyncio.run, args=(serve_until_stopped(),), daemon=True)
    server.start()
    time.sleep(0.3)
    try:
        with SyncClient(f"http://127.0.0.1:{port}", on_event=on_event) as client:
            holder.append(client)
            client.open()
            time.sleep(0.2)
            assert errors and "own thread" in str(errors[0])
            assert client.ping() >= 0  # still there
    finally:
        stop.set()
        server.join(5)


async def test_an_unavailable_subscribe_is_sent_again_alone_on_the_same_connection() -> None:
    """A cluster failing over answers one subscribe `unavailable`: that subscribe is sent
    again, and the connection (with another subscription's unacknowledged message) stays."""
    connections = 0
    frames: list[dict[str, Any]] = []

    async def handler(connection: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        refused = False
        async for text in connection:
            frame = json.loads(text)
            frames.append(frame)
            if frame.get("type") != "subscribe":
                continue
            if frame["queue"] == "b" and not refused:
                refused = True
                await connection.send(json.dumps({"type": "error", "id": frame["id"], "code": "unavailable",
                                                  "message": "failing over"}))
                continue
            await answer_subscribe(connection, frame)
            if frame["queue"] == "a":
                await send_message(connection, frame["id"])

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            a = await client.subscribe("a")
            held = await a.next(timeout=5)
            b = await client.subscribe("b", timeout=5)
            assert b.queue == "b"
            assert held is not None
            await held.ack()
            assert held.settled
            for _ in range(100):
                if any(f.get("type") == "ack" for f in frames):
                    break
                await asyncio.sleep(0.02)
    assert connections == 1
    assert [f["queue"] for f in frames if f.get("type") == "subscribe"] == ["a", "b", "b"]
    assert {"type": "ack", "delivery_tag": 1} in frames


@pytest.mark.parametrize(
    "confirm",
    [{"routed": 1}, {"message_id": "m", "routed": "many"}, {"message_id": "m"}, {"message_id": "m", "routed": 1e999}],
)
async def test_a_confirm_the_client_cannot_read_fails_its_publish_at_once(confirm: dict[str, Any]) -> None:
    """Before, reading it raised inside the reader: the publish was forgotten, its caller
    waited for ever (or its timeout), and the connection was dropped."""
    publishes = 0
    connections = 0

    async def handler(connection: ServerConnection) -> None:
        nonlocal publishes, connections
        connections += 1
        async for text in connection:
            frame = json.loads(text)
            if frame.get("type") == "publish":
                publishes += 1
                await connection.send(json.dumps({"type": "confirm", "id": frame["id"], **confirm}))
            elif frame.get("type") == "ping":
                await connection.send(json.dumps({"type": "pong", "id": frame["id"]}))

    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            started = time.monotonic()
            with pytest.raises(BrokerError, match="cannot read"):
                await client.publish("x", "body", message_id="m", timeout=10)
            assert time.monotonic() - started < 2
            await client.ping()
    assert (publishes, connections) == (1, 1)


async def test_an_ack_that_cannot_be_sent_leaves_the_delivery_unsettled() -> None:
    """A delivery of a connection that is gone: its ack is not sent (the broker gives the
    message back), and `settled` says so instead of claiming it was acknowledged."""
    connections = 0

    async def handler(connection: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        number = connections
        async for frame in subscribes(connection):
            await answer_subscribe(connection, frame)
            if number == 1:
                await send_message(connection, frame["id"])

    port = free_port()
    async with serve(handler, "127.0.0.1", port) as server:
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            sub = await client.subscribe("a")
            delivery = await sub.next(timeout=5)
            assert delivery is not None and not delivery.settled
            for connection in list(server.connections):
                await connection.close()
            for _ in range(250):
                if connections == 2 and client.connected:
                    break
                await asyncio.sleep(0.02)
            assert connections == 2 and client.connected
            await delivery.ack()
            assert not delivery.settled


async def test_an_unavailable_resubscription_is_sent_again_within_the_restore() -> None:
    """The restore of a lost connection waits for its resubscriptions' answers: one answered
    `unavailable` is sent again on that connection, and the restore ends without a third."""
    connections = 0
    seen: list[int] = []

    async def handler(connection: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        number = connections
        async for frame in subscribes(connection):
            seen.append(number)
            if number == 2 and seen.count(2) == 1:
                await connection.send(json.dumps({"type": "error", "id": frame["id"], "code": "unavailable",
                                                  "message": "failing over"}))
                continue
            await answer_subscribe(connection, frame)
            if number == 1:
                await connection.close()

    events: list[Event] = []
    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        async with Client(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF, on_event=events.append) as client:
            await client.subscribe("a")
            started = time.monotonic()
            for _ in range(250):
                if any(e.kind is EventKind.RESUBSCRIBED for e in events):
                    break
                await asyncio.sleep(0.02)
            assert time.monotonic() - started < 4
    assert seen == [1, 2, 2]
    assert connections == 2


async def test_a_retried_subscribe_is_not_sent_again_by_a_restore_under_way() -> None:
    """A subscribe answered `unavailable` on the connection before has its retry due while a
    restore sends the resubscriptions (each send may wait for the socket): one of the two
    sends it, never both."""

    class SlowSocket:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send(self, text: str) -> None:
            await asyncio.sleep(0.002)  # a socket whose buffer is full: the send waits
            self.sent.append(json.loads(text)["id"])

    session = Session("ws://127.0.0.1:1/ws")
    socket = SlowSocket()
    session.generation = 2
    session._ws = socket  # type: ignore[assignment]
    for key in ("s1", "s2"):
        session._subscriptions[key] = Subscription(
            id=key, frame={"type": "subscribe", "id": key}, ack=AckMode.CLIENT, session=session,
            _text=json.dumps({"type": "subscribe", "id": key}),
        )
    session._later(0.001, session._resubscribe, "s2")  # its backoff ends during the first send

    async def answer() -> None:
        while len(socket.sent) < 2:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        for sub in session._subscriptions.values():
            sub._active.set()

    answering = asyncio.ensure_future(answer())
    reader: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await session._restore(socket, reader)  # type: ignore[arg-type]
    await answering
    assert sorted(socket.sent) == ["s1", "s2"]


async def test_a_handshake_refused_for_a_while_is_tried_again_until_it_is_taken() -> None:
    """Only 401 and 403 end the reconnecting (README): a proxy or a broker restarting that
    answers 429, 408, 404 or 502 for a while is tried again; the client gave up on those."""
    refusals = [HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.NOT_FOUND, HTTPStatus.BAD_GATEWAY]
    handshakes = 0
    events: list[Event] = []

    async def refusing(connection: ServerConnection, request: Any) -> Any:
        nonlocal handshakes
        handshakes += 1
        if 2 <= handshakes <= 1 + len(refusals):
            return connection.respond(refusals[handshakes - 2], "not now\n")
        return None

    async def handler(connection: ServerConnection) -> None:
        if handshakes == 1:
            return  # the first connection drops at once
        async for _ in connection:
            pass

    port = free_port()
    async with serve(handler, "127.0.0.1", port, process_request=refusing):
        client = Client(f"http://127.0.0.1:{port}", on_event=events.append, backoff=FAST_BACKOFF)
        await client.open()
        for _ in range(200):
            if EventKind.RECONNECTED in [event.kind for event in events]:
                break
            await asyncio.sleep(0.05)
        kinds = [event.kind for event in events]
        await client.close()
    assert EventKind.RECONNECTED in kinds and EventKind.GAVE_UP not in kinds
    assert handshakes == 2 + len(refusals)


def test_closing_a_sync_client_ends_the_calls_other_threads_wait_for() -> None:
    """A call another thread waited for (a subscription's next delivery) waited for ever
    once `close()` had stopped the client's loop; a call after it too."""
    stop = threading.Event()

    async def handler(connection: ServerConnection) -> None:
        async for frame in subscribes(connection):
            await answer_subscribe(connection, frame)

    port = free_port()

    async def serve_until_stopped() -> None:
        async with serve(handler, "127.0.0.1", port):
            await asyncio.to_thread(stop.wait)

    server = threading.Thread(target=asyncio.run, args=(serve_until_stopped(),), daemon=True)
    server.start()
    time.sleep(0.3)
    outcome: list[object] = []
    try:
        with SyncClient(f"http://127.0.0.1:{port}", backoff=FAST_BACKOFF) as client:
            subscription = client.subscribe("q")

            def wait_for_a_delivery() -> None:
                try:
                    outcome.append(subscription.get())
                except BaseException as error:
                    outcome.append(error)

            waiting = threading.Thread(target=wait_for_a_delivery, daemon=True)
            waiting.start()
            time.sleep(0.3)
        waiting.join(10)
        assert not waiting.is_alive() and outcome and (outcome[0] is None or isinstance(outcome[0], ClientClosed))
        with pytest.raises(ClientClosed):
            client.ping()
    finally:
        stop.set()
        server.join(5)


def test_a_sync_call_given_up_by_its_caller_is_cancelled() -> None:
    """Ctrl-C (or any exception) in the waiting thread left the call running on the loop."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        with SyncClient(f"http://127.0.0.1:{listener.getsockname()[1]}", http_timeout=60) as client:
            with pytest.raises(TimeoutError):
                client._run(client.client.queues(), timeout=0.3)
            time.sleep(0.1)
            running = asyncio.run_coroutine_threadsafe(_tasks_running(), client._loop).result(5)
            assert running == 0
    finally:
        listener.close()


async def _tasks_running() -> int:
    return len([task for task in asyncio.all_tasks() if task is not asyncio.current_task()])


def test_a_second_close_returns_once_the_first_is_done() -> None:
    """A close() made while another thread's was under way returned at once, with the
    client's thread and loop still running."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        client = SyncClient(f"http://127.0.0.1:{listener.getsockname()[1]}")
        closing = client.client.close

        async def slow_close() -> None:
            await asyncio.sleep(0.5)
            await closing()

        client.client.close = slow_close  # type: ignore[method-assign]
        first = threading.Thread(target=client.close, daemon=True)
        first.start()
        time.sleep(0.1)
        client.close()
        assert client._loop.is_closed()
        first.join(5)
    finally:
        listener.close()
