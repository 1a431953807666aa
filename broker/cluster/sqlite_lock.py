"""One router per SQLite database: an exclusive lock on a file beside it.

On PostgreSQL a cluster's routers take turns by a lease (lease.py). SQLite has
no cluster, but two `runbroker`s on one file would still each load it and route
on their own: a queue declared on one is not in the other's memory. So the
router takes `flock(2)` on `<database>.router-lock`, non-blocking, and keeps it
for the life of its process; the kernel drops it when the process ends, however
it ends, so a broker restarted after a crash takes it at once. The holder's pid
is written in the file, for the message of the one refused.

An in-memory database is the process's own, and a platform without `fcntl`
(Windows) has no such lock: there nothing is locked.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Final

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

SUFFIX: Final = ".router-lock"


class RouterLockHeld(Exception):
    """This process may not be its database's router: another process holds the router
    lock, or the lock cannot be taken (the message says which)."""


# Lock file path -> its open descriptor, kept open (and so locked) until the process ends.
_held: dict[str, int] = {}


def lock_path(database: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(database)}{SUFFIX}")


def hold_router_lock(database: str | os.PathLike[str]) -> Path | None:
    """Lock the SQLite `database` file's router lock for this process (again: nothing to do).
    Returns the lock file, or None where nothing can be locked; raises RouterLockHeld when
    another process holds it."""
    if fcntl is None:
        return None
    name = os.fspath(database)
    if name.startswith("file:"):  # a URI filename: its path, without the query
        name = name.removeprefix("file:").split("?", 1)[0]
    path = lock_path(Path(name).resolve())
    if str(path) in _held:
        return path
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise RouterLockHeld(f"cannot open the SQLite database's router lock {path}: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        by = f" by process {holder}" if holder else ""
        raise RouterLockHeld(
            f"another broker is running on the SQLite database {os.fspath(database)} (locked{by}, {path}): "
            "stop it first; one database has one broker"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[str(path)] = fd
    return path


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
