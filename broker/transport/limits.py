"""Limits that protect the process from its WebSocket clients (README, "Limits").

- `FrameBudget`: a token bucket per connection (WS_MAX_FRAMES_PER_SECOND, burst
  WS_MAX_FRAMES_BURST). A frame over it is refused with `rate_limited` and not
  carried out; a client whose refused frames within a second pass ten times the
  rate is closed with 1008.
- `ConnectionLimit`: ASGI middleware counting this process's WebSocket connections
  per client address (MAX_CONNECTIONS_PER_IP); one more is accepted and closed at
  once with 1013 ("try again later"). It also caps each socket's kernel send buffer,
  so what a client does not read reaches the consumer's count soon.
- `close_firmly`: close with 1008 even a client that reads nothing: the consumer
  does so when its unsent data passes WS_MAX_BUFFERED_BYTES (`slow_consumer`; it
  keeps the count) or when a client floods (`rate_limited`).

Imports settings, the JSON codec and the frame types; no models, no router.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Final

from django.conf import settings

from broker.engine.jsoncodec import loads
from broker.protocol.client_frames import FrameId
from broker.runtime.timeouts import within

log = logging.getLogger("broker.ws")

# RFC 6455 close codes and the reasons sent with them (stable, as error codes are).
CLOSE_POLICY: Final = 1008  # flooding (reason `rate_limited`) or a slow consumer (`slow_consumer`)
CLOSE_TRY_LATER: Final = 1013  # MAX_CONNECTIONS_PER_IP reached (`too_many_connections`)
REASON_RATE: Final = "rate_limited"
REASON_SLOW: Final = "slow_consumer"
REASON_CONNECTIONS: Final = "too_many_connections"
# Frames of one connection carried out before its session lets the loop turn: a client's
# burst arrives thousands of frames at a time, and without a turn the timers (delayed
# messages) and every other connection would wait for all of them.
FRAMES_PER_TURN: Final = 100

# A client is flooding, not bursting, when it sends this many times the rate it is allowed.
ABUSE_FACTOR: Final = 10
ABUSE_WINDOW: Final = 1.0  # seconds over which refused frames are counted
# How long a slow consumer's close frame may wait for room in its socket before
# the connection is cut without it (its client reads nothing, so it would wait forever).
SLOW_CLOSE_GRACE: Final = 1.0

ALLOWED: Final = 0
REFUSED: Final = 1
ABUSIVE: Final = 2


class FrameBudget:
    """A token bucket, charged by the consumer inline (`tokens -= 1`) and refilled only
    when it runs dry: a connection under its rate never reads the clock."""

    __slots__ = ("burst", "clock", "last", "rate", "refused", "tokens", "window_start")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = self.burst
        self.clock = clock
        self.last = clock()
        self.refused = 0
        self.window_start = self.last

    @classmethod
    def from_settings(cls) -> FrameBudget:
        return cls(settings.WS_MAX_FRAMES_PER_SECOND, settings.WS_MAX_FRAMES_BURST)

    def refill(self) -> int:
        """Called once `tokens` went below zero for this frame: ALLOWED, REFUSED or ABUSIVE."""
        now = self.clock()
        tokens = self.tokens + 1.0 + (now - self.last) * self.rate  # give back this frame's charge
        self.last = now
        tokens = min(tokens, self.burst)
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return ALLOWED
        self.tokens = tokens  # a refused frame costs nothing: it is not carried out
        if now - self.window_start >= ABUSE_WINDOW:
            self.window_start = now
            self.refused = 0
        self.refused += 1
        return ABUSIVE if self.refused > ABUSE_FACTOR * self.rate * ABUSE_WINDOW else REFUSED


def text_bytes(text: str) -> int:
    """UTF-8 size of a frame; `isascii` is O(1), so ASCII frames are not re-encoded."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def frame_id_of(text: str) -> FrameId | None:
    """The `id` of a frame that will not be parsed further (a refused one), if readable."""
    try:
        data = loads(text)
    except ValueError:
        return None
    frame_id = data.get("id") if isinstance(data, dict) else None
    if isinstance(frame_id, bool) or not isinstance(frame_id, (str, int, float)):
        return None
    return frame_id


def _server_transport(send: Any) -> Any:
    """The asyncio transport behind uvicorn's ASGI `send`, or None under another server."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if hasattr(transport, "abort") else None


async def close_firmly(send: Any, code: int, reason: str) -> None:
    """Close with `code` and `reason`; cut the connection if the close cannot be written.

    For a client that floods or reads nothing: uvicorn's send waits for the socket to
    drain first, which such a client may never let happen, and its transport would
    keep the unsent bytes until then."""
    transport = _server_transport(send)
    try:
        await within(send({"type": "websocket.close", "code": code, "reason": reason}), SLOW_CLOSE_GRACE)
        written = True
    except TimeoutError:
        written = False
    except Exception:  # the socket is already gone
        log.debug("closing a connection with %d failed", code, exc_info=True)
        written = False
    if transport is None:
        return
    if written:
        # The close is queued behind data the client may never read: give it the grace, then cut.
        asyncio.get_running_loop().call_later(SLOW_CLOSE_GRACE, transport.abort)
    else:
        transport.abort()


def cap_kernel_buffer(send: Any) -> None:
    """Cap the socket's kernel send buffer at a quarter of WS_MAX_BUFFERED_BYTES (Linux
    doubles it: half the bound). Left to autotuning it grows to megabytes per socket
    (net.ipv4.tcp_wmem), all held for a client that reads nothing before the broker sees
    any of it; capped, a 1 MiB buffer still carries 20 MB/s at 100 ms round trips."""
    transport = _server_transport(send)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(settings.WS_MAX_BUFFERED_BYTES // 4, 16 * 1024))
    except OSError:  # not a TCP socket (a Unix one under another server): leave it
        log.debug("could not cap the send buffer", exc_info=True)


class ConnectionLimit:
    """ASGI middleware for the WebSocket route: at most MAX_CONNECTIONS_PER_IP per client address."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: dict[str, int] = {}
        self._logged: set[str] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        limit = settings.MAX_CONNECTIONS_PER_IP
        address = str((scope.get("client") or ("unknown",))[0])
        counts = self.counts
        held = counts.get(address, 0)
        if limit and held >= limit:
            if address not in self._logged:  # once while the address stays at its limit
                self._logged.add(address)
                log.info("WebSocket refused: %s holds %d connections (MAX_CONNECTIONS_PER_IP)", address, held)
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_TRY_LATER, "reason": REASON_CONNECTIONS})
            return
        counts[address] = held + 1
        cap_kernel_buffer(send)
        try:
            await self.app(scope, receive, send)
        finally:
            left = counts[address] - 1
            if left:
                counts[address] = left
            else:
                del counts[address]
            if limit and left < limit:
                self._logged.discard(address)


class UserConnections:
    """MAX_CONNECTIONS_PER_USER: an authenticated user's WebSocket connections, per process.

    Anonymous clients have no name to count by; MAX_CONNECTIONS_PER_IP bounds them."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def take(self, who: str) -> bool:
        """Count one more connection of `who`; False (and nothing counted) at the limit."""
        limit = settings.MAX_CONNECTIONS_PER_USER
        held = self.counts.get(who, 0)
        if limit and held >= limit:
            log.info("WebSocket refused: %s holds %d connections (MAX_CONNECTIONS_PER_USER)", who, held)
            return False
        self.counts[who] = held + 1
        return True

    def give_back(self, who: str) -> None:
        left = self.counts.get(who, 0) - 1
        if left > 0:
            self.counts[who] = left
        else:
            self.counts.pop(who, None)


user_connections = UserConnections()
