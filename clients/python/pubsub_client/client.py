"""`Client`: the asyncio API. Declarations, lists, get and purge over HTTP; publish and consume over WebSocket.

```python
async with connect("http://127.0.0.1:8060", token="…") as client:
    await client.declare_queue("work")
    await client.publish("", {"n": 1}, routing_key="work")
    async with client.consume("work", prefetch=10) as messages:
        async for message in messages:
            await message.ack()
```

The WebSocket opens on the first publish or consume (or `await client.open()`;
`connect()` opens it), and reconnects by itself (see `session.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Generator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .http import HttpApi
from .models import AckMode, Binding, Event, Exchange, Message, PublishResult, Queue
from .session import Session
from .subscription import Backoff, Subscription

DEFAULT_URL = "http://127.0.0.1:8060"


def split_url(url: str) -> tuple[str, str]:
    """(HTTP base URL, WebSocket URL) from either form: `http://host:8060` or `ws://host:8060/ws`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("ws", "wss"):
        http_scheme = "https" if scheme == "wss" else "http"
        ws_url = url
        path = parts.path[: -len("/ws")] if parts.path.endswith("/ws") else parts.path
        return urlunsplit((http_scheme, parts.netloc, path.rstrip("/"), "", "")), ws_url
    if scheme not in ("http", "https"):
        raise ValueError(f"the broker URL must start with http://, https://, ws:// or wss://, not {url!r}")
    base = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    ws_scheme = "wss" if scheme == "https" else "ws"
    return base, urlunsplit((ws_scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


class Client:
    """A connection to one broker. Use as `async with Client(url) as client:` or `await connect(url)`.

    `token` is sent as `Authorization: Bearer <token>` on every HTTP request and
    on the WebSocket handshake. `on_event` is called (on the event loop, never
    awaited) with each `Event`: disconnected, reconnected, resubscribed,
    republished, gave_up, and errors that no request waits for."""

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
        self.url, self.ws_url = split_url(url)
        self.http = HttpApi(self.url, token=token, timeout=http_timeout)
        self.session = Session(self.ws_url, token=token, backoff=backoff, on_event=on_event)
        self.publish_timeout = publish_timeout

    async def open(self) -> Client:
        """Open the WebSocket now rather than on first use (fails fast if the broker is away)."""
        await self.session.open()
        return self

    async def close(self) -> None:
        """Close both connections; publishes still waiting fail with `ClientClosed`."""
        await self.session.close()
        await self.http.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while the WebSocket is open and restored (False while reconnecting)."""
        return self.session.connected

    # -- exchanges -----------------------------------------------------------

    async def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> Exchange:
        """Create the exchange, or check that an identical one exists (`PreconditionFailed` if not)."""
        return await self.http.declare_exchange(
            name, type, durable=durable, auto_delete=auto_delete, arguments=arguments
        )

    async def delete_exchange(self, name: str) -> None:
        await self.http.delete_exchange(name)

    async def exchange(self, name: str) -> Exchange:
        """One exchange, with its `bindings`."""
        return await self.http.exchange(name)

    async def exchanges(self, *, name: str | None = None) -> list[Exchange]:
        """Every exchange; with `name`, those whose name contains it, in any case."""
        return await self.http.exchanges(name=name)

    # -- queues ----------------------------------------------------------------

    async def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> Queue:
        """Create the queue (`""`: the broker names it `amq.gen-…`), or check an identical one exists.

        `arguments`: `message_ttl`, `max_length`, `overflow`, `dead_letter_exchange`,
        `dead_letter_routing_key`, `expires` (docs/protocol.md)."""
        return await self.http.declare_queue(name, durable=durable, auto_delete=auto_delete, arguments=arguments)

    async def delete_queue(self, name: str) -> None:
        await self.http.delete_queue(name)

    async def queue(self, name: str) -> Queue:
        """One queue with its live counts."""
        return await self.http.queue(name)

    async def queues(self, *, name: str | None = None) -> list[Queue]:
        """Every queue with its live counts; with `name`, those whose name contains it, in
        any case (read from the broker a page at a time)."""
        return await self.http.queues(name=name)

    async def purge_queue(self, name: str) -> int:
        """Drop the queue's ready messages; returns how many."""
        return await self.http.purge_queue(name)

    async def get(self, queue: str, *, count: int = 1, ack: bool = True) -> list[Message]:
        """Take up to `count` messages over HTTP. With `ack=False` they stay at the head of the
        queue and come out next with `redelivered: true`."""
        return await self.http.get(queue, count=count, ack=ack)

    # -- bindings --------------------------------------------------------------

    async def bind(
        self, exchange: str, queue: str, binding_key: str = "", *, arguments: dict[str, Any] | None = None
    ) -> Binding:
        return await self.http.bind(exchange, queue, binding_key=binding_key, arguments=arguments)

    async def bind_exchange(
        self, source: str, destination: str, binding_key: str = "", *, arguments: dict[str, Any] | None = None
    ) -> Binding:
        """Bind the exchange `destination` to `source`: what `source` routes to it (by the
        binding key, or headers in `arguments`), `destination` routes on by its own bindings."""
        return await self.http.bind_exchange(source, destination, binding_key=binding_key, arguments=arguments)

    async def bindings(
        self, *, exchange: str | None = None, queue: str | None = None, destination_exchange: str | None = None
    ) -> list[Binding]:
        return await self.http.bindings(exchange=exchange, queue=queue, destination_exchange=destination_exchange)

    async def delete_binding(self, binding: Binding | int) -> None:
        await self.http.delete_binding(binding.id if isinstance(binding, Binding) else binding)

    # -- publishing ------------------------------------------------------------

    async def publish(
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
        """Publish and wait for the broker's confirm (the message is committed when it comes).

        `exchange` `""` is the default exchange (routing key = queue name). The
        message keeps one `message_id` (a uuid4 unless given) through every re-send,
        so a consumer can recognise a duplicate. An `unavailable` or `rate_limited` answer is retried
        after a backoff; any other error is raised as a `BrokerError`. `timeout`
        (default: the client's `publish_timeout`, None = no limit) raises
        `PublishTimeout`."""
        frame = self._publish_frame(exchange, body, routing_key, headers, persistent, message_id)
        return await self.session.publish(frame, timeout=self.publish_timeout if timeout is None else timeout)

    async def publish_nowait(
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
        """Fire and forget: send without asking for a confirm; returns the `message_id`.

        Waits for the connection if it is being re-established. A failure
        arrives later as an `Event` of kind `error` (nothing is re-sent)."""
        frame = self._publish_frame(exchange, body, routing_key, headers, persistent, message_id)
        await self.session.send(frame, timeout=timeout)
        return str(frame["message_id"])

    @staticmethod
    def _publish_frame(
        exchange: str,
        body: Any,
        routing_key: str,
        headers: dict[str, Any] | None,
        persistent: bool,
        message_id: str | None,
    ) -> dict[str, Any]:
        return {
            "type": "publish",
            "exchange": exchange,
            "routing_key": routing_key,
            "body": body,
            "headers": headers or {},
            "persistent": persistent,
            "message_id": message_id or str(uuid.uuid4()),
        }

    # -- consuming -------------------------------------------------------------

    async def subscribe(
        self,
        queue: str | None = None,
        *,
        exchange: str | None = None,
        binding_key: str = "",
        arguments: dict[str, Any] | None = None,
        ack: AckMode | str = AckMode.CLIENT,
        prefetch: int = 100,
        timeout: float | None = 30.0,
    ) -> Subscription:
        """Start consuming `queue`, or `exchange` through a private queue bound with `binding_key`
        (and `arguments`, for a headers exchange). Returns once the broker has subscribed.

        `ack="client"` (the default): each delivery must be `ack()`ed or `nack()`ed and at
        most `prefetch` wait unacknowledged; `ack="auto"`: the broker counts them acknowledged
        as it sends them. Raises `NotFound` etc. at once; after a reconnect the subscription
        is made again by itself."""
        if (queue is None) == (exchange is None):
            raise ValueError("give either a queue or an exchange")
        mode = AckMode(ack)
        frame: dict[str, Any] = {"type": "subscribe", "ack": mode.value, "prefetch": prefetch}
        if queue is not None:
            frame["queue"] = queue
        else:
            frame["exchange"] = exchange
            frame["binding_key"] = binding_key
            if arguments is not None:
                frame["arguments"] = arguments
        return await self.session.subscribe(frame, mode, timeout=timeout)

    def consume(
        self,
        queue: str | None = None,
        *,
        exchange: str | None = None,
        binding_key: str = "",
        arguments: dict[str, Any] | None = None,
        ack: AckMode | str = AckMode.CLIENT,
        prefetch: int = 100,
    ) -> _Consuming:
        """`subscribe` as a context manager: `async with client.consume("q") as messages:`;
        the subscription ends (unacknowledged deliveries requeued) when the block does."""
        return _Consuming(
            lambda: self.subscribe(
                queue, exchange=exchange, binding_key=binding_key, arguments=arguments, ack=ack, prefetch=prefetch
            )
        )

    async def ping(self) -> float:
        """Round trip over the WebSocket, in seconds."""
        return await self.session.ping()


class _Consuming:
    """What `Client.consume` returns: subscribes on entry, unsubscribes on exit."""

    def __init__(self, start: Callable[[], Awaitable[Subscription]]) -> None:
        self._start = start
        self._subscription: Subscription | None = None

    async def __aenter__(self) -> Subscription:
        self._subscription = await self._start()
        return self._subscription

    async def __aexit__(self, *exc_info: object) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()


class _Connect:
    """What `connect()` returns: await it, or use it as `async with connect(...) as client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._client.open().__await__()

    async def __aenter__(self) -> Client:
        return await self._client.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.close()


def connect(
    url: str = DEFAULT_URL,
    *,
    token: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    backoff: Backoff | None = None,
    http_timeout: float = 30.0,
    publish_timeout: float | None = None,
) -> _Connect:
    """A `Client` with its WebSocket open: `client = await connect(url)` or `async with connect(url) as client:`."""
    return _Connect(
        Client(
            url,
            token=token,
            on_event=on_event,
            backoff=backoff,
            http_timeout=http_timeout,
            publish_timeout=publish_timeout,
        )
    )
