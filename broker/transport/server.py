"""One process, one event loop: the router, its writer, and the ASGI server.

`runbroker` calls `run`. The router loads everything before the server
accepts a connection; SIGINT/SIGTERM stop the server, then the router commits
and checkpoints what is pending.

In a cluster (REDIS_URL set; docs/deploy.md) every process serves its clients
through the cluster link. A router candidate also waits for the router lease,
and takes over as the router when it gets it (startup.lead); an edge never does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any, Final, Literal

import uvicorn
from django.conf import settings

from broker.cluster.edge import EdgeLink
from broker.cluster.redis_link import RedisLink, link_layer
from broker.protocol.publish import FRAME_OVERHEAD
from broker.router.local import LocalRouter

from .startup import StoreFactory, lead, new_router, start_memory_guard, tune_garbage_collector
from .stomp_tcp import SessionFactory, StompTcpServer
from .wsprotocol import BrokerWebSocketProtocol

log = logging.getLogger("broker.server")

Role = Literal["single", "candidate", "edge"]
# The start-up line's words for each role.
ROLE_WORDS: Final[dict[Role, str]] = {
    "single": "a single broker",
    "candidate": "a router candidate (the router, or its standby)",
    "edge": "an edge of the cluster",
}
# A router that cannot go on (its lease or its hub failed) exits with this code; its
# supervisor starts it again, as a standby.
ROUTER_FAILED_EXIT = 70


def _leader_done(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    log.critical("the router stopped unexpectedly: %r", error, exc_info=error)
    logging.shutdown()
    os._exit(ROUTER_FAILED_EXIT)


async def serve(
    application: Any,
    host: str,
    port: int,
    *,
    role: Role,
    new_store: StoreFactory,
    layer: Any,
    stomp_port: int = 0,
    new_stomp_session: SessionFactory | None = None,
) -> None:
    """Serve `application` (the project's ASGI application) with this process's router or link.
    `layer`: the channel layer (Redis in a cluster). `stomp_port`: STOMP over TCP there too,
    with sessions from `new_stomp_session` (0: none)."""
    stomp: StompTcpServer | None = None
    router: LocalRouter | None = None
    link: EdgeLink | None = None
    leader: asyncio.Task[None] | None = None
    start_memory_guard()
    if role == "single":
        router = new_router(new_store(None), layer)
        await router.start()
    else:
        link_traffic = link_layer(layer, settings.REDIS_URL)
        link = EdgeLink(link_traffic, candidate=role == "candidate")
        await link.start()
        if link.candidate:
            leader = asyncio.create_task(lead(layer, link_traffic, new_store), name="broker-leader")
            leader.add_done_callback(_leader_done)
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        lifespan="off",
        http="httptools",
        ws=BrokerWebSocketProtocol,
        ws_per_message_deflate=settings.WS_PER_MESSAGE_DEFLATE,
        ws_max_size=settings.MAX_MESSAGE_BYTES + FRAME_OVERHEAD,
        proxy_headers=True,
        forwarded_allow_ips=settings.FORWARDED_ALLOW_IPS,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _request_exit, server)
    # What uvicorn's Server.serve() does, minus its signal handling: ours stops the
    # server and then the router, so the last commit and checkpoint happen.
    config.load()
    tune_garbage_collector()
    server.lifespan = config.lifespan_class(config)
    try:
        await server.startup()
        if server.should_exit:
            raise SystemExit(f"cannot listen on {host}:{port}")
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "broker listening on http://%s:%d (WebSocket at ws://%s:%d/ws) as %s",
            shown, port, shown, port, ROLE_WORDS[role],
        )
        if stomp_port and new_stomp_session is not None:
            stomp = StompTcpServer(
                new_stomp_session,
                max_per_address=settings.MAX_CONNECTIONS_PER_IP,
                send_buffer=max(settings.WS_MAX_BUFFERED_BYTES // 4, 16 * 1024),
            )
            try:
                await stomp.start(host, stomp_port)
            except OSError as error:
                raise SystemExit(f"cannot listen for STOMP on {host}:{stomp_port}: {error}") from None
            log.info("STOMP listening on %s:%d (STOMP_PORT)", shown, stomp_port)
        await server.main_loop()
        if stomp is not None:
            await stomp.stop()
        await server.shutdown()
    finally:
        if leader is not None:
            leader.remove_done_callback(_leader_done)
            leader.cancel()
            try:
                await leader
            except asyncio.CancelledError:
                pass
        if router is not None:
            await router.stop()
        if link is not None:
            await link.stop()
            if isinstance(link.layer, RedisLink):
                await link.layer.close()
        log.info("broker stopped")


def _request_exit(server: uvicorn.Server) -> None:
    log.info("stopping")
    server.should_exit = True


def run(
    application: Any,
    host: str,
    port: int,
    *,
    role: Role,
    new_store: StoreFactory,
    layer: Any,
    stomp_port: int = 0,
    new_stomp_session: SessionFactory | None = None,
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is not on Windows
        pass
    asyncio.run(serve(application, host, port, role=role, new_store=new_store, layer=layer, stomp_port=stomp_port,
                      new_stomp_session=new_stomp_session))
