"""One process, one event loop: the router, its writer, and the ASGI server.

`runbroker` calls `run`. The router loads everything before the server
accepts a connection; SIGINT/SIGTERM stop the server, then the router commits
and checkpoints what is pending (STYLE.md, "Async").

In a cluster (REDIS_URL set; DESIGN.md, "Processes") every process serves
its clients through the cluster link. A router candidate also waits for the
router lease, and takes over as the router when it gets it; an edge never does.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable
from typing import Any, Literal

import uvicorn
from django.conf import settings

from broker.protocol.publish import FRAME_OVERHEAD
from broker.runtime.runtime import Runtime
from broker.transport.wsprotocol import BrokerWebSocketProtocol
from storage.store import OrmMessageStore

log = logging.getLogger("broker.server")

Role = Literal["single", "candidate", "edge"]
# A router that cannot go on (its lease or its hub failed) exits with this code; its
# supervisor starts it again, as a standby.
ROUTER_FAILED_EXIT = 70


def new_runtime(fence: Callable[[Any], None] | None = None) -> Runtime:
    return Runtime(OrmMessageStore(fence=fence), checkpoint_seconds=settings.CHECKPOINT_IN_SECONDS)


async def lead(layer: object) -> None:
    """Wait for the router lease as a hot standby; then be the router until the process stops."""
    from broker.cluster.hub import Hub
    from broker.cluster.lease import (
        CHECK_SECONDS,
        POLL_SECONDS,
        TAKEOVER_GRACE,
        RouterLease,
    )

    lease = RouterLease(settings.DATABASES["default"])
    log.info("standby: waiting for the router lease")
    try:
        while not await asyncio.to_thread(lease.try_acquire):
            await asyncio.sleep(POLL_SECONDS)
        log.info("router lease taken: waiting for the previous router's commits under way, then %.1f s", TAKEOVER_GRACE)
        await asyncio.to_thread(lease.wait_for_old_writes)
        await asyncio.sleep(TAKEOVER_GRACE)
        runtime = new_runtime(lease.fence())
        await runtime.start()
        tune_garbage_collector()  # the loaded messages too
        try:
            # The load may have taken seconds: still the lease's holder before serving?
            await _check_lease(lease, CHECK_SECONDS)
            async with asyncio.TaskGroup() as group:
                group.create_task(Hub(runtime, layer).run(), name="broker-hub")
                group.create_task(_keep_lease(lease, CHECK_SECONDS), name="broker-lease")
        finally:
            await runtime.stop()
    finally:
        await asyncio.to_thread(lease.release)


async def _keep_lease(lease: object, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await _check_lease(lease, every)


async def _check_lease(lease: object, every: float) -> None:
    from broker.cluster.lease import LEASE_LOST_EXIT, RouterLease

    assert isinstance(lease, RouterLease)
    try:
        await asyncio.wait_for(asyncio.to_thread(lease.check), 2 * every)
    except Exception as error:
        # The lock may be someone else's by now: not one more commit as the router.
        log.critical("router lease lost (%r): stopping so that the standby takes over", error)
        logging.shutdown()
        os._exit(LEASE_LOST_EXIT)


def _leader_done(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    log.critical("the router stopped unexpectedly: %r", error, exc_info=error)
    logging.shutdown()
    os._exit(ROUTER_FAILED_EXIT)


async def serve(host: str, port: int, role: Role = "single") -> None:
    from broker_project.asgi import application

    runtime: Runtime | None = None
    link = None
    leader: asyncio.Task[None] | None = None
    if role == "single":
        runtime = new_runtime()
        await runtime.start()
    else:
        from channels.layers import get_channel_layer

        from broker.cluster.edge import EdgeLink

        link = EdgeLink(get_channel_layer())
        link.candidate = role == "candidate"
        await link.start()
        if link.candidate:
            leader = asyncio.create_task(lead(link.layer), name="broker-leader")
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
            "broker listening on http://%s:%d (WebSocket at ws://%s:%d/ws) as %s", shown, port, shown, port, role
        )
        await server.main_loop()
        await server.shutdown()
    finally:
        if leader is not None:
            leader.remove_done_callback(_leader_done)
            leader.cancel()
            try:
                await leader
            except asyncio.CancelledError:
                pass
        if runtime is not None:
            await runtime.stop()
        if link is not None:
            await link.stop()
        log.info("broker stopped")


# Container allocations between young collections. Python's default (700) made a
# young collection every few dozen publishes, and the older generations' scans grow
# with every queued message: about a fifth of a publish's CPU (issue 5). The hot
# path makes no reference cycles, so this delays little real garbage.
GC_YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Once started (code, settings, stored messages loaded): keep what exists out of
    every later collection, and collect young objects less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _request_exit(server: uvicorn.Server) -> None:
    log.info("stopping")
    server.should_exit = True


def run(host: str, port: int, role: Role = "single") -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is not on Windows
        pass
    asyncio.run(serve(host, port, role))
