"""Frames of transaction-ack deliveries, held until the copies they name are committed.

A consumer that settles a copy by deleting its row in its own transaction
(AckMode.TRANSACTION) must never be handed a copy whose row is not committed
yet: it would find no row and take the message for one already handled. Other
deliveries go out at once, before their copies' commit, as they always did.
Imports no Django.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from broker.runtime.writer import GroupCommitWriter

Send = Callable[[int, list[str]], None]


class AfterCommit:
    def __init__(self, writer: GroupCommitWriter, send: Send) -> None:
        self._writer = writer
        self._send = send
        # (the writer's append mark when the frames were made, frames by connection), in order.
        self._held: deque[tuple[int, dict[int, list[str]]]] = deque()
        self._waiting = False

    def add(self, by_connection: dict[int, list[str]]) -> None:
        """Send these frames once every copy appended so far is committed; in order."""
        mark = self._writer.appended
        if not self._held and mark <= self._writer.durable:
            self._send_all(by_connection)
            return
        self._held.append((mark, by_connection))
        if not self._waiting:
            self._wait()

    def _wait(self) -> None:
        self._waiting = True
        self._writer.when_durable(self._held[0][0]).add_done_callback(self._release)

    def _release(self, _: asyncio.Future[None]) -> None:
        self._waiting = False
        while self._held and self._held[0][0] <= self._writer.durable:
            self._send_all(self._held.popleft()[1])
        if self._held:
            self._wait()

    def _send_all(self, by_connection: dict[int, list[str]]) -> None:
        for connection_id, frames in by_connection.items():
            self._send(connection_id, frames)
