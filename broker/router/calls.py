"""Calls on the router from Django code: typed, wherever the router runs.

Views, the admin, services and signal handlers run in worker threads; these
functions carry their call to the router's event loop (this process's router,
or the cluster link to another's), wait for the answer, and give it back typed.
`unavailable` when there is no router to ask, or it does not answer in time.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final, TypeVar

from broker.engine.broker import QueueCounts
from broker.engine.errors import ResourceLimit, Unavailable
from broker.protocol.calls import (
    QueueActCall,
    QueueBrowseCall,
    QueueCountsCall,
    QueueGetCall,
    QueueInfosCall,
    QueueIsPrivateCall,
    QueueListedCall,
    QueueNamesCall,
    QueueOriginsCall,
    QueuePurgeCall,
    QueueRedeclaredCall,
    QueueSnapshotCall,
    RouterCall,
    TopologyCall,
)
from broker.protocol.publish import PublishRequest
from broker.protocol.server_frames import MessageObject
from broker.protocol.topology import TopologyChange, encode_change
from broker.runtime import memory
from broker.runtime.timeouts import within

from . import registry
from .interface import Router

T = TypeVar("T")

# Long enough for a commit under load or an answer over the link (whose own
# timeout is 30 s), short enough that a stuck router shows.
CALL_TIMEOUT: Final = 31.0


def router_reachable() -> bool:
    """Is there a router to call, here or over the link?"""
    router = registry.current()
    return router is not None and router.available


def _router() -> Router:
    router = registry.current()
    if router is None:
        raise Unavailable("the broker's router is not running")
    return router


def on_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `fn(*args, **kwargs)` (a plain or a coroutine function) on `loop` from another
    thread; its result."""
    if loop is None or loop.is_closed():
        raise Unavailable("the broker's router is not running")
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise Unavailable("the broker's router cannot be waited for on its own event loop")

    async def run() -> Any:
        result = fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    future = asyncio.run_coroutine_threadsafe(run(), loop)
    try:
        return future.result(CALL_TIMEOUT)
    except FutureTimeout:
        future.cancel()
        raise Unavailable("the broker's router did not answer in time") from None


def call_router(call: RouterCall) -> Any:
    """Carry out `call` on the router, from a worker thread; its plain result."""
    router = _router()
    return on_loop(router.loop, router.call, call)


def queue_counts(names: list[str]) -> dict[str, QueueCounts]:
    """Live counts of the named queues the router knows."""
    found = call_router(QueueCountsCall(names))
    return {name: QueueCounts(*counts) for name, counts in found.items()}


def queue_snapshot(names: list[str]) -> tuple[dict[str, QueueCounts], list[dict[str, Any]]]:
    """Live counts of the named queues, and every private queue (its fields as a dict)."""
    counts, private = call_router(QueueSnapshotCall(names))
    return {name: QueueCounts(*found) for name, found in counts.items()}, list(private)


def queue_infos(names: list[str]) -> tuple[dict[str, QueueCounts], list[dict[str, Any]]]:
    """Live counts of the named queues, and the private ones among them (as dicts)."""
    counts, private = call_router(QueueInfosCall(names))
    return {name: QueueCounts(*found) for name, found in counts.items()}, list(private)


def private_queue_names(contains: str) -> tuple[int, list[str]]:
    """How many private queues there are, and the names of those whose name contains
    `contains` ignoring case (all of them for ""), sorted."""
    total, names = call_router(QueueNamesCall(contains))
    return int(total), list(names)


def listed_queues() -> list[dict[str, Any]]:
    """The queues a `stats` frame lists now (broker/runtime/stats.py), as dicts."""
    return list(call_router(QueueListedCall()))


def queue_is_private(name: str) -> bool:
    return bool(call_router(QueueIsPrivateCall(name)))


def queue_redeclared(name: str, row_id: int) -> bool:
    """Is queue `name`, found stored in row `row_id`, one the router deleted by itself
    (its row still to be deleted)? If not, the declaration counts as a use of it."""
    return bool(call_router(QueueRedeclaredCall(name, row_id)))


def queue_purge(name: str) -> int:
    return int(call_router(QueuePurgeCall(name)))


def queue_get(name: str, *, count: int, ack: bool) -> list[MessageObject]:
    messages: list[MessageObject] = call_router(QueueGetCall(name, count, ack))
    return messages


def queue_browse(name: str, wanted: dict[str, Any] | None, *, offset: int, limit: int) -> dict[str, Any]:
    page: dict[str, Any] = call_router(QueueBrowseCall(name, wanted, offset, limit))
    return page


def queue_origins(name: str, ids: list[str] | None, wanted: dict[str, Any] | None) -> list[str]:
    return list(call_router(QueueOriginsCall(name, ids, wanted)))


def queue_act(
    name: str,
    action: str,
    *,
    ids: list[str] | None,
    wanted: dict[str, Any] | None,
    exchange: str = "",
    routing_key: str = "",
    allowed: list[str] | None = None,
) -> dict[str, int | bool]:
    done: dict[str, int | bool] = call_router(QueueActCall(name, action, ids, wanted, exchange, routing_key, allowed))
    return done


def topology_apply(change: TopologyChange) -> None:
    call_router(TopologyCall(encode_change(change)))


def outbox_written() -> None:
    """This process committed outbox rows: wake the router if it runs here. Any thread."""
    router = registry.current()
    if router is not None:
        router.outbox_written()


def _check_memory() -> None:
    """Over the memory limit, a publish over HTTP is refused, not held (docs/protocol.md,
    "Memory and flow control")."""
    guard = memory.guard()
    if guard is not None and guard.alarm:
        raise ResourceLimit("the broker is over its memory limit: publish again shortly")


def publish(request: PublishRequest) -> tuple[str, int]:
    """From a worker thread: (message_id, routed) once every durable copy is committed."""
    _check_memory()
    router = _router()
    result: tuple[str, int] = on_loop(router.loop, router.publish_and_wait, request)
    return result


async def publish_async(request: PublishRequest) -> tuple[str, int]:
    """`publish` for a coroutine: the wait for the commit holds no thread."""
    _check_memory()
    router = _router()
    loop = router.loop
    if loop is None or loop.is_closed():
        raise Unavailable("the broker's router is not running")
    if loop is asyncio.get_running_loop():
        return await router.publish_and_wait(request)
    future = asyncio.run_coroutine_threadsafe(router.publish_and_wait(request), loop)
    try:
        return await within(asyncio.wrap_future(future), CALL_TIMEOUT)
    except TimeoutError:
        raise Unavailable("the broker's router did not answer in time") from None
