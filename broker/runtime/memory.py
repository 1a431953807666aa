"""The process's memory limit (MEMORY_LIMIT) and its alarm, as RabbitMQ's memory
high watermark: above the limit, publishers are held back until memory falls
(docs/protocol.md, "Memory and flow control").

One guard per process, router or edge: it samples the resident set size every
SAMPLE_SECONDS, raises the alarm above the limit and clears it once the process
is back under it. While the alarm is on it hands free heap memory back to the
system (glibc's `malloc_trim`), or the resident size would not fall when the
memory is freed. The unsent data of all WebSocket connections together has a
budget below the limit (`UnsentBudget`): past it, the connections with the most
unsent data are closed as slow consumers, largest first.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable
from typing import Final, Protocol

log = logging.getLogger("broker.memory")

SAMPLE_SECONDS: Final = 0.1
# While the alarm is on, free heap memory goes back to the system this often at most.
TRIM_SECONDS: Final = 1.0
# The alarm clears under this fraction of the limit, so that it does not flap.
CLEAR_FRACTION: Final = 0.95
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


def machine_bytes() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def parse_memory_limit(value: str, *, machine: int) -> int:
    """`40%` (of the machine's memory), `512MiB`, `2GiB`, `1500000000`: bytes."""
    text = value.strip()
    units = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "B": 1}
    try:
        if text.endswith("%"):
            fraction = float(text[:-1]) / 100
            if not 0 < fraction <= 1:
                raise ValueError
            return int(machine * fraction)
        unit = next((unit for unit in units if text.endswith(unit)), "")
        number = float(text[: len(text) - len(unit)])
        if number <= 0:
            raise ValueError
        return int(number * units.get(unit, 1))
    except ValueError:
        raise ValueError(f"{value!r}: a percentage of the machine's memory (40%) or a size (512MiB, 2GiB)") from None


def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0); a no-op elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None
    return lambda: trim(0)


class MemoryGuard:
    """The alarm is on while this process is over its limit (`local_alarm`), or while the
    cluster's router says it is over its own (`router_alarm`, set by an edge's link): an
    edge holds its publishers back for the router too."""

    def __init__(self, limit: int, *, read_resident: Callable[[], int] = resident_bytes) -> None:
        self.limit = limit
        self.used = 0
        self.alarm = False
        self.local_alarm = False
        self.router_alarm = False
        self._read = read_resident
        self._clear = asyncio.Event()
        self._clear.set()
        self._trim = _malloc_trim()
        self._trimmed = 0.0
        self._watchers: list[Callable[[], None]] = []

    def sample(self) -> None:
        """Read the resident size; raise or clear the alarm."""
        self.used = self._read()
        if not self.local_alarm and self.used > self.limit:
            log.warning(
                "memory alarm: %d MiB in use, over MEMORY_LIMIT (%d MiB): publishers are held back until it falls",
                self.used >> 20, self.limit >> 20,
            )
            self._set(local=True)
        elif self.local_alarm:
            now = time.monotonic()
            if now - self._trimmed >= TRIM_SECONDS:
                self._trimmed = now
                self._trim()  # freed memory back to the system, so that the resident size shows it
                self.used = self._read()
            if self.used < self.limit * CLEAR_FRACTION:
                log.warning("memory alarm cleared: %d MiB in use (MEMORY_LIMIT %d MiB)", self.used >> 20, self.limit >> 20)
                self._set(local=False)

    def set_router_alarm(self, alarm: bool) -> None:
        """The cluster's router raised or cleared its alarm (an edge's link hears it)."""
        if alarm != self.router_alarm:
            log.warning("the router's memory alarm is %s: publishers here are %s", *(
                ("on", "held back") if alarm else ("off", "served again")
            ))
            self._set(router=alarm)

    def on_change(self, watcher: Callable[[], None]) -> None:
        """Call `watcher` whenever this process's own alarm rises or clears."""
        self._watchers.append(watcher)

    def _set(self, *, local: bool | None = None, router: bool | None = None) -> None:
        was_local = self.local_alarm
        if local is not None:
            self.local_alarm = local
        if router is not None:
            self.router_alarm = router
        self.alarm = self.local_alarm or self.router_alarm
        if self.alarm:
            self._clear.clear()
        else:
            self._clear.set()
        if self.local_alarm != was_local:
            for watcher in self._watchers:
                watcher()

    async def wait_clear(self) -> None:
        """Return once the alarm is off."""
        await self._clear.wait()

    async def run(self) -> None:
        while True:
            try:
                self.sample()
            except OSError:
                log.exception("reading the process's memory failed")
            await asyncio.sleep(SAMPLE_SECONDS)

    def state(self) -> dict[str, int | bool]:
        """As the stats frame and /health show it: `alarm` is this process's own."""
        return {"used": self.used, "limit": self.limit, "alarm": self.local_alarm, "router_alarm": self.router_alarm}


class Buffered(Protocol):
    """A connection's unsent data, as the budget sees it."""

    @property
    def buffered(self) -> int: ...

    def too_slow(self) -> None:
        """Close it as a slow consumer."""


class UnsentBudget:
    """The unsent data of every WebSocket connection of the process, together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._members: set[Buffered] = set()

    def join(self, member: Buffered) -> None:
        self._members.add(member)

    def leave(self, member: Buffered) -> None:
        self._members.discard(member)

    def over(self) -> None:
        """Past the budget: close the connections with the most unsent data until under it."""
        if self.total <= self.limit:
            return
        for member in sorted(self._members, key=lambda m: m.buffered, reverse=True):
            if self.total <= self.limit or member.buffered == 0:
                break
            log.info("WebSocket connection with %d bytes unsent closed: over WS_TOTAL_BUFFERED_BYTES", member.buffered)
            member.too_slow()


_guard: MemoryGuard | None = None
_budget: UnsentBudget | None = None


def configure(limit: int, unsent: int) -> MemoryGuard:
    """The process's guard and budget (once, at start-up)."""
    global _guard, _budget
    _guard = MemoryGuard(limit)
    _budget = UnsentBudget(unsent)
    return _guard


def guard() -> MemoryGuard | None:
    return _guard


def budget() -> UnsentBudget | None:
    return _budget
