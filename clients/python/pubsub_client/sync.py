"""`SyncClient`: the asyncio `Client` driven from blocking code.

A private event loop runs in a daemon thread; each method hands its coroutine
to that loop and waits for the result. Reconnection, resubscription and
re-sending happen on that loop while the caller's thread does other work.

```python
with SyncClient("http://127.0.0.1:8060") as client:
    client.publish("", {"n": 1}, routing_key="work")
    with client.consume("work") as messages:
        for message in messages:
            message.ack()
```
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from .client import DEFAULT_URL, Client
from .errors import ClientClosed
from .models import AckMode, Binding, Event, Exchange, Message, PublishResult, Queue
from .subscription import Backoff, Delivery, Subscription

T = TypeVar("T")


async def _cancel_the_others() -> None:
    """Cancel every task of the loop but this one, and wait for them to end."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


class SyncClient:
    """The same operations as `Client`, blocking. Close it (or use `with`) to stop its thread."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        on_event: Callable[[Event], None] | None = None,
        backoff: Backoff | None = None,
        http_timeout: float = 30.0,
        publish_timeout: float | None = None,
    ) -> None:
        """`on_event` runs on the client's thread: keep it short and thread-safe, and make no
        call of this client from it (RuntimeError: it would wait for ever)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pubsub-client", daemon=True)
        self._thread.start()

        async def make() -> Client:
            return Client(
                url,
                token=token,
                on_event=on_event,
                backoff=backoff,
                http_timeout=http_timeout,
                publish_timeout=publish_timeout,
            )

        # `_closed` is set, and calls are handed to the loop, under `_lock`: a call either
        # reaches the loop before `close()` cancels what is left there, or is refused.
        self._lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._closed_event = threading.Event()  # set once close() is done
        try:
            self._client = self._run(make())
        except BaseException:  # a bad URL, say: no thread left behind
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a SyncClient call from its own thread (an on_event callback, say) would wait for ever: "
                "hand the work to another thread"
            )
        with self._lock:
            if self._closed:
                coro.close()
                raise ClientClosed("the client is closed")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.CancelledError:
            if self._closed:  # `close()` ended the call, from another thread
                raise ClientClosed("the client was closed while the call waited") from None
            raise
        except BaseException:
            # The caller stopped waiting (Ctrl-C, the timeout): the call goes no further.
            future.cancel()
            raise

    @property
    def client(self) -> Client:
        """The asyncio client underneath (its coroutines must run on this client's loop)."""
        return self._client

    def open(self) -> SyncClient:
        """Open the WebSocket now rather than on first use."""
        self._run(self._client.open())
        return self

    def close(self) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a SyncClient cannot be closed from its own thread (an on_event callback, say)")
        with self._lock:
            closing, self._closing = self._closing, True
        if closing:  # another thread's close(): returns once it is done, as this one would
            self._closed_event.wait()
            return
        try:
            self._run(self._client.close(), timeout=15)
        finally:
            # Calls other threads still wait for (an HTTP request, a subscription's next
            # delivery...) end with ClientClosed: with the loop stopped they would wait for ever.
            with self._lock:
                self._closed = True
            with contextlib.suppress(BaseException):
                asyncio.run_coroutine_threadsafe(_cancel_the_others(), self._loop).result(5)
            try:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5)
                if not self._thread.is_alive():
                    self._loop.close()
            finally:
                self._closed_event.set()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._client.connected

    # -- HTTP operations -----------------------------------------------------

    def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> Exchange:
        return self._run(
            self._client.declare_exchange(name, type, durable=durable, auto_delete=auto_delete, arguments=arguments)
        )

    def delete_exchange(self, name: str) -> None:
        self._run(self._client.delete_exchange(name))

    def exchange(self, name: str) -> Exchange:
        return self._run(self._client.exchange(name))

    def exchanges(self, *, name: str | None = None) -> list[Exchange]:
        return self._run(self._client.exchanges(name=name))

    def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> Queue:
        return self._run(
            self._client.declare_queue(name, durable=durable, auto_delete=auto_delete, arguments=arguments)
        )

    def delete_queue(self, name: str) -> None:
        self._run(self._client.delete_queue(name))

    def queue(self, name: str) -> Queue:
        return self._run(self._client.queue(name))

    def queues(self, *, name: str | None = None) -> list[Queue]:
        return self._run(self._client.queues(name=name))

    def purge_queue(self, name: str) -> int:
        return self._run(self._client.purge_queue(name))

    def get(self, queue: str, *, count: int = 1, ack: bool = True) -> list[Message]:
        return self._run(self._client.get(queue, count=count, ack=ack))

    def bind(
        self, exchange: str, queue: str, binding_key: str = "", *, arguments: dict[str, Any] | None = None
    ) -> Binding:
        return self._run(self._client.bind(exchange, queue, binding_key, arguments=arguments))

    def bind_exchange(
        self, source: str, destination: str, binding_key: str = "", *, arguments: dict[str, Any] | None = None
    ) -> Binding:
        return self._run(self._client.bind_exchange(source, destination, binding_key, arguments=arguments))

    def bindings(
        self, *, exchange: str | None = None, queue: str | None = None, destination_exchange: str | None = None
    ) -> list[Binding]:
        return self._run(
            self._client.bindings(exchange=exchange, queue=queue, destination_exchange=destination_exchange)
        )

    def delete_binding(self, binding: Binding | int) -> None:
        self._run(self._client.delete_binding(binding))

    # -- WebSocket operations --------------------------------------------------

    def publish(
        self,
        exchange: str,
        body: Any,
        *,
        routing_key: str = "",
        headers: dict[str, Any] | None = None,
        persistent: bool = True,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult:
        """Publish and block until confirmed (see `Client.publish`)."""
        return self._run(
            self._client.publish(
                exchange,
                body,
                routing_key=routing_key,
                headers=headers,
                persistent=persistent,
                message_id=message_id,
                timeout=timeout,
            )
        )

    def publish_nowait(
        self,
        exchange: str,
        body: Any,
        *,
        routing_key: str = "",
        headers: dict[str, Any] | None = None,
        persistent: bool = True,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Fire and forget; returns the `message_id`. `timeout`: how long to wait for a
        connection being re-established (`ConnectionFailed` after it); None, as long as it takes."""
        return self._run(
            self._client.publish_nowait(
                exchange, body, routing_key=routing_key, headers=headers, persistent=persistent,
                message_id=message_id, timeout=timeout,
            )
        )

    def subscribe(
        self,
        queue: str | None = None,
        *,
        exchange: str | None = None,
        binding_key: str = "",
        arguments: dict[str, Any] | None = None,
        ack: AckMode | str = AckMode.CLIENT,
        prefetch: int = 100,
    ) -> SyncSubscription:
        """Start consuming (see `Client.subscribe`); iterate the result, `cancel()` it when done."""
        subscription = self._run(
            self._client.subscribe(
                queue, exchange=exchange, binding_key=binding_key, arguments=arguments, ack=ack, prefetch=prefetch
            )
        )
        return SyncSubscription(self, subscription)

    # `consume` is `subscribe`: the subscription is itself a context manager.
    consume = subscribe

    def ping(self) -> float:
        return self._run(self._client.ping())


class SyncSubscription:
    """Iterate it for `SyncDelivery` objects; `with` ends the subscription on exit."""

    def __init__(self, owner: SyncClient, subscription: Subscription) -> None:
        self._owner = owner
        self.subscription = subscription

    @property
    def queue(self) -> str:
        return self.subscription.queue

    def get(self, timeout: float | None = None) -> SyncDelivery | None:
        """The next delivery; None after `timeout` seconds or once the subscription has ended."""
        delivery = self._owner._run(self.subscription.next(timeout))
        return None if delivery is None else SyncDelivery(self._owner, delivery)

    def __iter__(self) -> Iterator[SyncDelivery]:
        while (delivery := self.get()) is not None:
            yield delivery

    def cancel(self) -> None:
        self._owner._run(self.subscription.cancel())

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class SyncDelivery:
    """A delivered message, with blocking `ack()` and `nack()`; `message` is the asyncio one."""

    def __init__(self, owner: SyncClient, message: Delivery) -> None:
        self._owner = owner
        self.message = message

    @property
    def message_id(self) -> str:
        return self.message.message_id

    @property
    def exchange(self) -> str:
        return self.message.exchange

    @property
    def routing_key(self) -> str:
        return self.message.routing_key

    @property
    def body(self) -> Any:
        return self.message.body

    @property
    def headers(self) -> dict[str, Any]:
        return self.message.headers

    @property
    def redelivered(self) -> bool:
        return self.message.redelivered

    @property
    def delivery_tag(self) -> int:
        return self.message.delivery_tag

    def to_json(self) -> dict[str, Any]:
        return self.message.to_json()

    def ack(self) -> None:
        self._owner._run(self.message.ack())

    def nack(self, *, requeue: bool = True) -> None:
        self._owner._run(self.message.nack(requeue=requeue))

    def __repr__(self) -> str:
        return f"Sync{self.message!r}"
