"""The STOMP handshake's two negotiations (docs/protocol.md, "STOMP: connecting"): the
version, from the CONNECT's `accept-version`, and the heart-beats, from its
`heart-beat`, as the spec's rules give them. Pure.
"""

from __future__ import annotations

from typing import Final

from broker.engine.errors import BrokerError

VERSIONS: Final = ("1.2", "1.1", "1.0")  # the best first
SPOKEN: Final = "1.0,1.1,1.2"  # as an ERROR's `version` header lists them
SERVER: Final = "pubsub-broker"
# A client's wish for faster heart-beats is slowed to this (it cannot make the server spin).
MIN_HEARTBEAT_MS: Final = 100


def negotiate_version(accept_version: str | None) -> str | None:
    """The best version both speak; a CONNECT without `accept-version` is 1.0's. None: none."""
    offered = {part.strip() for part in accept_version.split(",")} if accept_version is not None else {"1.0"}
    return next((version for version in VERSIONS if version in offered), None)


def negotiate_heartbeats(value: str, offer_ms: int) -> tuple[int, int]:
    """(ms between the server's heart-beats, ms between the client's) for the client's
    `heart-beat: cx,cy` and the server's `offer_ms`: each direction at the slower of what
    one side can do and the other wants, 0 for none (also when either says 0)."""
    try:
        can_send, wants = (int(part) for part in value.split(","))
    except ValueError:
        raise BrokerError(f"heart-beat: {value!r} is not two comma-separated integers") from None
    if can_send < 0 or wants < 0:
        raise BrokerError(f"heart-beat: {value!r} holds a negative interval")
    send_every = max(wants, MIN_HEARTBEAT_MS) if wants and offer_ms else 0
    expect_every = max(can_send, offer_ms) if can_send and offer_ms else 0
    return send_every, expect_every


def connected_frame(version: str, send_every: int, expect_every: int, session: int) -> str:
    """CONNECTED: its headers are never escaped."""
    return (
        f"CONNECTED\nversion:{version}\nheart-beat:{send_every},{expect_every}\n"
        f"server:{SERVER}\nsession:{session}\n\n\x00"
    )
