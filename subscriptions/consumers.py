"""The Channels consumer at /ws: accepts the socket, authenticates the client, and
hands every frame to a `Session` (broker/transport/session.py), which does the rest.
A client that offers a STOMP subprotocol (`v12.stomp`, `v11.stomp`, `v10.stomp`, as
RabbitMQ's Web-STOMP) gets a `StompSession` instead (subscriptions/stomp.py), which
authenticates it at its CONNECT frame.

Authentication and permissions come from the `access` app, settled once, at
connect. The consumer does no ORM work on the loop and has no channel-layer
channel: deliveries come from the router through the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, WebSocketScope
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from access.asgi import websocket_permissions
from access.rules import ANONYMOUS_ALL
from broker.engine.errors import Unauthorized
from broker.engine.jsoncodec import dumps
from broker.protocol.server_frames import error_frame
from broker.router import registry
from broker.transport.authorization import Permissions
from broker.transport.limits import CLOSE_TRY_LATER, REASON_CONNECTIONS, FrameBudget, user_connections
from broker.transport.session import CLOSE_INTERNAL_ERROR, Session
from broker.transport.stomp_session import StompSession, asgi_chunks
from subscriptions.stomp import new_stomp_session

log = logging.getLogger("broker.ws")

# Private-use close code (4000-4999): 4000 + HTTP's 401, after an `unauthorized` error frame.
CLOSE_UNAUTHORIZED: Final = 4401
# The WebSocket subprotocols that choose STOMP, the best first (RabbitMQ Web-STOMP's names).
STOMP_SUBPROTOCOLS: Final = ("v12.stomp", "v11.stomp", "v10.stomp")


def is_stomp_connect(text: str) -> bool:
    """Does this first message of a WebSocket without a STOMP subprotocol open a STOMP session?"""
    return text.lstrip("\r\n").startswith(("CONNECT\n", "CONNECT\r\n", "STOMP\n", "STOMP\r\n"))


def stomp_subprotocol(offered: list[str]) -> str | None:
    """The STOMP subprotocol to accept of those the client offered; None for our JSON frames."""
    for name in STOMP_SUBPROTOCOLS:
        if name in offered:
            return name
    return None


class BrokerConsumer(AsyncJsonWebsocketConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session: Session | None = None
        self._stomp: StompSession | None = None
        self._first_chunk: bytes | None = None  # a STOMP CONNECT read as the first message
        self._counted_as: str | None = None  # the user whose connection count this one holds

    async def __call__(self, scope: WebSocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """Channels' loop, without a channel layer, reading events in turn (no task and
        `asyncio.wait` per event as in Channels' await_many_dispatch) until the connection
        is accepted; then the session reads the rest itself, every frame without a handler
        lookup or a coroutine (the benchmarks' profiles)."""
        self.scope = cast(Any, scope)  # Channels' scope type adds keys this consumer never reads
        self.channel_layer = cast(Any, None)  # no channel layer: deliveries come from the router
        self.base_send = send
        try:
            while self._session is None and self._stomp is None:
                await self.dispatch(await receive())
            if self._session is not None:
                await self._serve_json_or_stomp(receive)
            if self._stomp is not None:
                await self._stomp.serve(self._stomp_chunks(receive))
        except StopConsumer:
            pass
        finally:
            # Whatever ended the loop (the client left during connect, a bug), the
            # router connection and the per-user count are given back.
            self._release()

    async def dispatch(self, message: Any) -> None:
        # Channels calls `aclose_old_connections()` (a hop to a database thread) before
        # every event, for consumers that use the ORM. This one never does.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_receive(self, message: Any) -> None:
        pass  # a frame before the session exists (refused at connect): nothing to do

    async def websocket_disconnect(self, message: Any) -> None:
        self._release()
        if self._session is not None:
            await self._session.wait_closed()
        raise StopConsumer()

    async def connect(self) -> None:
        subprotocol = stomp_subprotocol(list(self.scope.get("subprotocols") or ()))
        if subprotocol is not None:
            await self._connect_stomp(subprotocol)
            return
        try:
            permissions = await websocket_permissions(dict(self.scope))
        except Unauthorized as error:
            # Accepted first, so the client can read why before the close.
            await self.accept()
            await self.send(text_data=dumps(error_frame(None, error)))
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        if permissions is not ANONYMOUS_ALL:
            if not user_connections.take(permissions.who):
                await self.accept()
                await self.close(code=CLOSE_TRY_LATER, reason=REASON_CONNECTIONS)
                return
            self._counted_as = permissions.who
        router = registry.current()
        await self.accept()
        if router is None or router.loop is not asyncio.get_running_loop():
            # Served without a router or a link on this loop: say so with a close code
            # rather than an HTTP 403 a browser cannot tell apart from a refused origin.
            log.error("WebSocket connection refused: no router or cluster link runs on this event loop")
            await self.close(code=CLOSE_INTERNAL_ERROR)
            return
        self._session = Session(
            router,
            self.base_send,
            permissions,
            max_message_bytes=settings.MAX_MESSAGE_BYTES,
            max_buffered_bytes=settings.WS_MAX_BUFFERED_BYTES,
            budget=FrameBudget.from_settings(),
            on_close=self._give_back,  # at once when the server closes, not at the client's leave
        )
        self._session.open()

    async def _serve_json_or_stomp(self, receive: ASGIReceiveCallable) -> None:
        """Our JSON frames, unless the first message is a STOMP CONNECT: clients written for
        RabbitMQ's Web-STOMP (which speaks STOMP whatever the subprotocol) may offer none, as
        stomp.py's does. A JSON frame never starts with CONNECT or STOMP."""
        session = self._session
        assert session is not None
        first = await receive()
        text = first.get("text") if first["type"] == "websocket.receive" else None
        if text is not None and is_stomp_connect(text):
            session.close()  # nothing was carried out on it: it leaves the router as it came
            await session.wait_closed()
            self._session = None
            self._first_chunk = text.encode()
            self._stomp = self._new_stomp()
            self._stomp.open()
            return
        if first["type"] == "websocket.receive":
            waiting = session.receive(text, first.get("bytes"))
            if waiting is not None:
                await waiting
        elif first["type"] == "websocket.disconnect":
            return
        await session.serve(receive)

    def _stomp_chunks(self, receive: ASGIReceiveCallable) -> Callable[[], Awaitable[bytes | None]]:
        """The WebSocket's messages for the STOMP session, after the one already read."""
        rest = asgi_chunks(receive)

        async def next_chunk() -> bytes | None:
            first, self._first_chunk = self._first_chunk, None
            return first if first is not None else await rest()

        return next_chunk

    def _new_stomp(self) -> StompSession:
        router = registry.current()
        assert router is not None
        scope = dict(self.scope)

        async def default_permissions() -> Permissions:
            return await websocket_permissions(scope)

        return new_stomp_session(router, self.base_send, default_permissions)

    async def _connect_stomp(self, subprotocol: str) -> None:
        """Accepted at once: a STOMP client authenticates in its CONNECT frame (or with the
        WebSocket's token or session, when its CONNECT has no login and passcode)."""
        router = registry.current()
        await self.accept(subprotocol=subprotocol)
        if router is None or router.loop is not asyncio.get_running_loop():
            log.error("STOMP connection refused: no router or cluster link runs on this event loop")
            await self.close(code=CLOSE_INTERNAL_ERROR)
            return
        self._stomp = self._new_stomp()
        self._stomp.open()

    def _give_back(self) -> None:
        """The per-user connection count, once."""
        if self._counted_as is not None:
            user_connections.give_back(self._counted_as)
            self._counted_as = None

    def _release(self) -> None:
        self._give_back()
        if self._session is not None:
            self._session.close()
        if self._stomp is not None:
            self._stomp.close()
