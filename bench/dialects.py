"""The two wire dialects the load generator speaks, with the same framing care.

`OursDialect` speaks our JSON protocol (docs/protocol.md, "WebSocket"), `StompDialect`
speaks STOMP 1.2 to RabbitMQ Web-STOMP (and to our broker with `--protocol stomp`).
Both pre-encode every frame into a prefix and a suffix around the only part that
changes (a counter, a timestamp, a delivery tag), and both find that part in
incoming frames by `str.find` rather than by parsing the whole frame: the
generator spends the same few string operations per message on each side.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

import orjson
from websockets.asyncio.client import ClientConnection, connect

from . import stomp

# Pads the body to ~100 bytes of JSON, as in the README's performance figures.
PAD: Final = "x" * 56
HANDSHAKE_TIMEOUT: Final = 15.0
# Frames buffered by the websockets library before it stops reading the socket.
MAX_QUEUE: Final = 1024


def body_text(ts: float = 0.0, seq: int = 0) -> str:
    """A ~100-byte JSON body; `ts` is the publisher's perf_counter() for latency runs."""
    return f'{{"ts":{ts:.6f},"seq":{seq},"kind":"bench","pad":"{PAD}"}}'


class Dialect(Protocol):
    name: str

    async def open(self, url: str) -> ClientConnection: ...

    def publish_parts(self, destination: str, *, persistent: bool) -> tuple[str, str, str]:
        """(before the id, between the id and the body, after the body): a publish with a confirm."""

    def confirms_in(self, data: str) -> int:
        """How many confirms this incoming message carries (0 if none); raises on an error frame."""

    def subscribe_frame(self, tag: str, *, queue: str | None, exchange: str | None, client_ack: bool, prefetch: int) -> str: ...

    def is_subscribed(self, data: str, tag: str) -> bool: ...

    def ack_for(self, data: str) -> str | None:
        """The ack frame for a delivery, or None when `data` is not a delivery."""

    def is_delivery(self, data: str) -> bool: ...


def _check_error(data: str, marker: str) -> None:
    if marker in data:
        raise RuntimeError(f"broker error frame: {data[:300]}")


def ts_of(data: str) -> float:
    """The publisher's timestamp in a delivered body (both dialects carry the body as JSON text)."""
    i = data.find('"ts":')
    j = data.find(",", i + 5)
    return float(data[i + 5 : j])


def seq_of(data: str) -> int:
    """The `seq` number in a delivered body (bench/outbox_worker.py's bodies)."""
    i = data.find('"seq":') + 6
    j = i
    while data[j].isdigit():
        j += 1
    return int(data[i:j])


class OursDialect:
    name = "ours"

    async def open(self, url: str) -> ClientConnection:
        return await connect(
            url, compression=None, ping_interval=None, open_timeout=HANDSHAKE_TIMEOUT, max_queue=MAX_QUEUE, max_size=None
        )

    def publish_parts(self, destination: str, *, persistent: bool) -> tuple[str, str, str]:
        exchange, _, routing_key = destination.partition("/")
        fixed = orjson.dumps({"exchange": exchange, "routing_key": routing_key, "persistent": persistent}).decode()
        return '{"type":"publish","id":', "," + fixed[1:-1] + ',"body":', "}"

    def confirms_in(self, data: str) -> int:
        if '"type":"confirm"' in data:
            return 1
        _check_error(data, '"type":"error"')
        return 0

    def subscribe_frame(self, tag: str, *, queue: str | None, exchange: str | None, client_ack: bool, prefetch: int) -> str:
        frame: dict[str, object] = {"type": "subscribe", "id": tag, "ack": "client" if client_ack else "auto", "prefetch": prefetch}
        if queue is not None:
            frame["queue"] = queue
        else:
            frame["exchange"] = exchange
            frame["binding_key"] = ""
        return orjson.dumps(frame).decode()

    def is_subscribed(self, data: str, tag: str) -> bool:
        _check_error(data, '"type":"error"')
        return '"type":"subscribed"' in data

    def ack_for(self, data: str) -> str | None:
        i = data.find('"delivery_tag":')
        if i < 0:
            _check_error(data, '"type":"error"')
            return None
        i += 15
        j = data.find(",", i)
        return '{"type":"ack","delivery_tag":' + data[i:j] + "}"

    def is_delivery(self, data: str) -> bool:
        if '"type":"message"' in data:
            return True
        _check_error(data, '"type":"error"')
        return False


class StompDialect:
    """STOMP 1.2 frames: RabbitMQ Web-STOMP's (guest/guest), or ours' (`anonymous`)."""

    name = "stomp"

    def __init__(self, *, login: str | None = "guest", passcode: str | None = "guest", vhost: str = "/") -> None:
        self._connect = stomp.connect_frame(login=login, passcode=passcode, host=vhost)

    @classmethod
    def anonymous(cls) -> StompDialect:
        """Without login and passcode: our broker lets anonymous clients in on loopback,
        and would take a passcode as an API token (and refuse "guest")."""
        return cls(login=None, passcode=None)

    async def open(self, url: str) -> ClientConnection:
        ws = await connect(
            url,
            subprotocols=["v12.stomp"],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
            open_timeout=HANDSHAKE_TIMEOUT,
            max_queue=MAX_QUEUE,
            max_size=None,
        )
        await ws.send(self._connect)
        reply = await asyncio.wait_for(ws.recv(), HANDSHAKE_TIMEOUT)
        frames = stomp.decode(str(reply))
        if not frames or frames[0].command != "CONNECTED":
            await ws.close()
            raise RuntimeError(f"STOMP CONNECT refused: {str(reply)[:300]}")
        return ws

    def publish_parts(self, destination: str, *, persistent: bool) -> tuple[str, str, str]:
        extra = "persistent:true\n" if persistent else ""
        return (
            f"SEND\ndestination:{destination}\ncontent-type:application/json\n{extra}receipt:",
            "\n\n",
            stomp.NUL,
        )

    def confirms_in(self, data: str) -> int:
        if data.startswith("RECEIPT"):
            return data.count("RECEIPT\n")
        _check_error(data, "ERROR\n")
        return 0

    def subscribe_frame(self, tag: str, *, queue: str | None, exchange: str | None, client_ack: bool, prefetch: int) -> str:
        destination = f"/amq/queue/{queue}" if queue is not None else f"/exchange/{exchange}"
        headers = {"id": tag, "destination": destination, "ack": "client-individual" if client_ack else "auto", "receipt": f"sub-{tag}"}
        if client_ack:
            headers["prefetch-count"] = str(prefetch)
        return stomp.encode("SUBSCRIBE", headers)

    def is_subscribed(self, data: str, tag: str) -> bool:
        _check_error(data, "ERROR\n")
        return data.startswith("RECEIPT") and f"receipt-id:sub-{tag}" in data

    def ack_for(self, data: str) -> str | None:
        i = data.find("\nack:")
        if i < 0:
            _check_error(data, "ERROR\n")
            return None
        i += 5
        j = data.find("\n", i)
        return "ACK\nid:" + data[i:j] + "\n\n\x00"

    def is_delivery(self, data: str) -> bool:
        if data.startswith("MESSAGE"):
            return True
        _check_error(data, "ERROR\n")
        return False
