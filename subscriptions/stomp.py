"""STOMP clients in the project: the WebSocket's `v1x.stomp` subprotocols and the TCP
port (STOMP_PORT) both get a `StompSession` (broker/transport/stomp_session.py) made
here, with what only the project knows: who the client is (access/asgi.py), and
declaring the queue of a `/queue/NAME` destination (queues/services.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction

from access.asgi import stomp_permissions
from access.rules import ANONYMOUS_ALL
from access.selectors import permissions_or_unauthorized
from bindings.services import binding_create
from broker.engine.errors import BrokerError, NotFound, Unavailable
from broker.protocol.stomp_messages import QueueProperties
from broker.router import registry
from broker.router.interface import Router
from broker.transport.authorization import Permissions
from broker.transport.limits import FrameBudget, user_connections
from broker.transport.loopback import Peer
from broker.transport.outbox import Send
from broker.transport.stomp_session import StompSession
from queues.services import queue_delete, queue_ensure, settle_dropped_queue


def _ensure(name: str, properties: QueueProperties, permissions: Permissions, bind: tuple[str, str] | None) -> None:
    if properties.exclusive:
        raise BrokerError(
            "exclusive: a /queue/ destination's queue cannot be exclusive; use /temp-queue/NAME",
            fields={"exclusive": ["must be false"]},
        )

    if bind is not None:
        # The binding needs write on its queue (and read on its exchange: the session's), as
        # the API's (bindings/views.py); checked before anything is made.
        permissions.require("write", "queue", name)
    settle_dropped_queue(name)  # outside the transaction (queues/services.py says why)
    # One transaction: a binding refused (its exchange missing, say) leaves no queue behind,
    # and the router hears of neither (it is told at commit).
    with transaction.atomic():
        queue_ensure(
            name=name,
            durable=properties.durable,
            auto_delete=properties.auto_delete,
            arguments=properties.arguments,
            given=properties.given,
            permissions=permissions,
            settled=True,
        )
        if bind is not None:
            exchange, binding_key = bind
            binding_create(exchange=exchange, queue=name, binding_key=binding_key)


_ensure_async = database_sync_to_async(_ensure)


def _delete(name: str, permissions: Permissions) -> None:
    if not permissions.everything:
        permissions.require("configure", "queue", name)
    try:
        queue_delete(name=name)
    except NotFound:
        pass  # gone already: what was asked


_delete_async = database_sync_to_async(_delete)


async def delete_queue(name: str, permissions: Permissions) -> None:
    await _delete_async(name, permissions)


async def declare_queue(
    name: str, properties: QueueProperties, permissions: Permissions, bind: tuple[str, str] | None
) -> None:
    await _ensure_async(name, properties, permissions, bind)


def new_stomp_session(
    router: Router,
    send: Send,
    default_permissions: Callable[[], Awaitable[Permissions]],
    *,
    transport: str = "websocket",
) -> StompSession:
    """A STOMP session on `router`; `default_permissions`: the client's when its CONNECT
    carries no login and passcode (the WebSocket's token or session, or anonymous)."""
    counted: list[str] = []

    def on_connected(permissions: Permissions) -> bool:
        if permissions is ANONYMOUS_ALL:
            return True
        if not user_connections.take(permissions.who):
            return False
        counted.append(permissions.who)
        return True

    def on_close() -> None:
        while counted:
            user_connections.give_back(counted.pop())

    return StompSession(
        router,
        send,
        authenticate=stomp_permissions,
        default_permissions=default_permissions,
        declare_queue=declare_queue,
        delete_queue=delete_queue,
        max_message_bytes=settings.MAX_MESSAGE_BYTES,
        max_buffered_bytes=settings.WS_MAX_BUFFERED_BYTES,
        budget=FrameBudget.from_settings(),
        on_connected=on_connected,
        on_close=on_close,
        heartbeat_ms=settings.STOMP_HEARTBEAT_MS,
        transport=transport,
    )


def tcp_stomp_session(send: Send, address: str | None) -> StompSession:
    """A STOMP session for a TCP client (STOMP_PORT) from `address` (None: not known, as
    for a Unix socket): no handshake, so without a login and passcode at CONNECT it is
    anonymous where that is allowed for that address, as for a WebSocket's client."""
    router = registry.current()
    if router is None:
        raise Unavailable("the broker's router is not running")
    peer = Peer(address)

    async def anonymous() -> Permissions:
        # A TLS terminator in front of the port on this machine would hide its clients'
        # addresses: README, "Authentication and permissions", says to turn anonymous access off.
        return permissions_or_unauthorized(None, peer=peer)

    return new_stomp_session(router, send, anonymous, transport="tcp")
