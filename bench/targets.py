"""What the scenarios run against: our broker, RabbitMQ Web-STOMP, or the ceiling server.

A `Target` gives the scenarios a dialect, URLs, the names to publish to and
subscribe from, the server process whose CPU and memory are measured, and
the few set-up calls (declare a queue, a fanout exchange) each broker needs.
Ours is spoken to in our JSON frames or, with `--protocol stomp`, in the STOMP
frames RabbitMQ gets, to the same destinations (`/amq/queue/NAME`, `/exchange/NAME`).
A cluster of ours is one target too: publishers reach it through one edge,
subscribers through another, and its CPU is that of every node.
"""

from __future__ import annotations

import base64
import urllib.parse
from dataclasses import dataclass, field
from typing import Final

import httpx
import orjson
import psutil

from .dialects import Dialect, OursDialect, StompDialect, body_text
from .processes import OurBroker

HTTP_TIMEOUT: Final = 10.0
# What our side's WebSocket clients speak (`--protocol`); RabbitMQ's always speak STOMP.
PROTOCOLS: Final = ("json", "stomp")


@dataclass
class HttpPublish:
    """A keep-alive HTTP publish: host, port and the pre-encoded request."""

    host: str
    port: int
    request: bytes


@dataclass
class Target:
    kind: str  # "ours", "rabbitmq", "ceiling-ours", "ceiling-stomp"
    dialect: Dialect
    ws_url: str
    process: psutil.Process | None  # a cluster's router
    http_base: str | None = None
    management: str | None = None  # RabbitMQ management API base, when enabled
    auth: tuple[str, str] = ("guest", "guest")
    created_queues: list[str] = field(default_factory=list)
    # A cluster's other nodes by name (its edges): their CPU counts with `process`'s.
    peers: dict[str, psutil.Process] = field(default_factory=dict)
    # Where publishers connect, when not at `ws_url` (a cluster: another edge than the subscribers').
    publish_ws_url: str | None = None
    # Processes the server needs that are not the broker's (a cluster's Redis): their
    # CPU is neither counted as the server's nor as other programs' load.
    support: list[psutil.Process] = field(default_factory=list)

    @property
    def is_ceiling(self) -> bool:
        return self.kind.startswith("ceiling")

    @property
    def servers(self) -> list[psutil.Process]:
        """Every process of the server under test, whose CPU a window sums."""
        return ([self.process] if self.process is not None else []) + list(self.peers.values())

    @property
    def publisher_url(self) -> str:
        return self.publish_ws_url or self.ws_url

    def queue_destination(self, queue: str) -> str:
        return f"/amq/queue/{queue}" if self.dialect.name == "stomp" else f"/{queue}"

    def fanout_name(self, suffix: str) -> str:
        # RabbitMQ's built-in amq.fanout, unused by anything else here; ours refuses amq. names.
        return "amq.fanout" if self.kind == "rabbitmq" else f"bench.fanout.{suffix}"

    def fanout_destination(self, exchange: str) -> str:
        return f"/exchange/{exchange}" if self.dialect.name == "stomp" else f"{exchange}/"

    async def declare_queue(self, name: str, *, lazy: bool = False) -> None:
        """A durable queue, empty; `lazy`: RabbitMQ's with x-queue-mode lazy (ours keeps a
        window in memory whatever it is declared with)."""
        if self.kind == "ours":
            async with httpx.AsyncClient(base_url=self.http_base or "", timeout=HTTP_TIMEOUT) as client:
                reply = await client.post("/api/queues/", json={"name": name, "durable": True})
                reply.raise_for_status()
        elif self.kind == "rabbitmq":
            await self._rabbit_declare(name, {"x-queue-mode": "lazy"} if lazy else {})
        self.created_queues.append(name)

    async def declare_fanout(self, name: str) -> None:
        if self.kind == "ours":
            async with httpx.AsyncClient(base_url=self.http_base or "", timeout=HTTP_TIMEOUT) as client:
                reply = await client.post("/api/exchanges/", json={"name": name, "type": "fanout", "durable": True})
                reply.raise_for_status()

    async def _rabbit_declare(self, name: str, arguments: dict[str, str]) -> None:
        if self.management:
            async with httpx.AsyncClient(auth=self.auth, timeout=HTTP_TIMEOUT) as client:
                url = f"{self.management}/api/queues/%2F/{urllib.parse.quote(name, safe='')}"
                reply = await client.put(url, json={"durable": True, "auto_delete": False, "arguments": arguments})
                reply.raise_for_status()
            return
        # Without the management plugin: a SUBSCRIBE to /queue/<name> declares it durable.
        ws = await self.dialect.open(self.ws_url)
        try:
            extra = "".join(f"{key}:{value}\n" for key, value in arguments.items())
            await ws.send(f"SUBSCRIBE\nid:d\ndestination:/queue/{name}\nreceipt:decl\n{extra}\n\x00")
            while not str(await ws.recv()).startswith("RECEIPT"):
                pass
            await ws.send("UNSUBSCRIBE\nid:d\nreceipt:undecl\n\n\x00")
            while not str(await ws.recv()).startswith("RECEIPT"):
                pass
        finally:
            await ws.close()

    async def cleanup(self) -> None:
        """Delete the queues this run declared (ours is thrown away with its database anyway)."""
        if self.kind == "rabbitmq" and self.management:
            async with httpx.AsyncClient(auth=self.auth, timeout=HTTP_TIMEOUT) as client:
                for name in self.created_queues:
                    await client.delete(f"{self.management}/api/queues/%2F/{urllib.parse.quote(name, safe='')}")
        self.created_queues.clear()

    def http_publish(self, queue: str) -> HttpPublish | None:
        """The pre-encoded keep-alive request that publishes one persistent message to `queue`."""
        if self.kind == "rabbitmq":
            if not self.management:
                return None
            path = "/api/exchanges/%2F/amq.default/publish"
            payload = orjson.dumps(
                {"properties": {"delivery_mode": 2}, "routing_key": queue, "payload": body_text(), "payload_encoding": "string"}
            )
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            extra = f"authorization: Basic {token}\r\n"
            base: str | None = self.management
        else:
            path = "/api/exchanges/amq.default/publish/"
            payload = b'{"routing_key":"' + queue.encode() + b'","persistent":true,"body":' + body_text().encode() + b"}"
            extra = ""
            base = self.http_base
        if base is None:
            return None
        parsed = urllib.parse.urlsplit(base)
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {parsed.hostname}:{parsed.port}\r\ncontent-type: application/json\r\n"
            f"{extra}content-length: {len(payload)}\r\n\r\n"
        )
        return HttpPublish(str(parsed.hostname), int(parsed.port or 80), head.encode() + payload)


def ours_dialect(protocol: str) -> Dialect:
    """Our broker's dialect for `--protocol`: our JSON frames, or on the same /ws the
    STOMP frames RabbitMQ's side gets (subprotocol v12.stomp), without login and passcode."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    return StompDialect.anonymous() if protocol == "stomp" else OursDialect()


def ours(ws_url: str, http_base: str, process: psutil.Process | None, *, protocol: str = "json") -> Target:
    return Target("ours", ours_dialect(protocol), ws_url, process, http_base=http_base)


def cluster(
    router: OurBroker, publish_edge: OurBroker, subscribe_edge: OurBroker, redis: psutil.Process | None, *, protocol: str = "json"
) -> Target:
    """Ours as a cluster; its set-up calls (declarations) go through the publishers' edge."""
    peers = {edge.name: edge.ps for edge in (publish_edge, subscribe_edge) if edge.ps is not None}
    return Target(
        "ours",
        ours_dialect(protocol),
        subscribe_edge.ws_url,
        router.ps,
        http_base=publish_edge.url,
        peers=peers,
        publish_ws_url=publish_edge.ws_url,
        support=[redis] if redis is not None else [],
    )


def rabbitmq(ws_url: str, management: str | None, process: psutil.Process | None) -> Target:
    return Target("rabbitmq", StompDialect(), ws_url, process, management=management)


def ceiling(dialect: str, ws_port: int, http_port: int, process: psutil.Process | None) -> Target:
    chosen: Dialect = OursDialect() if dialect == "ours" else StompDialect()
    return Target(f"ceiling-{dialect}", chosen, f"ws://127.0.0.1:{ws_port}/ws", process, http_base=f"http://127.0.0.1:{http_port}")
