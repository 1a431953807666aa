"""The WebSocket protocol that runbroker gives uvicorn: uvicorn's own (on
websockets' sans-I/O layer), without the two costs per frame that led a busy
publisher's profile.

- Writes are coalesced. The frames sent in one turn of the loop leave in one
  socket write, not one system call each: a commit confirms hundreds of
  publishes at once, and a fanout delivers to many subscribers at once.
- Complete, unfragmented, masked data frames are parsed here and queued for
  the app directly. websockets' generator-based parser took a tenth of the
  loop, and uvicorn paused and resumed reading around every message (two more
  system calls); here reading pauses only once QUEUED_MESSAGES wait.

Everything else goes to websockets whole: control frames, fragments, and
anything malformed or too big. Its parser therefore always stands at a frame
boundary, and its checks and close codes stay the ones that apply. A
connection that negotiated compression is left to uvicorn entirely.

The app sees the same ASGI events in the same order, with two differences
(`tests/ws/test_wsprotocol.py` runs the same cases against both protocols):
good frames read in the same chunk as a frame that breaks the protocol still
reach the app (uvicorn's drops them), and a pong may leave after data sent
before the ping arrived. `daphne broker_project.asgi:application` and plain
uvicorn keep working.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

try:  # websockets' C speedup where it is built, as websockets itself does
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a websockets built without its C extension
    from websockets.utils import apply_mask

# A sender that fills this much within one turn of the loop writes it at once: what
# waits here is bounded, and the transport's flow control (`writable`) sees the rest.
FLUSH_BYTES: Final = 64 * 1024
# Messages queued for the app before reading pauses. uvicorn pauses after each one.
QUEUED_MESSAGES: Final = 64

_TEXT: Final = 0x1
_BINARY: Final = 0x2
_FIN: Final = 0x80
_RSV: Final = 0x70
_MASKED: Final = 0x80
_MAX_CONTROL_PAYLOAD: Final = 125  # RFC 6455, 5.5


def frame_header(first_byte: int, length: int) -> bytes:
    """A server frame's header (servers do not mask): FIN and opcode, then the length."""
    if length < 126:
        return bytes((first_byte, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first_byte, 126, length)
    return struct.pack("!BBQ", first_byte, 127, length)


def _between_frames(conn: Any) -> bool:
    """websockets' parser waits for the first byte of a frame, not inside one: nothing
    is buffered, and its generator stands in `at_eof`, where each frame begins (its
    header may have been read already with nothing buffered). Any other shape, in
    this version of websockets or another, is "no": websockets keeps parsing."""
    if conn.reader.buffer:
        return False
    generator = conn.parser
    while getattr(generator, "gi_yieldfrom", None) is not None:
        generator = generator.gi_yieldfrom
    return getattr(getattr(generator, "gi_code", None), "co_name", None) == "at_eof"


class BrokerWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.app

        async def app_then_flush(scope: Any, receive: Any, send: Any) -> None:
            # uvicorn closes the transport as soon as the app returns (or raises), in
            # the same step: what the app sent before must be written first.
            try:
                await app(scope, receive, send)
            finally:
                self._flush()

        self.app = app_then_flush
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_handle: asyncio.Handle | None = None
        self._in = bytearray()
        self._parsing_here = False
        # websockets was handed a frame it may not have finished: it keeps the connection.
        self._handed_over = False

    # -- sending -----------------------------------------------------------

    async def send(self, message: Any) -> None:
        if message["type"] != "websocket.send" or not self._open_for_data():
            await self._send_in_order(message)
            return
        if not self.writable.is_set():  # the transport's buffer is over its high-water mark
            await self.writable.wait()
            if not self._open_for_data():
                await self._send_in_order(message)
                return
        data = message.get("bytes")
        if data is not None:
            first_byte = _FIN | _BINARY
        else:
            text = message.get("text")
            if text is None:
                return  # as uvicorn: a send with neither writes nothing
            data, first_byte = text.encode(), _FIN | _TEXT
        self._out.append(frame_header(first_byte, len(data)))
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= FLUSH_BYTES:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush_soon)

    async def _send_in_order(self, message: Any) -> None:
        """uvicorn's send (accept, close, a closing connection), after what is waiting here."""
        self._flush()
        await super().send(message)

    def _open_for_data(self) -> bool:
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.initial_response is None
            and self.conn.state is State.OPEN
            and not self.conn.extensions
        )

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self._flush()

    def _flush(self) -> None:
        if not self._out:
            return
        out, self._out, self._out_size = self._out, [], 0
        if not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def shutdown(self) -> None:
        self._flush()
        super().shutdown()

    def keepalive_timeout(self) -> None:
        self._flush()
        super().keepalive_timeout()

    def connection_lost(self, exc: Exception | None) -> None:
        self._out, self._out_size = [], 0  # nobody left to read them
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._in = bytearray()
        super().connection_lost(exc)

    # -- receiving ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._parsing_here:
            if self._handed_over or not self._may_parse_here():
                self._flush()
                super().data_received(data)
                return
            self._parsing_here = True
        self._in += data
        self._parse_frames()

    def _may_parse_here(self) -> bool:
        """Open, uncompressed, and websockets' parser stands between two frames. (A
        client may send frames before it has read the handshake's answer: websockets
        reads those, and may hold part of one when the app accepts.)"""
        conn = self.conn
        return (
            self._open_for_data()
            and conn.parser_exc is None
            and conn.current_size is None  # not inside a fragmented message
            and _between_frames(conn)
        )

    def _parse_frames(self) -> None:
        buf = self._in
        size = len(buf)
        pos = 0
        conn = self.conn
        limit = conn.max_message_size
        queue = self.queue
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            opcode = first & 0x0F
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                length = int.from_bytes(buf[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            data_frame = opcode in (_TEXT, _BINARY)
            if (
                not second & _MASKED
                or first & _RSV
                or (limit is not None and length > limit)
                or not (data_frame and first & _FIN or opcode >= 0x8 and length <= _MAX_CONTROL_PAYLOAD)
            ):
                # Fragments, reserved bits or opcodes, an unmasked or oversized frame:
                # websockets' to judge, and it takes the connection from here on.
                self._hand_over(pos)
                return
            end = start + 4 + length
            if size < end:
                break
            if data_frame:
                payload = apply_mask(buf[start + 4 : end], buf[start : start + 4])
                if opcode == _TEXT:
                    try:
                        text = payload.decode()
                    except UnicodeDecodeError:
                        self._hand_over(pos)  # uvicorn's answer: close 1007
                        return
                    event: Any = {"type": "websocket.receive", "text": text}
                else:
                    event = {"type": "websocket.receive", "bytes": payload}
                if not self.close_sent:  # as uvicorn: nothing reaches an app that has closed
                    queue.put_nowait(event)
            else:
                # A ping, pong or close: complete, so websockets' parser ends at a boundary.
                self._flush()
                conn.receive_data(bytes(buf[pos:end]))
                if conn.parser_exc is not None:
                    self._hand_over(size)
                    self.handle_parser_exception()
                    return
                self.handle_events()
                if conn.state is not State.OPEN:  # a close: websockets discards the rest
                    self._hand_over(end)
                    return
            pos = end
        if pos:
            del buf[:pos]
        if not self.read_paused and not self.close_sent and queue.qsize() >= QUEUED_MESSAGES:
            self.read_paused = True
            self.transport.pause_reading()  # uvicorn's `receive` resumes once the app has read them all

    def _hand_over(self, pos: int) -> None:
        """From `pos` on, the bytes go to websockets (at a frame boundary), for good."""
        rest = bytes(self._in[pos:])
        self._in = bytearray()
        self._parsing_here = False
        self._handed_over = True
        self._flush()
        if rest:
            super().data_received(rest)
