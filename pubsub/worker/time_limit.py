"""A sync handler's time limit: an exception raised in its thread when the time is up.

Python cannot stop a thread; it can make one raise at its next bytecode
(`PyThreadState_SetAsyncExc`, as Dramatiq's time limits do). A handler busy in
Python code stops at once; one blocked in a C call (a socket read, a sleep)
stops when that call returns. On PostgreSQL the handler's statements carry a
`statement_timeout` of the same length as well (execution.py).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class TimeLimitExceeded(BaseException):
    """Raised in a handler over its time limit. A BaseException, so that the handler's own
    `except Exception` does not swallow it; the runner counts it as a failure."""


class Watched:
    """Runs calls on the calling thread, one at a time, which `interrupt` (any thread) may
    stop; with a `limit`, `interrupt_overdue` stops a call that outlived it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._deadline: float | None = None

    def run(self, fn: Callable[..., T], *args: Any, limit: float | None = None) -> T:
        with self._lock:
            self._thread = threading.get_ident()
            self._deadline = None if limit is None else time.monotonic() + limit
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._thread = None
                self._deadline = None

    def interrupt_overdue(self, now: float) -> bool:
        """Interrupt the call if it has outlived its limit (`now`: time.monotonic())."""
        with self._lock:  # one lock: never the next call's
            if self._deadline is None or now < self._deadline:
                return False
            return self._interrupt()

    def interrupt(self) -> bool:
        """Raise TimeLimitExceeded in the call, if it still runs."""
        with self._lock:
            return self._interrupt()

    def _interrupt(self) -> bool:
        if self._thread is None:
            return False
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread), ctypes.py_object(TimeLimitExceeded))
        self._deadline = None
        return True
