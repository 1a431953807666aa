"""Whether the message store answers, for `/health` and the metrics.

The writer's commits say so as they happen; when none has succeeded for
CHECK_SECONDS, a probe asks the database (a `SELECT 1` on the writer's own
thread, so a commit that hangs makes the probe wait, and time out, too).

The probe's time is measured on that thread, not by the event loop: a loop
busy with a burst of deliveries answers late, and must not make a database
that answered in a millisecond look away (a load balancer would drop the
node just when it is busiest). The loop waits HANG_SECONDS for a probe that
never comes back (a hung connection, or a hung commit ahead of it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from .timeouts import within

log = logging.getLogger("broker.store")

CHECK_SECONDS: Final = 1.0
PROBE_TIMEOUT_SECONDS: Final = 2.0  # an answer slower than this, on the probe's thread, is none
HANG_SECONDS: Final = 10.0


class StoreWatch:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.reachable = True
        self.error: str | None = None  # why not, while it is not
        self._last_answer = clock()
        self._probe: asyncio.Future[float] | None = None

    def answered(self) -> None:
        """The store did what was asked (a commit, a probe)."""
        if not self.reachable:
            log.info("the message store answers again")
        self.reachable, self.error, self._last_answer = True, None, self._clock()

    def failed(self, error: BaseException) -> None:
        if self.reachable:
            log.error("the message store does not answer: %s", error)
        self.reachable, self.error = False, f"{type(error).__name__}: {error}".strip(": ")

    async def run(self, probe: Callable[[], Awaitable[float]]) -> None:
        """Probe whenever the store has been quiet for CHECK_SECONDS. `probe()` returns the
        seconds the database took, as its own thread measured them."""
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            if self._clock() - self._last_answer < CHECK_SECONDS:
                continue
            if self._probe is None or self._probe.done():
                # One probe at a time: a probe stuck behind a hung commit is not asked again.
                self._probe = asyncio.ensure_future(probe())
            try:
                took = await within(asyncio.shield(self._probe), HANG_SECONDS)
            except TimeoutError:
                self.failed(TimeoutError(f"no answer within {HANG_SECONDS:g} s"))
            except Exception as error:
                self.failed(error)
            else:
                if isinstance(took, (int, float)) and took > PROBE_TIMEOUT_SECONDS:
                    self.failed(TimeoutError(f"the database took {took:.1f} s to answer"))
                else:
                    self.answered()
