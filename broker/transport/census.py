"""The client connections open in this process, by protocol and transport: what the
metrics count (connections and subscriptions), read when they are scraped.

A session registers when it opens and leaves when it closes; its subscriptions
are counted at the scrape, from the session itself, so nothing is kept in step
on the way of a message.
"""

from __future__ import annotations

from typing import Final, Protocol

PROTOCOLS: Final = (("json", "websocket"), ("stomp", "websocket"), ("stomp", "tcp"))


class Counted(Protocol):
    def subscription_count(self) -> int:
        """Subscriptions the client holds now."""


_open: dict[tuple[str, str], set[Counted]] = {kind: set() for kind in PROTOCOLS}


def opened(session: Counted, protocol: str, transport: str) -> None:
    _open[(protocol, transport)].add(session)


def closed(session: Counted) -> None:
    for sessions in _open.values():
        sessions.discard(session)


def counts() -> dict[tuple[str, str], tuple[int, int]]:
    """(protocol, transport) -> (connections, subscriptions). Read on the loop that opens and
    closes the sessions: counted from another thread, a set changed meanwhile raises."""
    return {
        kind: (len(sessions), sum(session.subscription_count() for session in sessions))
        for kind, sessions in _open.items()
    }
