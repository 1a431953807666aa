"""Two brokers behind one small interface, so that a scenario runs against both: ours (the
real `runbroker`, its HTTP API and STOMP over TCP) and the real RabbitMQ (AMQP through
pika, STOMP through its `rabbitmq_stomp` plugin).

Each side is driven the way its users drive it: topology and publishes through ours' HTTP
API and RabbitMQ's AMQP, consumers over STOMP on both. Names are made unique per test,
and what a test declares on RabbitMQ is deleted after it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import pika
import pika.exceptions

from tests.e2e.harness import BrokerProcess
from tests.e2e.test_stomp_e2e import Client as StompClient

RABBITMQ_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
RABBITMQ_STOMP_PORT = 61613


@dataclass(frozen=True)
class Got:
    """A message taken from a queue."""

    body: str
    headers: dict[str, Any]
    redelivered: bool


class Target(Protocol):
    name: str

    def unique(self, name: str) -> str: ...

    def declare_exchange(self, name: str, type: str, arguments: dict[str, Any] | None = None) -> None: ...

    def declare_queue(self, name: str, arguments: dict[str, Any] | None = None) -> None: ...

    def bind(self, exchange: str, queue: str, key: str = "") -> None: ...

    def bind_exchange(self, source: str, destination: str, key: str = "") -> None:
        """Bind `destination`, an exchange, to `source` (RabbitMQ's exchange.bind)."""

    def delete_exchange(self, name: str) -> None: ...

    def publish(
        self, exchange: str, key: str, body: str, *, expiration: str | None = None, priority: int | None = None
    ) -> bool:
        """Publish with confirms, persistent; True when confirmed, False when refused (nack)."""

    def get(self, queue: str, count: int = 100) -> list[Got]:
        """Take up to `count` ready messages (acknowledged)."""

    def ready(self, queue: str) -> int: ...

    async def stomp(self) -> StompClient:
        """A STOMP 1.2 client over TCP, connected."""

    def close(self) -> None: ...


@dataclass
class Ours:
    broker: BrokerProcess
    name: str = "ours"
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.broker.url, timeout=10)

    def unique(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def _ok(self, answer: httpx.Response) -> None:
        assert answer.status_code in (200, 201), answer.text

    def declare_exchange(self, name: str, type: str, arguments: dict[str, Any] | None = None) -> None:
        self._ok(self.http.post("/api/exchanges/", json={"name": name, "type": type, "arguments": arguments or {}}))

    def declare_queue(self, name: str, arguments: dict[str, Any] | None = None) -> None:
        self._ok(self.http.post("/api/queues/", json={"name": name, "durable": True, "arguments": arguments or {}}))

    def bind(self, exchange: str, queue: str, key: str = "") -> None:
        self._ok(self.http.post("/api/bindings/", json={"exchange": exchange, "queue": queue, "binding_key": key}))

    def bind_exchange(self, source: str, destination: str, key: str = "") -> None:
        binding = {"exchange": source, "destination_exchange": destination, "binding_key": key}
        self._ok(self.http.post("/api/bindings/", json=binding))

    def delete_exchange(self, name: str) -> None:
        assert self.http.delete(f"/api/exchanges/{name}/").status_code == 204

    def publish(
        self, exchange: str, key: str, body: str, *, expiration: str | None = None, priority: int | None = None
    ) -> bool:
        # A text body, as the AMQP publisher's: bytes on the wire to STOMP subscribers, not JSON.
        headers: dict[str, Any] = {"body-encoding": "text"}
        if expiration is not None:
            headers["expiration"] = expiration
        if priority is not None:
            headers["priority"] = priority
        answer = self.http.post(
            f"/api/exchanges/{exchange or 'amq.default'}/publish/",
            json={"routing_key": key, "body": body, "headers": headers, "persistent": True},
        )
        if answer.status_code == 409 and answer.json()["error"]["code"] == "queue_full":
            return False
        self._ok(answer)
        return True

    def get(self, queue: str, count: int = 100) -> list[Got]:
        answer = self.http.post(f"/api/queues/{queue}/get/", json={"count": count})
        self._ok(answer)
        return [Got(m["body"], m["headers"], m["redelivered"]) for m in answer.json()]

    def ready(self, queue: str) -> int:
        return int(self.http.get(f"/api/queues/{queue}/").json()["messages_ready"])

    async def stomp(self) -> StompClient:
        client = await StompClient.open(int(self.broker.env["STOMP_PORT"]))
        connected = await client.connect()
        assert connected.command == "CONNECTED", connected
        return client

    def close(self) -> None:
        self.http.close()


@dataclass
class RabbitMQ:
    name: str = "rabbitmq"
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    declared: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_AMQP))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def unique(self, name: str) -> str:
        return f"parity.{self.prefix}.{name}"

    def declare_exchange(self, name: str, type: str, arguments: dict[str, Any] | None = None) -> None:
        self.channel.exchange_declare(name, type, durable=True, arguments=arguments)
        self.declared.append(("exchange", name))

    def declare_queue(self, name: str, arguments: dict[str, Any] | None = None) -> None:
        self.channel.queue_declare(name, durable=True, arguments=arguments)
        self.declared.append(("queue", name))

    def bind(self, exchange: str, queue: str, key: str = "") -> None:
        self.channel.queue_bind(queue, exchange, key)

    def bind_exchange(self, source: str, destination: str, key: str = "") -> None:
        self.channel.exchange_bind(destination, source, key)

    def delete_exchange(self, name: str) -> None:
        self.channel.exchange_delete(name)

    def publish(
        self, exchange: str, key: str, body: str, *, expiration: str | None = None, priority: int | None = None
    ) -> bool:
        properties = pika.BasicProperties(delivery_mode=2, expiration=expiration, priority=priority)
        try:
            self.channel.basic_publish(exchange, key, body.encode(), properties)
        except pika.exceptions.NackError:
            return False
        return True

    def get(self, queue: str, count: int = 100) -> list[Got]:
        got: list[Got] = []
        while len(got) < count:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            headers = {k: _text(v) for k, v in (properties.headers or {}).items()}
            got.append(Got(body.decode(), headers, bool(method.redelivered)))
        return got

    def ready(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    async def stomp(self) -> StompClient:
        client = await StompClient.open(RABBITMQ_STOMP_PORT)
        connected = await client.connect(login="guest", passcode="guest")
        assert connected.command == "CONNECTED", connected
        return client

    def close(self) -> None:
        try:
            channel = self.connection.channel()
            for kind, name in reversed(self.declared):
                if kind == "queue":
                    channel.queue_delete(name)
                else:
                    channel.exchange_delete(name)
        finally:
            self.connection.close()


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_text(item) for item in value]
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    return value
