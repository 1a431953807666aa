"""Measurements: what one scenario run yields, and the sampling helpers the scenarios share."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import psutil

from .processes import cpu_seconds, total_cpu_seconds

if TYPE_CHECKING:
    from .targets import Target

# Sampling step of windows that end early (a queue drained).
POLL: Final = 0.02


@dataclass
class Measurement:
    """One run of one scenario against one target."""

    value: float | None
    count: int = 0  # messages (or deliveries, requests) inside the window
    cpu: float | None = None  # server CPU seconds inside the window (all of a cluster's processes)
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_per_1k(self) -> float | None:
        if self.cpu is None or self.count <= 0:
            return None
        return self.cpu / self.count * 1000


@dataclass
class Mode:
    """Durations and sizes: --quick or full."""

    quick: bool
    warmup: float
    duration: float
    repetitions: int
    recovery_messages: int
    connections: int

    @classmethod
    def of(cls, quick: bool) -> Mode:
        if quick:
            return cls(True, warmup=0.3, duration=1.5, repetitions=1, recovery_messages=100_000, connections=1_000)
        return cls(False, warmup=1.0, duration=6.0, repetitions=3, recovery_messages=1_000_000, connections=10_000)


def _others(skip: set[int]) -> dict[int, float]:
    """CPU seconds so far of every process but `skip` (kernel network time is nobody's: not counted)."""
    found: dict[int, float] = {}
    for proc in psutil.process_iter():
        if proc.pid in skip:
            continue
        try:
            found[proc.pid] = cpu_seconds(proc)
        except psutil.Error:
            pass
    return found


# Cores used by processes other than the server and the generator during the last window.
last_other_cores: list[float] = [0.0]
# CPU seconds of each process of the last window, by role: the broker (a cluster's router),
# each edge, each support process (Redis), and PostgreSQL's processes together.
last_cpu_by_role: dict[str, float] = {}


def _cpu_by_role(target: Target) -> dict[str, float]:
    found = {("router" if target.peers else "broker"): cpu_seconds(target.process)} if target.process else {}
    found.update({name: cpu_seconds(proc) for name, proc in target.peers.items()})
    for proc in target.support:
        with contextlib.suppress(psutil.Error):
            found[proc.name()] = cpu_seconds(proc)
    for proc in psutil.process_iter(["name"]):  # each of PostgreSQL's, summed by `_cpu_split`
        if (proc.info.get("name") or "").startswith("postgres"):
            with contextlib.suppress(psutil.Error):
                found[f"postgresql/{proc.pid}"] = cpu_seconds(proc)
    return found


def _cpu_split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds by role between two readings; a process gone by the second is left out."""
    split: dict[str, float] = {}
    for key, cpu in after.items():
        role = key.split("/", 1)[0]
        split[role] = split.get(role, 0.0) + cpu - before.get(key, 0.0)
    return split


async def window(
    counter: Callable[[], int],
    target: Target,
    mode: Mode,
    *,
    done: Callable[[], bool] | None = None,
) -> tuple[int, float, float | None]:
    """Skip the warm-up, then count for `mode.duration` (or until `done()`): (count, seconds, server CPU seconds).

    The server CPU is the sum over `target.servers` (one broker, or a cluster's
    router and edges); None when there are none to watch.

    Also records in `last_other_cores` how busy the rest of the machine was, so
    that a run disturbed by another program is flagged rather than trusted (the
    target's `support`, a cluster's Redis, is part of the run, not another program).
    """
    loop = asyncio.get_running_loop()
    processes = target.servers
    skip = {psutil.Process().pid} | {process.pid for process in (*processes, *target.support)}
    await asyncio.sleep(mode.warmup)
    others0 = _others(skip)
    roles0 = _cpu_by_role(target)
    c0, t0, cpu0 = counter(), loop.time(), total_cpu_seconds(processes)
    end = t0 + mode.duration
    while loop.time() < end and not (done is not None and done()):
        await asyncio.sleep(min(POLL, max(0.0, end - loop.time())))
    c1, t1, cpu1 = counter(), loop.time(), total_cpu_seconds(processes)
    roles1 = _cpu_by_role(target)
    last_cpu_by_role.clear()
    last_cpu_by_role.update(_cpu_split(roles0, roles1))
    others1 = _others(skip)
    other = sum(cpu - others0.get(pid, 0.0) for pid, cpu in others1.items())
    last_other_cores[0] = max(0.0, other / (t1 - t0)) if t1 > t0 else 0.0
    return c1 - c0, t1 - t0, (cpu1 - cpu0) if processes else None


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median_of(runs: list[Measurement]) -> Measurement:
    """The run with the median value (its CPU and notes come with it)."""
    valid = [run for run in runs if run.value is not None]
    if not valid:
        return runs[0] if runs else Measurement(None, note="no run")
    valid.sort(key=lambda run: run.value or 0.0)
    chosen = valid[(len(valid) - 1) // 2] if len(valid) % 2 == 0 else valid[len(valid) // 2]
    if len(valid) > 1:
        spread = statistics.pstdev([run.value or 0.0 for run in valid]) / (statistics.mean([run.value or 0.0 for run in valid]) or 1)
        chosen.extra["spread"] = spread
    return chosen
