"""One process, one event loop: the router, its writer, and the ASGI server.

`runbroker` calls `run`. The router loads everything before the server
accepts a connection; SIGINT/SIGTERM stop the server, then the router commits
and checkpoints what is pending (STYLE.md, "Async").
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn
from django.conf import settings

from broker_project.publishing import FRAME_OVERHEAD
from broker_project.runtime import Runtime
from queues.store import OrmMessageStore

log = logging.getLogger("broker.server")



async def serve(host: str, port: int) -> None:
    from broker_project.asgi import application

    runtime = Runtime(OrmMessageStore(), checkpoint_seconds=settings.CHECKPOINT_IN_SECONDS)
    await runtime.start()
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        lifespan="off",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=settings.MAX_MESSAGE_BYTES + FRAME_OVERHEAD,
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
    server.lifespan = config.lifespan_class(config)
    try:
        await server.startup()
        if server.should_exit:
            raise SystemExit(f"cannot listen on {host}:{port}")
        shown = f"[{host}]" if ":" in host else host
        log.info("broker listening on http://%s:%d (WebSocket at ws://%s:%d/ws)", shown, port, shown, port)
        await server.main_loop()
        await server.shutdown()
    finally:
        await runtime.stop()
        log.info("broker stopped")


def _request_exit(server: uvicorn.Server) -> None:
    log.info("stopping")
    server.should_exit = True


def run(host: str, port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is not on Windows
        pass
    asyncio.run(serve(host, port))
