"""STOMP through an edge of a cluster (docs/protocol.md, "STOMP"): an edge serves STOMP
over its WebSocket and its own STOMP_PORT, and its clients reach the router's queues
as the JSON frames do; deliveries cross the link as `message` frames and become
MESSAGE frames at the edge."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect

from broker.protocol.stomp_frames import StompFrame, StompParser, encode_frame
from tests.e2e.harness import free_port
from tests.eventually import eventually
from tests.integration.cluster_harness import Cluster, role

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


class TcpStomp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = StompParser(max_frame_bytes=1 << 24)
        self.pending: list[StompFrame] = []

    async def send(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        self.writer.write(encode_frame(command, headers, body))
        await self.writer.drain()

    async def receive(self) -> StompFrame:
        while not self.pending:
            chunk = await asyncio.wait_for(self.reader.read(65536), 10)
            assert chunk, "the edge closed the connection"
            self.pending.extend(self.parser.feed(chunk))
        return self.pending.pop(0)


async def test_stomp_clients_of_an_edge_publish_and_consume_through_the_router(cluster: Cluster) -> None:
    router = cluster.node("router")
    stomp_port = free_port()
    edge = cluster.node("edge", edge=True, env={"STOMP_PORT": str(stomp_port)})
    await eventually(lambda: role(router) == "router", timeout=20, what="the router leads")
    async with httpx.AsyncClient(base_url=router.url, timeout=10) as http:
        assert (await http.post("/api/queues/", json={"name": "edge-work"})).status_code == 201

    async with connect(edge.ws_url, subprotocols=["v12.stomp"]) as ws:  # type: ignore[list-item]
        parser = StompParser(max_frame_bytes=1 << 24)
        pending: list[StompFrame] = []

        async def ws_receive() -> StompFrame:
            while not pending:
                message = await asyncio.wait_for(ws.recv(), 10)
                pending.extend(parser.feed(message if isinstance(message, bytes) else message.encode()))
            return pending.pop(0)

        await ws.send(encode_frame("CONNECT", {"accept-version": "1.2", "host": "/"}).decode())
        assert (await ws_receive()).command == "CONNECTED"
        await ws.send(encode_frame("SUBSCRIBE", {
            "id": "w", "destination": "/amq/queue/edge-work", "ack": "client", "receipt": "sub",
        }).decode())
        assert (await ws_receive()).headers["receipt-id"] == "sub"

        tcp = TcpStomp(*await asyncio.open_connection("127.0.0.1", stomp_port))
        await tcp.send("CONNECT", {"accept-version": "1.2", "host": "/"})
        assert (await tcp.receive()).command == "CONNECTED"
        bodies = [b'{"n": 1}', b"plain text", b"\x00\x01\xfe"]
        types = ["application/json", "text/plain", "application/octet-stream"]
        for n, (body, content_type) in enumerate(zip(bodies, types, strict=True)):
            await tcp.send("SEND", {
                "destination": "/queue/edge-work", "persistent": "true", "receipt": f"p{n}",
                "content-type": content_type, "trace": f"t{n}",
            }, body)
        assert [(await tcp.receive()).headers.get("receipt-id") for _ in bodies] == ["p0", "p1", "p2"]

        frames = [await ws_receive() for _ in bodies]
        assert [frame.body for frame in frames] == [b'{"n":1}', b"plain text", b"\x00\x01\xfe"]
        assert [frame.headers["content-type"] for frame in frames] == types
        assert [frame.headers["trace"] for frame in frames] == ["t0", "t1", "t2"]
        assert {frame.headers["subscription"] for frame in frames} == {"w"}
        assert not any("x-delivery-count" in frame.headers for frame in frames)
        await ws.send(encode_frame("NACK", {"id": frames[0].headers["ack"]}).decode())  # requeued to the head
        again = await ws_receive()
        assert (again.body, again.headers["redelivered"], again.headers["x-delivery-count"]) == (b'{"n":1}', "true", "1")
        await ws.send(encode_frame("ACK", {"id": again.headers["ack"], "receipt": "acked"}).decode())
        assert (await ws_receive()).headers["receipt-id"] == "acked"

        async def settled() -> bool:
            async with httpx.AsyncClient(base_url=edge.url, timeout=10) as http:
                queue = (await http.get("/api/queues/edge-work/")).json()
            return bool(queue["messages"] == 0)

        await eventually(settled, timeout=10, what="the cumulative ACK settles all three")

        # Its id used again right after its UNSUBSCRIBE, with no receipt waited for: the router
        # answers the unsubscribe over the link later, and the SUBSCRIBE waits for it (it was
        # refused as a subscription that exists already).
        await ws.send(encode_frame("UNSUBSCRIBE", {"id": "w", "receipt": "gone"}).decode())
        await ws.send(encode_frame("SUBSCRIBE", {"id": "w", "destination": "/amq/queue/edge-work", "receipt": "again"}).decode())
        answers = [await ws_receive() for _ in range(2)]
        assert [(a.command, a.headers.get("receipt-id")) for a in answers] == [("RECEIPT", "gone"), ("RECEIPT", "again")]
        await tcp.send("SEND", {"destination": "/queue/edge-work", "receipt": "p3"}, b"after")
        assert (await tcp.receive()).headers.get("receipt-id") == "p3"
        after = await ws_receive()
        assert (after.body, after.headers["subscription"]) == (b"after", "w")  # ack: auto

        # The same subscription unsubscribed twice, the second before the router answered the
        # first: the first is answered, the second refused (it took the first one's place, and
        # its RECEIPT, and every one after it, never came).
        await ws.send(encode_frame("UNSUBSCRIBE", {"id": "w", "receipt": "first"}).decode())
        await ws.send(encode_frame("UNSUBSCRIBE", {"id": "w", "receipt": "second"}).decode())
        answers = [await ws_receive() for _ in range(2)]
        assert [(a.command, a.headers.get("receipt-id")) for a in answers] == [("RECEIPT", "first"), ("ERROR", "second")]
        assert answers[1].headers["code"] == "not_found"

        await tcp.send("DISCONNECT", {"receipt": "bye"})
        assert (await tcp.receive()).headers["receipt-id"] == "bye"
        tcp.writer.close()
