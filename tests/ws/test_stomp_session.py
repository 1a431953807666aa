"""The STOMP session against a router that answers late or never, as the cluster link's
may (an edge whose connection has gone gets no answer): nothing waits for ever."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from access.rules import ANONYMOUS_ALL
from broker.engine.errors import PreconditionFailed
from broker.engine.messages import Delivery, Message
from broker.protocol.server_frames import message_frame
from broker.protocol.stomp_frames import StompParser, encode_frame
from broker.transport import stomp_session
from broker.transport.limits import FrameBudget
from broker.transport.stomp_session import StompSession


class SilentRouter:
    """Takes subscribes and never answers them."""

    loop = None
    available = True
    role = "edge"

    def __init__(self) -> None:
        self.connected: list[Any] = []
        self.asked: list[Any] = []
        self.left: list[int] = []

    def connect(self, sink: Any) -> int:
        self.connected.append(sink)
        return len(self.connected)

    def disconnect(self, conn: int) -> None:
        self.left.append(conn)

    def subscribe(self, conn: int, request: Any, answer: Any) -> None:
        self.asked.append(request)

    def written(self, conn: int, batches: int) -> None:
        pass


async def _anonymous() -> Any:
    return ANONYMOUS_ALL


async def _never_declare(*args: Any) -> None:
    raise AssertionError("nothing is declared here")


def new_session(router: SilentRouter, sent: list[Any]) -> StompSession:
    """A session on `router` of an anonymous client; what it sends lands in `sent`."""

    async def send(event: Any) -> None:
        sent.append(event)

    return StompSession(
        router,  # type: ignore[arg-type]
        send,
        authenticate=lambda login, passcode: _anonymous(),
        default_permissions=_anonymous,
        declare_queue=_never_declare,
        max_message_bytes=1 << 20,
        max_buffered_bytes=1 << 20,
        budget=FrameBudget(1e6, 1e6),
    )


def serve_connected(session: StompSession, subscribe: dict[str, str]) -> tuple[asyncio.Queue[bytes | None], Any]:
    """Open `session` and serve it a CONNECT and this SUBSCRIBE; (the queue of the client's
    next chunks, the serving task)."""
    session.open()
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
    chunks.put_nowait(encode_frame("CONNECT", {"accept-version": "1.2"}))
    chunks.put_nowait(encode_frame("SUBSCRIBE", {"id": "s", "destination": "/amq/queue/q", **subscribe}))
    return chunks, asyncio.ensure_future(session.serve(chunks.get))


def sent_frames(sent: list[Any]) -> list[Any]:
    return StompParser(max_frame_bytes=1 << 20).feed(
        b"".join(event["text"].encode() for event in sent if event.get("text"))
    )


async def test_a_session_ending_while_the_router_has_not_answered_its_subscribe_stops() -> None:
    sent: list[Any] = []
    router = SilentRouter()
    session = new_session(router, sent)
    _, serving = serve_connected(session, {"receipt": "r"})
    while not router.asked:
        await asyncio.sleep(0.01)
    session.close()  # the client went away (or the session ended) before the router answered
    await asyncio.wait_for(serving, 2)
    assert router.left == [1]
    assert [frame.command for frame in sent_frames(sent)] == ["CONNECTED"]  # no RECEIPT for a subscribe never made


class ForgetfulRouter(SilentRouter):
    """Answers subscribes at once; knows no delivery tag below 3 (as a router after a
    failover knows none of the old one's)."""

    def __init__(self) -> None:
        super().__init__()
        self.acked: list[int] = []

    def subscribe(self, conn: int, request: Any, answer: Any) -> None:
        answer("q", None)

    def ack(self, conn: int, frame_id: Any, tag: int, *, multiple: bool) -> None:
        if tag < 3:
            self.connected[conn - 1].refused(frame_id, PreconditionFailed(f"unknown delivery tag {tag}"))
        else:
            self.acked.append(tag)


async def test_a_client_ack_implying_deliveries_the_router_forgot_is_not_an_error() -> None:
    sent: list[Any] = []
    router = ForgetfulRouter()
    session = new_session(router, sent)
    chunks, serving = serve_connected(session, {"ack": "client"})
    while not session._subscriptions.get("s"):
        await asyncio.sleep(0.01)
    message = Message("m", "", "q", "1", {}, True, "2026-12-04T00:00:00Z")
    session.deliver([message_frame(Delivery(1, '"s"', tag, message, False)) for tag in (1, 2, 3)])
    chunks.put_nowait(encode_frame("ACK", {"id": "3", "receipt": "a"}))
    chunks.put_nowait(encode_frame("ACK", {"id": "2", "receipt": "b"}))  # named by the client: its mistake
    await asyncio.wait_for(serving, 2)
    assert router.acked == [3]
    assert [(frame.command, frame.headers.get("receipt-id")) for frame in sent_frames(sent)] == [
        ("CONNECTED", None), ("MESSAGE", None), ("MESSAGE", None), ("MESSAGE", None), ("RECEIPT", "a"),
        ("ERROR", "b"),
    ]


async def test_a_held_ack_refused_at_commit_names_the_commit_s_receipt() -> None:
    sent: list[Any] = []
    router = ForgetfulRouter()
    session = new_session(router, sent)
    chunks, serving = serve_connected(session, {"ack": "client-individual"})
    while not session._subscriptions.get("s"):
        await asyncio.sleep(0.01)
    message = Message("m", "", "q", "1", {}, True, "2026-12-04T00:00:00Z")
    session.deliver([message_frame(Delivery(1, '"s"', 1, message, False))])
    chunks.put_nowait(encode_frame("BEGIN", {"transaction": "t"}))
    chunks.put_nowait(encode_frame("ACK", {"id": "1", "transaction": "t", "receipt": "acked"}))  # a tag it forgot
    chunks.put_nowait(encode_frame("COMMIT", {"transaction": "t", "receipt": "committed"}))
    await asyncio.wait_for(serving, 2)
    assert [(frame.command, frame.headers.get("receipt-id")) for frame in sent_frames(sent)][-2:] == [
        ("RECEIPT", "acked"), ("ERROR", "committed"),
    ]


async def test_a_session_ended_while_its_client_is_authenticated_joins_no_router(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CONNECT_TIMEOUT passes while the CONNECT's credentials are looked up, and its ERROR
    cannot leave: the session has ended, and takes no connection slot and no router
    connection afterwards."""
    monkeypatch.setattr(stomp_session, "CONNECT_TIMEOUT", 0.05)
    monkeypatch.setattr(stomp_session, "CLOSING_GRACE", 0.1)
    sent: list[Any] = []
    router = SilentRouter()
    looked_up = asyncio.Event()
    taken: list[Any] = []

    async def slow(login: str, passcode: str) -> Any:
        await asyncio.sleep(0.2)
        looked_up.set()
        return ANONYMOUS_ALL

    async def send(event: Any) -> None:  # a client that reads nothing: the ERROR never leaves
        sent.append(event)
        await asyncio.Event().wait()

    session = StompSession(
        router,  # type: ignore[arg-type]
        send,
        authenticate=slow,
        default_permissions=_anonymous,
        declare_queue=_never_declare,
        max_message_bytes=1 << 20,
        max_buffered_bytes=1 << 20,
        budget=FrameBudget(1e6, 1e6),
        on_connected=lambda permissions: taken.append(permissions) or True,
    )
    session.open()
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
    chunks.put_nowait(encode_frame("CONNECT", {"accept-version": "1.2", "login": "u", "passcode": "p"}))
    serving = asyncio.ensure_future(session.serve(chunks.get))
    await asyncio.wait_for(looked_up.wait(), 2)
    await asyncio.wait_for(serving, 2)
    session.close()
    assert (router.connected, taken) == ([], [])
    assert [frame.command for frame in sent_frames(sent)] == ["ERROR"]
