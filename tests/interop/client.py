"""stomp.py, the real STOMP client, wrapped for the interoperability tests: every
frame it receives is recorded, and every wait has a timeout.

stomp.py's own waits have none (`connect(wait=True)` and `disconnect(receipt=...)`
block until the server answers), so this module never uses them: a server that
says nothing fails the test after a few seconds instead of hanging the run.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import stomp
from stomp.adapter.ws import WSStompConnection
from stomp.exception import StompException
from stomp.protocol import Protocol12
from stomp.utils import Frame

from tests.eventually import eventually_sync
from tests.interop.runbroker import Credentials

Transport = Literal["tcp", "ws"]
# RabbitMQ's Web-STOMP subprotocols; without one our /ws speaks its own JSON protocol,
# and stomp.py asks for none unless the handshake header is given (docs/protocol.md, "STOMP").
WS_SUBPROTOCOLS = "v12.stomp, v11.stomp, v10.stomp"
QUIET = 0.5  # seconds: how long "nothing more arrives" is watched for

_receipts = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    stomp_port: int  # plain TCP
    ws_port: int
    ws_path: str


@dataclass
class Recorder(stomp.ConnectionListener):  # type: ignore[misc]
    """Every frame the server sent, in order; called on stomp.py's receiver thread."""

    frames: list[Frame] = field(default_factory=list)
    heartbeats: int = 0
    disconnected: threading.Event = field(default_factory=threading.Event)

    def on_connected(self, frame: Frame) -> None:
        self.frames.append(frame)

    def on_message(self, frame: Frame) -> None:
        self.frames.append(frame)

    def on_receipt(self, frame: Frame) -> None:
        self.frames.append(frame)

    def on_error(self, frame: Frame) -> None:
        self.frames.append(frame)

    def on_heartbeat(self) -> None:
        self.heartbeats += 1

    def on_disconnected(self) -> None:
        self.disconnected.set()

    def of(self, command: str) -> list[Frame]:
        return [f for f in list(self.frames) if f.cmd == command]


class Client:
    """One STOMP connection over TCP or WebSocket, opened but not yet connected."""

    def __init__(
        self, endpoint: Endpoint, transport: Transport, *, heartbeats: tuple[int, int] = (0, 0), subprotocol: bool = True
    ) -> None:
        """`subprotocol` False: a WebSocket offers none, as stomp.py does unless told (the
        broker then takes a first message that is a STOMP CONNECT for STOMP)."""
        self.transport = transport
        self.recorder = Recorder()
        # vhost "/": stomp.py sends the host it connects to (127.0.0.1) as the `host` header
        # otherwise, which RabbitMQ takes for a virtual host and refuses; clients written
        # for RabbitMQ therefore send "/".
        options: dict[str, Any] = dict(heartbeats=heartbeats, vhost="/", reconnect_attempts_max=1)
        self.conn: stomp.Connection12
        if transport == "tcp":
            self.conn = stomp.Connection12([(endpoint.host, endpoint.stomp_port)], timeout=5, **options)
        else:
            self.conn = WSStompConnection(
                [(endpoint.host, endpoint.ws_port)],
                ws_path=endpoint.ws_path,
                header={"Sec-WebSocket-Protocol": WS_SUBPROTOCOLS} if subprotocol else None,
                **options,
            )
        self.conn.set_listener("recorder", self.recorder)

    def connect(self, credentials: Credentials, *, timeout: float = 5.0) -> Frame:
        """CONNECT (stomp.py sends STOMP) and return the CONNECTED frame; an ERROR fails the test."""
        self.start(credentials)
        eventually_sync(
            lambda: bool(self.recorder.of("CONNECTED")) or self._fail_on_error("CONNECT"),
            timeout=timeout,
            what=f"CONNECTED over {self.transport}",
        )
        return self.recorder.of("CONNECTED")[0]

    def start(self, credentials: Credentials) -> None:
        """Open the socket and send the connect frame without waiting for the answer."""
        self.conn.connect(credentials.login, credentials.passcode, wait=False)

    def _fail_on_error(self, doing: str) -> bool:
        errors = self.recorder.of("ERROR")
        if errors:
            raise AssertionError(f"ERROR after {doing}: {errors[0].headers} {errors[0].body!r}")
        return False

    def error(self, *, timeout: float = 5.0) -> Frame:
        """The first ERROR frame the server sent (waiting for it)."""
        eventually_sync(lambda: bool(self.recorder.of("ERROR")), timeout=timeout, what="an ERROR frame")
        return self.recorder.of("ERROR")[0]

    def receipt(self, receipt_id: str, *, timeout: float = 5.0) -> Frame:
        def arrived() -> bool:
            if any(f.headers.get("receipt-id") == receipt_id for f in self.recorder.of("RECEIPT")):
                return True
            return self._fail_on_error(f"the frame asking for receipt {receipt_id}")

        eventually_sync(arrived, timeout=timeout, what=f"RECEIPT {receipt_id}")
        return next(f for f in self.recorder.of("RECEIPT") if f.headers.get("receipt-id") == receipt_id)

    def send(self, destination: str, body: str, *, receipt: bool = True, **headers: str) -> None:
        """SEND, waiting for its RECEIPT unless `receipt` is false (e.g. inside a transaction)."""
        if receipt:
            receipt_id = f"send-{next(_receipts)}"
            self.conn.send(destination, body, headers={**headers, "receipt": receipt_id})
            self.receipt(receipt_id)
        else:
            self.conn.send(destination, body, headers=headers)

    def subscribe(self, destination: str, subscription: str, *, ack: str = "auto", **headers: str) -> None:
        """SUBSCRIBE and wait for its RECEIPT: the subscription exists once it returns."""
        receipt_id = f"sub-{next(_receipts)}"
        self.conn.subscribe(destination, subscription, ack=ack, headers={**headers, "receipt": receipt_id})
        self.receipt(receipt_id)

    def messages(self, subscription: str) -> list[Frame]:
        return [f for f in self.recorder.of("MESSAGE") if f.headers.get("subscription") == subscription]

    def wait_messages(self, subscription: str, count: int, *, timeout: float = 5.0) -> list[Frame]:
        """Wait until `count` MESSAGE frames came through `subscription`; return them all."""
        eventually_sync(
            lambda: len(self.messages(subscription)) >= count or self._fail_on_error(f"SUBSCRIBE {subscription}"),
            timeout=timeout,
            what=f"{count} MESSAGE frames on {subscription}",
        )
        return self.messages(subscription)

    def begin(self) -> str:
        transaction = f"tx-{next(_receipts)}"
        self._with_receipt(self.conn.begin, transaction)
        return transaction

    def commit(self, transaction: str) -> None:
        self._with_receipt(self.conn.commit, transaction)

    def abort(self, transaction: str) -> None:
        self._with_receipt(self.conn.abort, transaction)

    def _with_receipt(self, method: Any, transaction: str) -> None:
        receipt_id = f"{method.__name__}-{next(_receipts)}"
        method(transaction, headers={"receipt": receipt_id})
        self.receipt(receipt_id)

    def ack(self, message: Frame, **options: str) -> None:
        self.conn.ack(message.headers["ack"], **options)

    def nack(self, message: Frame, **options: str) -> None:
        self.conn.nack(message.headers["ack"], **options)

    def closed(self) -> bool:
        return self.recorder.disconnected.is_set() or not self.conn.is_connected()

    def disconnect(self, *, timeout: float = 5.0) -> Frame:
        """DISCONNECT with a receipt; returns the RECEIPT, once the server closed the connection."""
        receipt_id = f"bye-{next(_receipts)}"
        # The protocol's DISCONNECT, not the connection's: given a receipt, that one also waits,
        # without a timeout, for the receiver thread to end.
        Protocol12.disconnect(self.conn, receipt_id)
        frame = self.receipt(receipt_id, timeout=timeout)
        eventually_sync(self.recorder.disconnected.is_set, timeout=timeout, what="the connection closed")
        return frame

    def close(self) -> None:
        """Tear down whatever state the connection is in, without waiting on the server."""
        if self.conn.is_connected() and not self.recorder.disconnected.is_set():
            try:
                self.disconnect(timeout=2)
            except (AssertionError, OSError, StompException):
                pass
        self.conn.transport.running = False
        self.conn.transport.disconnect_socket()


def quiet(seconds: float = QUIET) -> None:
    """Let time pass where the test checks that something does NOT arrive."""
    time.sleep(seconds)
