"""Publishes answered `unavailable` whose copies the broker still holds, so that the
same publish sent again is not routed twice (docs/protocol.md, "Durability").

A publish is answered `unavailable` when its commit fails (the database is
away); its copies are already routed, and the writer retries them until they
are committed. A client that publishes again with the same `message_id` (as the
bundled clients do) would then deliver the message twice. Instead, a publish
whose exchange, `message_id`, routing key and body match a refused one within
RETRY_WINDOW seconds is not routed again: it is answered with the outcome of the refused copies'
next commit (or at once, if they are committed by then).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from broker.engine.messages import StoredCopy

# Seconds a refused publish is remembered after its last refusal or retry.
RETRY_WINDOW: Final = 120.0


class RefusedPublishes:
    def __init__(self, window: float = RETRY_WINDOW) -> None:
        self._window = window
        # (exchange, message_id) -> [the writer's mark that commits them, stored copies, expiry,
        # the hash of routing key and body: the same id with other contents is another message]
        self._refused: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._store_ids: dict[tuple[str, str], set[int]] = {}  # the copies of each

    def __bool__(self) -> bool:
        return bool(self._refused)

    def remember(self, copies: Iterable[StoredCopy], *, mark: int, now: float) -> None:
        """These copies' commit failed; they are retried, committed once `mark` is durable."""
        counts: dict[tuple[str, str], list[int]] = {}
        for copy in copies:
            message = copy.message
            key = (message.exchange, message.message_id)
            counts.setdefault(key, [0, hash((message.routing_key, message.body_json))])[0] += 1
            self._store_ids.setdefault(key, set()).add(copy.store_id)
        for key, (stored, contents) in counts.items():
            self._refused[key] = [mark, stored, now + self._window, contents]
            self._refused.move_to_end(key)
        self._forget_expired(now)

    def remembers(self, exchange: str, message_id: str) -> bool:
        return (exchange, message_id) in self._refused

    def forget(self, store_ids: set[int]) -> None:
        """The database refused these copies for good: a publish of theirs sent again is no
        longer answered with their commit's outcome (it would be confirmed, never stored),
        but routed, and refused, anew. Rare: a plain look through what is remembered."""
        for key, ids in list(self._store_ids.items()):
            if ids & store_ids:
                self._refused.pop(key, None)
                del self._store_ids[key]

    def again(self, exchange: str, message_id: str, routing_key: str, body_json: str, *, now: float) -> tuple[int, int] | None:
        """(mark, routed) of a refused publish sent again; None for any other."""
        entry = self._refused.get((exchange, message_id))
        if entry is None or entry[2] < now or entry[3] != hash((routing_key, body_json)):
            return None
        entry[2] = now + self._window
        self._refused.move_to_end((exchange, message_id))
        return int(entry[0]), int(entry[1])

    def _forget_expired(self, now: float) -> None:
        refused = self._refused
        while refused:
            key, entry = next(iter(refused.items()))
            if entry[2] >= now:
                return
            del refused[key]
            self._store_ids.pop(key, None)
