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
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class TimeLimitExceeded(BaseException):
    """Raised in a handler over its time limit. A BaseException, so that the handler's own
    `except Exception` does not swallow it; the runner counts it as a failure."""


class Watched:
    """Runs one call on the calling thread, which `interrupt` (any thread) may stop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: int | None = None
        self.interrupted = False

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self._thread = threading.get_ident()
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._thread = None

    def interrupt(self) -> bool:
        """Raise TimeLimitExceeded in the call, if it still runs."""
        with self._lock:
            if self._thread is None:
                return False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread), ctypes.py_object(TimeLimitExceeded))
            self.interrupted = True
            return True
