"""The load generator: publishers and consumers that run the same code for every target.

Each client owns one WebSocket connection and runs until its `stop` event is
set or its deadline passes, whichever comes first; every wait is bounded.
Counters are plain ints read by the scenario between samples (one event loop,
no locks).
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .dialects import Dialect, body_text, seq_of, ts_of

# The longest a client waits for anything (a confirm, a frame) before it gives up.
WAIT: Final = 10.0
# Pacing step of rate-limited publishers: below the latencies we measure.
PACE_STEP: Final = 0.001


class Publisher:
    """Publishes with a confirm for each message, at most `window` unconfirmed (optionally paced)."""

    def __init__(self, dialect: Dialect, destination: str, *, persistent: bool, window: int) -> None:
        self.dialect = dialect
        self.before, self.middle, self.after = dialect.publish_parts(destination, persistent=persistent)
        self.static_body = body_text()
        self.window = window
        self.sent = 0
        self.confirmed = 0
        self.ws: ClientConnection | None = None
        self._room = asyncio.Event()
        self.error: BaseException | None = None
        # Set by a scenario to hold publishing while subscribers lag (fanout).
        self.hold: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self, url: str) -> None:
        self.ws = await self.dialect.open(url)
        # Confirms are read from here to `close`, so `drain` still sees them after `run`.
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        confirms_in = self.dialect.confirms_in
        async for data in self.ws:
            n = confirms_in(data if isinstance(data, str) else data.decode())
            if n:
                self.confirmed += n
                if self.sent - self.confirmed < self.window:
                    self._room.set()

    async def run(self, stop: asyncio.Event, deadline: float, *, rate: float | None = None, timestamps: bool = False) -> None:
        """Publish until `stop` or `deadline` (loop.time()); `rate` messages/s if given, else as fast as the window allows."""
        assert self.ws is not None and self._reader is not None
        loop = asyncio.get_running_loop()
        reader = self._reader
        send = self.ws.send
        before, middle, after, body = self.before, self.middle, self.after, self.static_body
        started = loop.time()
        try:
            while not stop.is_set() and loop.time() < deadline and not reader.done():
                room = self.window - (self.sent - self.confirmed)
                if rate is not None:
                    due = int((loop.time() - started) * rate) - self.sent
                    if due <= 0:
                        await asyncio.sleep(PACE_STEP)
                        continue
                    room = min(room, due)
                if room <= 0:
                    self._room.clear()
                    try:
                        await asyncio.wait_for(self._room.wait(), WAIT)
                    except TimeoutError:
                        raise RuntimeError(f"no confirm within {WAIT} s ({self.sent} sent, {self.confirmed} confirmed)") from None
                    continue
                if self.hold is not None and not self.hold.is_set():
                    try:
                        await asyncio.wait_for(self.hold.wait(), WAIT)
                    except TimeoutError:
                        raise RuntimeError(f"subscribers made no progress within {WAIT} s") from None
                    continue
                for _ in range(room):
                    if timestamps:
                        body = body_text(time.perf_counter(), self.sent)
                    await send(before + str(self.sent) + middle + body + after)
                    self.sent += 1
            if reader.done():
                reader.result()
        except ConnectionClosed as error:
            self.error = error
            raise

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for the confirms of what was sent."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.confirmed < self.sent and loop.time() < end and not (self._reader and self._reader.done()):
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()


class Consumer:
    """Subscribes and counts deliveries; acks each one individually when `client_ack`.

    With `latencies` it keeps each delivery's age (its body's `ts`); with `arrivals`
    the time each body's `seq` arrived (perf_counter, CLOCK_MONOTONIC: comparable
    with times taken in other processes, bench/outbox_worker.py's).
    """

    def __init__(
        self,
        dialect: Dialect,
        *,
        queue: str | None = None,
        exchange: str | None = None,
        client_ack: bool,
        prefetch: int = 100,
        latencies: bool = False,
        arrivals: dict[int, float] | None = None,
    ) -> None:
        self.dialect = dialect
        self.queue = queue
        self.exchange = exchange
        self.client_ack = client_ack
        self.prefetch = prefetch
        self.received = 0
        self.latencies: list[float] | None = [] if latencies else None
        self.arrivals = arrivals
        self.ws: ClientConnection | None = None
        # Deliveries that arrived before the subscription's reply: handled first by `run`.
        self._early: list[str] = []

    async def open(self, url: str, tag: str = "s1") -> None:
        self.ws = await self.dialect.open(url)
        await self.ws.send(
            self.dialect.subscribe_frame(tag, queue=self.queue, exchange=self.exchange, client_ack=self.client_ack, prefetch=self.prefetch)
        )
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            data = await asyncio.wait_for(self.ws.recv(), WAIT)
            text = data if isinstance(data, str) else data.decode()
            if self.dialect.is_subscribed(text, tag):
                return
            self._early.append(text)
        raise RuntimeError("no subscription reply")

    async def run(self, stop: asyncio.Event, deadline: float, *, limit: int | None = None) -> None:
        """Receive until `stop`, `deadline` (loop.time()) or `limit` deliveries, whichever comes first."""
        assert self.ws is not None
        send = self.ws.send
        ack_for, is_delivery = self.dialect.ack_for, self.dialect.is_delivery
        latencies = self.latencies
        arrivals = self.arrivals
        client_ack = self.client_ack
        perf = time.perf_counter
        if stop.is_set():
            return
        for text in self._early:
            await self._handle_early(text)
        self._early.clear()
        waiter = asyncio.create_task(stop.wait())
        me = asyncio.current_task()
        assert me is not None
        waiter.add_done_callback(lambda done: None if done.cancelled() else me.cancel())
        try:
            async with asyncio.timeout_at(deadline):
                async for data in self.ws:
                    text = data if isinstance(data, str) else data.decode()
                    if client_ack:
                        ack = ack_for(text)
                        if ack is None:
                            continue
                        await send(ack)
                    elif not is_delivery(text):
                        continue
                    self.received += 1
                    if latencies is not None:
                        latencies.append(perf() - ts_of(text))
                    if arrivals is not None:
                        arrivals[seq_of(text)] = perf()
                    if limit is not None and self.received >= limit:
                        return
        except (TimeoutError, asyncio.CancelledError):
            if not (stop.is_set() or asyncio.get_running_loop().time() >= deadline):
                raise
        except ConnectionClosed:
            if not stop.is_set():
                raise
        finally:
            waiter.cancel()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def _handle_early(self, text: str) -> None:
        assert self.ws is not None
        if self.client_ack:
            ack = self.dialect.ack_for(text)
            if ack is None:
                return
            await self.ws.send(ack)
        elif not self.dialect.is_delivery(text):
            return
        self.received += 1
        if self.latencies is not None:
            self.latencies.append(time.perf_counter() - ts_of(text))
        if self.arrivals is not None:
            self.arrivals[seq_of(text)] = time.perf_counter()
