"""Starting this process's router, or its link to the cluster's router.

`runbroker` starts one before it listens (server.py); under another ASGI
server (`daphne broker_project.asgi:application`) `StartRouter` starts one on
that server's loop at the first connection, so such a process is a whole
broker too, or with REDIS_URL an edge of the cluster's router. The message
store is the project's, handed in as a factory.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabase

from broker.cluster import pg_lock, sqlite_lock
from broker.cluster.edge import EdgeLink
from broker.cluster.hub import Hub
from broker.cluster.lease import (
    CHECK_SECONDS,
    LEASE_LOST_EXIT,
    POLL_SECONDS,
    STALLED_AFTER,
    TAKEOVER_GRACE,
    RouterLease,
    WriteFence,
)
from broker.cluster.redis_link import link_layer
from broker.router import registry
from broker.router.interface import Router
from broker.router.local import LocalRouter
from broker.runtime import memory
from broker.runtime.runtime import Runtime, RuntimeStore
from broker.runtime.timeouts import within

log = logging.getLogger("broker.server")

# The project's message store; in a cluster, given the router's commit fence.
StoreFactory = Callable[[WriteFence | None], RuntimeStore]
T = TypeVar("T")

# Container allocations between young collections. Python's default (700) made a
# young collection every few dozen publishes, and the older generations' scans grow
# with every queued message: about a fifth of a publish's CPU in the benchmarks'
# profiles. The hot path makes no reference cycles, so this delays little real garbage.
GC_YOUNG_THRESHOLD: Final = 50_000


def new_router(store: RuntimeStore, layer: Any) -> LocalRouter:
    runtime = Runtime(
        store,
        checkpoint_seconds=settings.CHECKPOINT_IN_SECONDS,
        max_queues=settings.MAX_QUEUES or None,
        max_bindings=settings.MAX_BINDINGS or None,
        max_private_queues=settings.MAX_PRIVATE_QUEUES_PER_CONNECTION or None,
        layer=layer,
        window=settings.QUEUE_WINDOW or None,
        credit=delivery_credit(),
    )
    return LocalRouter(runtime)


def hold_single_router_lock() -> None:
    """A single broker is its database's only router: it holds the router lock of its SQLite
    file (broker/cluster/sqlite_lock.py) or of its PostgreSQL database (pg_lock.py) for as
    long as its process lives; raises RouterLockHeld. Blocks (it may connect)."""
    connection = connections[DEFAULT_DB_ALIAS]
    if isinstance(connection, SQLiteDatabase) and not connection.is_in_memory_db():
        sqlite_lock.hold_router_lock(connection.settings_dict["NAME"])
    elif connection.vendor == "postgresql":
        pg_lock.hold_router_lock(connection.settings_dict)


def delivery_credit() -> int:
    """What a connection's subscriptions to named queues may have delivered and not yet
    written: well under the bound past which its outbox closes it as a slow consumer,
    with room for one last message (at most MAX_MESSAGE_BYTES) and replies."""
    return int(settings.WS_MAX_BUFFERED_BYTES) // 4


def start_memory_guard() -> None:
    """This process's memory limit and the WebSocket connections' unsent budget (once)."""
    global _memory_task
    if _memory_task is not None and not _memory_task.done():
        return
    guard = memory.guard() or memory.configure(settings.MEMORY_LIMIT, settings.WS_TOTAL_BUFFERED_BYTES)
    _memory_task = asyncio.create_task(guard.run(), name="broker-memory")
    log.info("memory limit %d MiB (MEMORY_LIMIT)", settings.MEMORY_LIMIT >> 20)


_memory_task: asyncio.Task[None] | None = None


def tune_garbage_collector() -> None:
    """Once started (code, settings, stored messages loaded): keep what exists out of
    every later collection, and collect young objects less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def lead(layer: Any, link_traffic: Any, new_store: StoreFactory) -> None:
    """Wait for the router lease as a hot standby; then be the router until the process stops.
    `layer`: the channel layer; `link_traffic`: what the cluster link runs on (redis_link.py)."""
    lease = RouterLease(settings.DATABASES["default"])
    log.info("standby: waiting for the router lease")
    try:
        while not await asyncio.to_thread(lease.try_acquire):
            await asyncio.sleep(POLL_SECONDS)
        log.info("router lease taken: waiting for the previous router's commits under way, then %.1f s", TAKEOVER_GRACE)
        await asyncio.to_thread(lease.wait_for_old_writes)
        term = await asyncio.to_thread(lease.term)
        # Checked from here on, through the load too: a lease session silent for long is
        # taken for a stopped router's (lease.py). The load may block the loop for a while:
        # a check gets until a standby would take the session for a stopped router's.
        loading = asyncio.create_task(_keep_lease(lease, CHECK_SECONDS, STALLED_AFTER - 1), name="broker-lease")
        try:
            await asyncio.sleep(TAKEOVER_GRACE)
            router = new_router(new_store(lease.fence()), layer)
            await router.start()
            tune_garbage_collector()  # the loaded messages too
        finally:
            loading.cancel()
        try:
            # The load may have taken seconds: still the lease's holder before serving?
            await _check_lease(lease, 2 * CHECK_SECONDS)
            async with asyncio.TaskGroup() as group:
                group.create_task(Hub(router, link_traffic, term=term).run(), name="broker-hub")
                group.create_task(_keep_lease(lease, CHECK_SECONDS, 2 * CHECK_SECONDS), name="broker-lease")
        finally:
            await router.stop()
    finally:
        await asyncio.to_thread(lease.release)


async def _keep_lease(lease: RouterLease, every: float, deadline: float) -> None:
    while True:
        await asyncio.sleep(every)
        await _check_lease(lease, deadline)


async def _check_lease(lease: RouterLease, deadline: float) -> None:
    try:
        await within(asyncio.to_thread(lease.check), deadline)
    except Exception as error:
        # The lock may be someone else's by now: not one more commit as the router.
        log.critical("router lease lost (%r): stopping so that the standby takes over", error)
        logging.shutdown()
        os._exit(LEASE_LOST_EXIT)


_starting = asyncio.Lock()


async def _ensure(start: Callable[[], Awaitable[Router]]) -> Router:
    """This process's router, or what `start()` starts on the current loop; once per process."""
    found = registry.current()
    if found is not None:
        return found
    async with _starting:
        found = registry.current()
        return found if found is not None else await start()


class StartRouter:
    """ASGI middleware: start this process's router (or, with REDIS_URL, its cluster link) at
    the first connection, on the server's loop."""

    def __init__(self, app: Any, *, new_store: StoreFactory, layer: Callable[[], Any]) -> None:
        self.app = app
        self._new_store = new_store
        self._layer = layer
        self._cluster = bool(settings.REDIS_URL)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and registry.current() is None:
            await _ensure(self._start_link if self._cluster else self._start_router)
        await self.app(scope, receive, send)

    async def _start_router(self) -> Router:
        await asyncio.to_thread(hold_single_router_lock)
        start_memory_guard()
        router = new_router(self._new_store(None), self._layer())
        await router.start()
        return router

    async def _start_link(self) -> Router:
        start_memory_guard()
        link = EdgeLink(link_layer(self._layer(), settings.REDIS_URL))
        await link.start()
        await link.wait_for_router(1.0)  # a router that runs answers the hello at once
        return link
