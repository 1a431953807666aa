"""What a STOMP client is owed, in the order of its frames (docs/protocol.md, "STOMP").

A RECEIPT waits for what its frame started to settle: a SEND's publish (its
commit, for a persistent message), an UNSUBSCRIBE's answer from the router. A
publish that fails is an ERROR, in its turn, whether or not it asked for a
receipt, and so is any refused frame: the client gets the RECEIPTs of the
frames before it first. Answers leave strictly in frame order, so a client reading a
RECEIPT knows that every earlier frame is settled.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.engine.errors import BrokerError, Unavailable
from broker.router.interface import Publishing


@dataclass(slots=True)
class Answer:
    """`receipt`: the RECEIPT to send (None: nothing unless it fails). `waiter`: what must
    settle first. `then_close`: a DISCONNECT's, after which the connection closes.
    `error`: a refused frame's ERROR, sent in its turn (after the earlier frames' answers).
    `quiet`: no RECEIPT; `receipt` only names the ERROR if it fails."""

    receipt: str | None
    waiter: Publishing | asyncio.Future[None] | None = None
    then_close: bool = False
    error: BrokerError | None = None
    quiet: bool = False


class Answers:
    def __init__(
        self,
        *,
        receipt: Callable[[str], None],
        failed: Callable[[BrokerError, str | None], None],
        close: Callable[[], None],
    ) -> None:
        self._receipt = receipt
        self._failed = failed
        self._close = close
        self._pending: deque[Answer] = deque()
        self._awaited: asyncio.Future[Any] | None = None

    def add(self, answer: Answer) -> None:
        self._pending.append(answer)
        waiter = answer.waiter
        settled = waiter.settled if isinstance(waiter, Publishing) else waiter
        if settled is not None and settled is not self._awaited:
            # Publishes that share a commit share its future: one callback for them all.
            settled.add_done_callback(self._on_settled)
            self._awaited = settled
        self._flush()

    def clear(self) -> None:
        self._pending.clear()

    def _on_settled(self, _: asyncio.Future[Any]) -> None:
        self._flush()

    def _flush(self) -> None:
        pending = self._pending
        while pending:
            answer = pending[0]
            waiter = answer.waiter
            error: BrokerError | None = answer.error
            if isinstance(waiter, Publishing):
                if not waiter.done():
                    return
                outcome = waiter.outcome()
                if isinstance(outcome, BrokerError):
                    error = outcome
            elif waiter is not None:
                if not waiter.done():
                    return
                failure = None if waiter.cancelled() else waiter.exception()
                if failure is not None:
                    error = failure if isinstance(failure, BrokerError) else Unavailable("the router failed")
            pending.popleft()
            if error is not None:
                pending.clear()
                self._failed(error, answer.receipt)
                return
            if answer.receipt is not None and not answer.quiet:
                self._receipt(answer.receipt)
            if answer.then_close:
                pending.clear()
                self._close()
                return
