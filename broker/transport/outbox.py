"""What a WebSocket connection has yet to send, and the one task that sends it.

Replies and deliveries go into one queue and leave in order, one WebSocket
frame each (a text frame for a `str`, a binary one for `bytes`), so the
connection's reader never waits for a send. `finish` closes the connection
once what it holds has left (a STOMP ERROR or DISCONNECT receipt, then the close). Unsent data is
bounded: past `max_buffered` UTF-8 bytes (WS_MAX_BUFFERED_BYTES) the client is
too slow, what waits is dropped and the connection is closed with 1008
`slow_consumer` (docs/protocol.md, "Limits"); so it is, largest first, when the
unsent data of all connections together passes WS_TOTAL_BUFFERED_BYTES
(broker/runtime/memory.py, `UnsentBudget`).

The router's frames come in batches (`deliver`), and the outbox says how many of
them it has written to the socket (`on_written`), in order: the router gives the
credit of their deliveries back (broker/engine/queues.py, `Connection`), so a
subscription to a named queue is sent no faster than its client reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from broker.runtime.memory import UnsentBudget

from .limits import CLOSE_POLICY, REASON_SLOW, close_firmly, text_bytes

log = logging.getLogger("broker.ws")

CLOSE_INTERNAL_ERROR: Final = 1011
# A client gone while being sent to: its session ends when its reader comes to the
# disconnect, after the frames the client sent before it (its last acks); at the latest
# this long after (a reader held up, say, by the memory alarm).
GONE_SECONDS: Final = 5.0

# Within a long send (a slow socket, a backlog leaving), batches written are reported at
# least every this many frames, not only once the outbox is empty: a subscription's credit
# keeps coming while replies or other subscriptions' frames keep the outbox busy.
REPORT_EVERY: Final = 64

# The server's ASGI send. Events are built as dicts: the spec lets a send leave out
# `bytes` or `text`, and Channels' test client insists on it.
Send = Callable[[Any], Awaitable[None]]


def _size(frame: str | bytes) -> int:
    if type(frame) is bytes:
        return len(frame)
    return text_bytes(frame)  # type: ignore[arg-type]


class Outbox:
    def __init__(
        self,
        send: Send,
        max_buffered: int,
        *,
        on_too_slow: Callable[[], None],
        on_failed: Callable[[], None],
        on_written: Callable[[int], None] | None = None,
        budget: UnsentBudget | None = None,
    ) -> None:
        """`on_written(n)`: the next `n` batches (`deliver`) have been written to the socket."""
        self._send = send  # the server's ASGI send
        self._frames: deque[str | bytes] = deque()
        # Frames queued and frames sent, running counts; the queued count at the end of
        # each batch not reported yet.
        self._queued = 0
        self._sent = 0
        self._batch_ends: deque[int] = deque()
        self._next_report = 0  # the sent count from which a long send reports again
        self._on_written = on_written
        self._finish_code: int | None = None  # close with this once the frames have left
        # UTF-8 bytes queued plus the frame being sent, kept on append and pop.
        self._buffered = 0
        self._max_buffered = max_buffered
        self._on_too_slow = on_too_slow
        self._on_failed = on_failed
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._gone: asyncio.TimerHandle | None = None  # closes the session if its reader does not
        self._stopped = False
        self._budget = budget
        if budget is not None:
            budget.join(self)

    @property
    def buffered(self) -> int:
        return self._buffered

    def start(self, *, name: str) -> None:
        self._sender = asyncio.create_task(self._send_forever(), name=name)

    def append(self, frame: str | bytes) -> None:
        if self._stopped:
            return
        self._frames.append(frame)
        self._queued += 1
        self._grow(_size(frame))

    def deliver(self, frames: list[str] | list[str | bytes]) -> None:
        """The router's batch: queued, and reported by `on_written` once it has left (an
        empty one too, with what was queued before it)."""
        if self._stopped:
            return
        self._batch_ends.append(self._queued + len(frames))
        if frames:
            self.extend(frames)
        else:
            self._wakeup.set()

    def extend(self, frames: list[str] | list[str | bytes]) -> None:
        if self._stopped:
            return
        self._frames.extend(frames)
        self._queued += len(frames)
        size = 0
        for frame in frames:
            size += len(frame) if frame.isascii() else _size(frame)  # bytes have isascii too
        self._grow(size)

    def finish(self, code: int = 1000) -> None:
        """Close the connection with `code` once the frames queued so far have left; nothing
        more is queued."""
        if self._stopped or self._finish_code is not None:
            return
        self._finish_code = code
        self._wakeup.set()

    def _grow(self, size: int) -> None:
        self._buffered += size
        budget = self._budget
        if budget is not None:
            budget.total += size
        if self._buffered > self._max_buffered:
            self.too_slow()
            return
        self._wakeup.set()
        if budget is not None and budget.total > budget.limit:
            budget.over()

    def too_slow(self) -> None:
        """Close the connection as a slow consumer; what waits is dropped now."""
        if self._stopped:
            return
        self._drop()
        self._closing = asyncio.ensure_future(close_firmly(self._send, CLOSE_POLICY, REASON_SLOW))
        self._on_too_slow()

    def _drop(self) -> None:
        self._stopped = True  # nothing more is queued; the memory goes now
        self._frames.clear()
        self._batch_ends.clear()
        if self._budget is not None:
            self._budget.total -= self._buffered
            self._budget.leave(self)
        self._buffered = 0

    def stop(self) -> None:
        """Drop what waits and stop the sender. Idempotent."""
        if not self._stopped:
            self._drop()
        if self._gone is not None:
            self._gone.cancel()
            self._gone = None
        sender = self._sender
        if sender is not None and sender is not asyncio.current_task():
            sender.cancel()

    async def wait_stopped(self) -> None:
        sender = self._sender
        current = asyncio.current_task()
        if sender is not None and sender is not current:
            try:
                await sender
            except asyncio.CancelledError:
                if current is not None and current.cancelling():
                    raise  # the caller's own cancel, not the sender's end

    def _report_written(self) -> None:
        ends, sent = self._batch_ends, self._sent
        self._next_report = sent + REPORT_EVERY
        written = 0
        while ends and ends[0] <= sent:
            ends.popleft()
            written += 1
        if written and self._on_written is not None:
            self._on_written(written)  # may queue more frames, and set the wakeup

    async def _send_forever(self) -> None:
        """The only writer of this socket: one WebSocket frame per entry, in order."""
        frames, wakeup, ends = self._frames, self._wakeup, self._batch_ends
        while True:
            # No timeout: this task waits for frames as long as the connection lives,
            # and `stop` cancels it.
            await wakeup.wait()
            wakeup.clear()
            send = self._send
            try:
                while frames:
                    frame = frames.popleft()
                    # Counted until sent: a client that does not read holds up this send.
                    if type(frame) is str:
                        await send({"type": "websocket.send", "text": frame})
                        size = len(frame) if frame.isascii() else text_bytes(frame)
                    else:
                        await send({"type": "websocket.send", "bytes": frame})
                        size = len(frame)
                    if not self._stopped:
                        self._buffered -= size
                        if self._budget is not None:
                            self._budget.total -= size
                        self._sent += 1
                        if ends and ends[0] <= self._sent and self._sent >= self._next_report:
                            self._report_written()
                if ends:
                    self._report_written()
                if self._finish_code is not None:
                    self._drop()
                    await send({"type": "websocket.close", "code": self._finish_code})
                    self._on_failed()
                    return
            except OSError:
                # The client closed or went away while frames were queued (uvicorn's
                # ClientDisconnected is an OSError): no fault, nothing left to tell it. Not
                # closed from here: acks it sent just before its close still count.
                log.debug("a WebSocket client went away while being sent to")
                self._drop()
                self._gone = asyncio.get_running_loop().call_later(GONE_SECONDS, self._on_failed)
                return
            except Exception:
                log.exception("sending to a WebSocket client failed; closing it")
                self._on_failed()
                try:
                    await send({"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR})
                except Exception:  # the socket is already gone: nothing left to tell
                    log.debug("close after a failed send failed too", exc_info=True)
                return
