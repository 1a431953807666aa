"""`LocalRouter`: the `Router` of the runtime in this process.

It turns the interface's calls into the runtime's and the runtime's answers
into the interface's callbacks. The cluster's hub serves the edges' connections
through one too, so a connection behaves the same on an edge as here.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from broker.engine.errors import BrokerError, NotFound
from broker.protocol.calls import RouterCall
from broker.protocol.client_frames import FrameId, SubscribeRequest
from broker.protocol.publish import PublishRequest
from broker.runtime.calls import execute
from broker.runtime.runtime import Runtime

from . import registry
from .interface import ConnectionSink, Publishing, SubscribeAnswer


class LocalRouter:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._sinks: dict[int, ConnectionSink] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self.runtime.loop

    @property
    def available(self) -> bool:
        return self.runtime.loop is not None

    @property
    def role(self) -> str:
        return "router"

    @property
    def store_reachable(self) -> bool | None:
        watch = self.runtime.store_watch
        return None if watch is None else watch.reachable

    async def start(self) -> None:
        """Start the runtime and serve this process's clients from it."""
        await self.runtime.start()
        registry.install(self, is_local=True)

    async def stop(self) -> None:
        registry.uninstall(self)
        await self.runtime.stop()

    # -- client connections ------------------------------------------------

    def connect(self, sink: ConnectionSink, *, first_tag: int = 1) -> int:
        """`first_tag`: a connection resumed from another router starts its tags there."""
        conn = self.runtime.connect(sink, first_tag=first_tag)
        self._sinks[conn] = sink
        return conn

    def disconnect(self, conn: int) -> None:
        self._sinks.pop(conn, None)
        self.runtime.disconnect(conn)

    def publish(self, conn: int, request: PublishRequest) -> Publishing:
        try:
            message_id, routed, committed = self.runtime.publish_nowait(request)
        except BrokerError as error:
            # Answered in its turn, after the connection's earlier publishes. Kept without
            # its traceback, which holds the frame and the stack that refused it.
            return Publishing("", 0, None, error=error.with_traceback(None))
        return Publishing(message_id, routed, committed)

    def subscribe(self, conn: int, request: SubscribeRequest, answer: SubscribeAnswer) -> None:
        try:
            self.runtime.subscribe(
                conn,
                subscription=request.key,
                subscription_json=request.subscription_json,
                ack_mode=request.ack,
                prefetch=request.prefetch,
                queue=request.queue,
                exchange=request.exchange,
                binding_key=request.binding_key,
                arguments=request.arguments,
                answered=lambda queue: answer(queue, None),
            )
        except BrokerError as error:
            answer(None, error)

    def restore(self, conn: int, *, watching: bool, subscriptions: list[SubscribeRequest]) -> None:
        """What a connection that lived on the previous router had, silently (it connected
        here with `first_tag` above its old tags); a subscription that cannot be restored
        is cancelled."""
        sink = self._sinks[conn]
        if watching:
            self.runtime.watch(conn, first_now=False)
        for request in subscriptions:
            def answered(queue: str | None, error: BrokerError | None, key: str = request.key) -> None:
                if error is not None:
                    sink.cancelled(key, error.message)

            self.subscribe(conn, request, answered)

    def unsubscribe(self, conn: int, key: str) -> None:
        try:
            self.runtime.unsubscribe(conn, key)
        except NotFound:
            pass  # the router ended it meanwhile (its queue went away): it has ended all the same
        finally:
            sink = self._sinks.get(conn)
            if sink is not None:
                sink.unsubscribed(key)

    def ack(self, conn: int, frame_id: FrameId | None, tag: int, *, multiple: bool) -> None:
        try:
            self.runtime.ack(conn, tag, multiple=multiple)
        except BrokerError as error:
            self._refused(conn, frame_id, error)

    def nack(self, conn: int, frame_id: FrameId | None, tag: int, *, multiple: bool, requeue: bool) -> None:
        try:
            self.runtime.nack(conn, tag, multiple=multiple, requeue=requeue)
        except BrokerError as error:
            self._refused(conn, frame_id, error)

    def _refused(self, conn: int, frame_id: FrameId | None, error: BrokerError) -> None:
        sink = self._sinks.get(conn)
        if sink is not None:
            sink.refused(frame_id, error)

    def watch(self, conn: int, watching: bool) -> None:
        if not watching:
            self.runtime.unwatch(conn)
            return
        self.runtime.watch(conn)

    def written(self, conn: int, batches: int) -> None:
        self.runtime.written(conn, batches)

    # -- the HTTP API and the admin ----------------------------------------

    async def publish_and_wait(self, request: PublishRequest) -> tuple[str, int]:
        return await self.runtime.publish(request)

    def outbox_written(self) -> None:
        self.runtime.outbox_written()

    async def call(self, call: RouterCall) -> Any:
        result = execute(self.runtime, call)
        return await result if inspect.isawaitable(result) else result
