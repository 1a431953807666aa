"""Who runs handlers in a `runhandlers` process: everyone together, or a suspect alone.

A suspect is a stored message given back again and again by connections that ended
(runner.py): it may be what ends them, its handler killing the process. It runs with
nothing else running in the process, so that if the process dies, the death is counted
against it and against no other message. Everything else (a sync handler's batch, an
async handler's attempt) shares the gate; a suspect waiting for it goes first, so that
a busy process cannot keep it out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Gate:
    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._sharing = 0
        self._alone = False
        self._waiting_alone = 0

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._alone and not self._waiting_alone)
            self._sharing += 1
        try:
            yield
        finally:
            async with self._changed:
                self._sharing -= 1
                self._changed.notify_all()

    @asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._changed:
            self._waiting_alone += 1
            try:
                await self._changed.wait_for(lambda: not self._alone and not self._sharing)
            finally:
                self._waiting_alone -= 1
                self._changed.notify_all()  # a waiter that gave up keeps nobody out
            self._alone = True
        try:
            yield
        finally:
            async with self._changed:
                self._alone = False
                self._changed.notify_all()
