"""Who sent a request (broker/transport/loopback.py `Peer`): on this machine, or named by a
proxy as from elsewhere."""

from __future__ import annotations

import pytest

from broker.transport.loopback import Peer


@pytest.mark.parametrize(
    ("address", "x_forwarded_for", "forwarded", "local"),
    [
        (None, None, None, True),  # a Unix socket, an in-process test
        ("127.0.0.1", None, None, True),
        ("::1", None, None, True),
        ("::ffff:127.0.0.1", None, None, True),
        ("10.0.0.7", None, None, False),
        (None, "203.0.113.9", None, False),  # uvicorn on a Unix socket believes no proxy
        ("127.0.0.1", "127.0.0.1, 203.0.113.9", None, False),  # the client wrote the first
        ("127.0.0.1", "::1", 'for="[::1]:443";proto=https, for=127.0.0.1:5000', True),
        ("::1", None, 'for="[2001:db8::7]:4711"', False),
        ("127.0.0.1", "unknown", None, False),
        ("127.0.0.1", None, "by=127.0.0.1;for=_hidden", False),
    ],
)
def test_a_request_is_local_when_its_peer_and_every_named_address_are(
    address: str | None, x_forwarded_for: str | None, forwarded: str | None, local: bool
) -> None:
    assert Peer.of(address, x_forwarded_for, forwarded).is_local() is local
