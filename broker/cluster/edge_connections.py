"""What an edge remembers of each of its client connections, to resume them.

When a new router takes over, each connection resumes on it by itself: the
same subscriptions (those the router had confirmed), delivery tags above any
the client holds, and its `watch`. Subscribes still waiting for the router's
answer are failed with `unavailable` instead (the client may subscribe again).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from broker.engine.errors import BrokerError
from broker.protocol.client_frames import FrameId
from broker.protocol.link import (
    AckItem,
    CancelledItem,
    EdgeItem,
    EncodedError,
    FramesItem,
    LastTagItem,
    NackItem,
    ResumeItem,
    SubscribedItem,
    SubscribeItem,
    UnsubscribedItem,
    UnsubscribeItem,
    decode_error,
)
from broker.router.interface import ConnectionSink, SubscribeAnswer

log = logging.getLogger("broker.cluster")


class _Connection:
    __slots__ = ("answers", "batches", "last_tag", "sink", "stale", "subscriptions", "unsubscribing", "watching")

    def __init__(self, sink: ConnectionSink) -> None:
        self.sink = sink
        self.last_tag = 0
        # The router's numbers of the counted batches of frames given to the sink and not
        # written yet, in order; `stale`: how many before them came from a router followed before.
        self.batches: deque[int] = deque()
        self.stale = 0
        self.subscriptions: dict[str, SubscribeItem] = {}  # key -> what to resume
        self.watching = False
        # Subscribes waiting for the router's answer, in the order asked, with when.
        self.answers: deque[tuple[SubscribeItem, SubscribeAnswer, float]] = deque()
        # Unsubscribes waiting for the router's answer: a router lost meanwhile ends them.
        self.unsubscribing: set[str] = set()


class EdgeConnections:
    def __init__(self) -> None:
        self._connections: dict[int, _Connection] = {}
        self._next = 1

    def add(self, sink: ConnectionSink) -> int:
        conn = self._next
        self._next += 1
        self._connections[conn] = _Connection(sink)
        return conn

    def remove(self, conn: int) -> bool:
        return self._connections.pop(conn, None) is not None

    def sink(self, conn: int) -> ConnectionSink | None:
        connection = self._connections.get(conn)
        return None if connection is None else connection.sink

    def asked(self, item: SubscribeItem, answer: SubscribeAnswer) -> bool:
        """A subscribe sent to the router; False when the connection is gone."""
        connection = self._connections.get(item.conn)
        if connection is None:
            return False
        connection.answers.append((item, answer, time.monotonic()))
        return True

    def forget(self, conn: int, key: str) -> None:
        """Not to resume: the client unsubscribed (the router's answer to come)."""
        connection = self._connections.get(conn)
        if connection is not None:
            connection.subscriptions.pop(key, None)
            connection.unsubscribing.add(key)

    def watch(self, conn: int, watching: bool) -> None:
        connection = self._connections.get(conn)
        if connection is not None:
            connection.watching = watching

    # -- what the router says --------------------------------------------

    def frames(self, item: FramesItem) -> None:
        connection = self._connections.get(item.conn)
        if connection is None:
            return
        if item.batch:
            connection.batches.append(item.batch)
            connection.sink.deliver(item.frames, True)
        else:
            connection.sink.deliver(item.frames)

    def written(self, conn: int, batches: int) -> int | None:
        """The sink has written its next `batches` batches: the router's number of the last
        of them, or None when they were all a previous router's."""
        connection = self._connections.get(conn)
        if connection is None:
            return None
        skipped = min(batches, connection.stale)
        connection.stale -= skipped
        upto = None
        for _ in range(min(batches - skipped, len(connection.batches))):
            upto = connection.batches.popleft()
        return upto

    def last_tag(self, item: LastTagItem) -> None:
        connection = self._connections.get(item.conn)
        if connection is not None and item.tag > connection.last_tag:
            connection.last_tag = item.tag

    def subscribed(self, item: SubscribedItem) -> None:
        connection = self._connections.get(item.conn)
        if connection is None or not connection.answers:
            return
        asked, answer, _ = connection.answers.popleft()
        if item.error is not None:
            answer(None, decode_error(item.error))
            return
        connection.subscriptions[asked.key] = asked
        answer(item.queue, None)

    def unsubscribed(self, item: UnsubscribedItem) -> None:
        connection = self._connections.get(item.conn)
        if connection is not None:
            # Subscribed meanwhile (the answer crossed the unsubscribe): not to resume.
            connection.subscriptions.pop(item.key, None)
            connection.unsubscribing.discard(item.key)
            connection.sink.unsubscribed(item.key)

    def cancelled(self, item: CancelledItem) -> None:
        connection = self._connections.get(item.conn)
        if connection is not None:
            connection.subscriptions.pop(item.key, None)
            connection.sink.cancelled(item.key, item.reason)

    def refused(self, conn: int, frame_id: FrameId | None, error: EncodedError) -> None:
        connection = self._connections.get(conn)
        if connection is not None:
            connection.sink.refused(frame_id, decode_error(error))

    def refuse(self, item: EdgeItem, error: BrokerError) -> bool:
        """A connection's item that cannot reach the router (it cannot be encoded): answered
        here as the router would answer it. False for an item that asks for no answer."""
        match item:
            case SubscribeItem(conn=conn):
                connection = self._connections.get(conn)
                # Out of the answers awaited, which the router's answers take in order.
                found = None if connection is None else next((e for e in connection.answers if e[0] is item), None)
                if connection is not None and found is not None:
                    connection.answers.remove(found)
                    found[1](None, error)
            case AckItem(conn=conn, frame_id=frame_id) | NackItem(conn=conn, frame_id=frame_id):
                sink = self.sink(conn)
                if sink is not None:
                    sink.refused(frame_id, error)
            case UnsubscribeItem(conn=conn, key=key):
                # The router holds no subscription of a key that cannot reach it: as for any
                # key it does not know, the unsubscribe has ended.
                self.unsubscribed(UnsubscribedItem("U", conn, key))
            case _:
                return False
        return True

    # -- losing and following a router -----------------------------------

    def oldest_question(self) -> float | None:
        """When the oldest subscribe still waiting for its answer was asked."""
        asked = [connection.answers[0][2] for connection in self._connections.values() if connection.answers]
        return min(asked, default=None)

    def fail_questions(self, failure: BrokerError) -> None:
        """The router is lost: its answers will not come. A subscription being unsubscribed
        has ended (the next router is not given it to resume): also one whose subscribe was
        answered after the client unsubscribed, which `subscribed` records to resume. A
        client's callback that raises is logged: the others are answered all the same, and
        the link that lost its router goes on to the next."""
        for connection in self._connections.values():
            answers, connection.answers = connection.answers, deque()
            for _, answer, _ in answers:
                _guarded(answer, None, failure)
            unsubscribing, connection.unsubscribing = connection.unsubscribing, set()
            for key in unsubscribing:
                connection.subscriptions.pop(key, None)
                _guarded(connection.sink.unsubscribed, key)

    def resume_items(self) -> list[ResumeItem]:
        """What each connection resumes on a new router. Its batches not yet written were
        the previous router's, numbered by it: not counted against the new one's."""
        for connection in self._connections.values():
            connection.stale += len(connection.batches)
            connection.batches.clear()
        return [
            ResumeItem("a", conn, connection.last_tag + 1, connection.watching, list(connection.subscriptions.values()))
            for conn, connection in self._connections.items()
        ]

    def unsubscribed_without_router(self, conn: int, key: str) -> None:
        """No router holds the subscription: it has ended already."""
        connection = self._connections.get(conn)
        if connection is not None:
            connection.subscriptions.pop(key, None)
            connection.sink.unsubscribed(key)


def _guarded(callback: Callable[..., Any], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("a client connection's callback failed while its router was lost")
