"""Calls of the HTTP API and the admin on the router, wherever it runs.

In the router's process they run on its loop (`Runtime.call_threadsafe`); in
an edge process they travel to the router over the cluster link (issue 6).
So each call is a named op taking the runtime and plain values, and giving
back plain values (lists, dicts, numbers, strings) that survive the trip.
Apps register their ops with `router_op`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from broker.engine.errors import Unavailable
from broker.protocol.publish import PublishRequest
from broker.runtime.runtime import current_runtime

if TYPE_CHECKING:
    from broker.cluster.edge import EdgeLink

F = TypeVar("F", bound=Callable[..., Any])

ROUTER_OPS: dict[str, Callable[..., Any]] = {}


def router_op(name: str) -> Callable[[F], F]:
    def register(fn: F) -> F:
        ROUTER_OPS[name] = fn
        return fn

    return register


def router_reachable() -> bool:
    """Is there a router to call, here or over the link?"""
    if current_runtime() is not None:
        return True
    from broker.cluster.edge import current_link

    link = current_link()
    return link is not None and link.router_known


def call_router(op: str, *args: Any) -> Any:
    """Run the op on the router from a worker thread; `unavailable` when there is none."""
    runtime = current_runtime()
    if runtime is not None:
        return runtime.call_threadsafe(ROUTER_OPS[op], runtime, *args)
    link = _link()
    return link.run_threadsafe(link.call(op, *args))


def publish_on_router(request: PublishRequest) -> tuple[str, int]:
    """From a worker thread: (message_id, routed) once every durable copy is committed."""
    runtime = current_runtime()
    if runtime is not None:
        return runtime.call_threadsafe(runtime.publish, request)  # type: ignore[no-any-return]
    link = _link()
    return link.run_threadsafe(link.publish_wait(request))


async def publish_on_router_async(request: PublishRequest) -> tuple[str, int]:
    """`publish_on_router` for a coroutine: the wait for the commit holds no thread."""
    runtime = current_runtime()
    if runtime is not None:
        return await runtime.call_async(runtime.publish, request)  # type: ignore[no-any-return]
    link = _link()
    if link.loop is not asyncio.get_running_loop():
        raise Unavailable("the cluster link runs on another event loop")
    return await link.publish_wait(request)


def _link() -> EdgeLink:
    from broker.cluster.edge import current_link

    link = current_link()
    if link is None:
        raise Unavailable("the broker's router is not running")
    return link
