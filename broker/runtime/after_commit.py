"""Deliveries to transaction-ack consumers, held until the copies they name are committed.

A consumer that settles a copy by deleting its row in its own transaction
(AckMode.TRANSACTION) must never be handed a copy whose row is not committed
yet: it would find no row and take the message for one already handled. Other
deliveries go out at once, before their copies' commit, as they always did.

Held deliveries are encoded into frames only when they are sent: a copy the
database refuses meanwhile (`unstore`) then goes out naming no row, rather
than one that never existed. Imports no Django.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import replace

from broker.engine.messages import Delivery
from broker.runtime.writer import GroupCommitWriter

Send = Callable[[int, list[str]], None]
Encode = Callable[[Delivery], str]


class AfterCommit:
    def __init__(self, writer: GroupCommitWriter, send: Send, encode: Encode) -> None:
        self._writer = writer
        self._send = send
        self._encode = encode
        # (the writer's append mark when the deliveries were made, deliveries by connection), in order.
        self._held: deque[tuple[int, dict[int, list[Delivery]]]] = deque()
        self._waiting = False

    def add(self, by_connection: dict[int, list[Delivery]]) -> None:
        """Send these deliveries once every copy appended so far is committed; in order."""
        mark = self._writer.appended
        if not self._held and mark <= self._writer.durable:
            self._send_all(by_connection)
            return
        self._held.append((mark, by_connection))
        if not self._waiting:
            self._wait()

    def unstore(self, store_ids: Collection[int]) -> None:
        """The database refused these copies: the held deliveries of them name no row.
        Rare (a row the database refuses), so a plain look through what is held."""
        for _, by_connection in self._held:
            for deliveries in by_connection.values():
                for index, delivery in enumerate(deliveries):
                    if delivery.store_id is not None and delivery.store_id in store_ids:
                        deliveries[index] = replace(delivery, store_id=None)

    def _wait(self) -> None:
        self._waiting = True
        self._writer.when_durable(self._held[0][0]).add_done_callback(self._release)

    def _release(self, _: asyncio.Future[None]) -> None:
        self._waiting = False
        while self._held and self._held[0][0] <= self._writer.durable:
            self._send_all(self._held.popleft()[1])
        if self._held:
            self._wait()

    def _send_all(self, by_connection: dict[int, list[Delivery]]) -> None:
        encode = self._encode
        for connection_id, deliveries in by_connection.items():
            self._send(connection_id, [encode(delivery) for delivery in deliveries])
