"""Exactly one active router: a PostgreSQL session advisory lock.

A `runbroker` of a cluster asks for the lock on a connection of its own and
serves as an edge while it waits: a hot standby. PostgreSQL drops the lock
when that connection ends (the process died, or was cut off), and the
standby's next try takes it. The active router checks its connection every
`CHECK_SECONDS`; once it cannot, another may hold the lock, so it stops at
once (the exit code says why) rather than run as a second router.

A router that stops without its connection ending (SIGSTOP, a frozen machine
or virtual machine: the kernel still answers for it) would keep the lock for
as long as it is stopped. The router runs its check from the moment it holds
the lock, so its session is never idle for long; a standby that finds the lock
held by a session idle for `STALLED_AFTER` ends that session
(`pg_terminate_backend`: the same database user may) and takes the lock.

A router whose loop stalls for seconds could still commit after it lost the
lock, so every commit is fenced (`WriteFence`): inside its transaction the
writer takes WRITE_FENCE_KEY shared and checks that its own lease connection
still holds the lock, or the commit fails. A new router takes WRITE_FENCE_KEY
exclusively once, after the lease and before it loads (`wait_for_old_writes`):
a commit that passed its check before the takeover has ended by then, and
one that starts after it sees the new holder. A commit of a stopped router
would hold WRITE_FENCE_KEY for as long as it is stopped: a session that holds
it and has waited for its client for `STALLED_AFTER` is ended too (its
transaction rolls back; nothing of it was confirmed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger("broker.cluster")

# pg_advisory_lock's key: "broker" in ASCII. Advisory locks are per database, so
# brokers on other databases of the same server do not contend.
ROUTER_LOCK_KEY: Final = 0x62726F6B6572
MIGRATION_LOCK_KEY: Final = ROUTER_LOCK_KEY + 1
# Every commit of a router's writer holds this lock shared; a new router takes it once,
# exclusively, after the lease and before it loads: it waits for the commits in flight.
WRITE_FENCE_KEY: Final = ROUTER_LOCK_KEY + 2
POLL_SECONDS: Final = 0.5
CHECK_SECONDS: Final = 0.5
TAKEOVER_GRACE: Final = 1.5
# A session holding the lease (or a commit's fence) that has waited this long for its
# client, which checks every CHECK_SECONDS, belongs to a stopped router: a standby ends it.
STALLED_AFTER: Final = 5.0
# The exit code of a router that lost its lease (EX_TEMPFAIL): a supervisor restarts it,
# and it comes back as a standby.
LEASE_LOST_EXIT: Final = 75
APPLICATION_NAME: Final = "broker-router-lease"


DJANGO_OPTIONS: Final = frozenset({"pool", "server_side_binding", "isolation_level", "assume_role"})


def connection_kwargs(database: dict[str, Any]) -> dict[str, Any]:
    """psycopg.connect arguments for Django's database settings, with keepalives so that
    a connection cut off by the network is noticed in seconds, not hours."""
    kwargs: dict[str, Any] = {
        "dbname": database.get("NAME") or None,
        "user": database.get("USER") or None,
        "password": database.get("PASSWORD") or None,
        "host": database.get("HOST") or None,
        "port": database.get("PORT") or None,
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "application_name": APPLICATION_NAME,
    }
    # Django's own OPTIONS are not psycopg's: left out.
    kwargs.update({key: value for key, value in (database.get("OPTIONS") or {}).items() if key not in DJANGO_OPTIONS})
    return {key: value for key, value in kwargs.items() if value is not None}


class RouterLease:
    """The lock and the connection that holds it; its methods block (run them in a thread)."""

    def __init__(self, database: dict[str, Any]) -> None:
        self._kwargs = connection_kwargs(database)
        self._conn: Any = None

    def try_acquire(self) -> bool:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(autocommit=True, **self._kwargs)
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (ROUTER_LOCK_KEY,)).fetchone()
            if row and row[0]:
                return True
            self._end_stalled(ROUTER_LOCK_KEY, "router lease")  # the next try takes it
            return False
        except psycopg.Error as error:
            log.warning("standby: cannot reach the database for the router lease: %s", error)
            self.release()
            return False

    def check(self) -> None:
        """Raises when the connection holding the lock is gone."""
        self._conn.execute("SELECT 1").fetchone()

    def fence(self) -> WriteFence:
        """The check for this holder's commits (call once the lock is taken). The lease
        and the writer must reach PostgreSQL itself, not a pooler that shares sessions."""
        row = self._conn.execute(
            "SELECT pg_backend_pid(), backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
        return WriteFence(row[0], row[1])

    def term(self) -> int:
        """This holder's term (call once the lock is taken): a new transaction id, higher
        than any an earlier holder took."""
        row = self._conn.execute("SELECT txid_current()").fetchone()
        return int(row[0])

    def wait_for_old_writes(self) -> None:
        """Until every commit that a previous router's writer has under way has ended (or,
        its router stopped, was ended)."""
        while not self._conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITE_FENCE_KEY,)).fetchone()[0]:
            self._end_stalled(WRITE_FENCE_KEY, "commit")
            time.sleep(POLL_SECONDS)
        self._conn.execute("SELECT pg_advisory_unlock(%s)", (WRITE_FENCE_KEY,))

    def _end_stalled(self, key: int, what: str) -> None:
        end_stalled(self._conn, key, what)

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("closing the lease connection failed", exc_info=True)


def end_stalled(conn: Any, key: int, what: str) -> None:
    """End the sessions that hold `key` and have waited for their client for STALLED_AFTER:
    their process is stopped, or gone without PostgreSQL knowing yet (a holder that lives
    checks its connection every CHECK_SECONDS). `conn`: a psycopg connection."""
    import psycopg

    for pid, waited in conn.execute(_STALLED_SQL, [*key_halves(key), STALLED_AFTER]).fetchall():
        log.warning("the %s's holder (backend %s) has not been heard from for %.1f s: ending its session", what, pid, waited)
        try:
            conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        except psycopg.errors.InsufficientPrivilege as error:
            log.error("cannot end the %s holder's session (docs/deploy.md, Limits): %s", what, error)


class LeaseLost(Exception):
    """A commit of a router that no longer holds the lease: refused, nothing written."""


# pg_locks (as `l`) rows of the sessions holding an advisory key on this database: pg_locks
# shows a bigint key as two 32-bit halves (`key_halves`), with objsubid 1.
HOLDS_KEY: Final = (
    "l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s"
    " AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def key_halves(key: int) -> tuple[int, int]:
    """An advisory key as pg_locks shows it (classid, objid), the parameters of HOLDS_KEY."""
    return key >> 32, key & 0xFFFFFFFF


# The holder is named by its backend's pid and start time: a pid alone may be reused.
_HOLDER_SQL: Final = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
    f" WHERE {HOLDS_KEY}"
    " AND l.pid = %s AND a.backend_start = %s)"
)


# Holders of an advisory key whose session waits for its client (idle, idle in a
# transaction, or in a statement reading from it, as COPY does) since long enough.
_STALLED_SQL: Final = (
    "SELECT a.pid, extract(epoch FROM clock_timestamp() - a.state_change)::float"
    " FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
    f" WHERE {HOLDS_KEY}"
    " AND (a.state IN ('idle', 'idle in transaction', 'idle in transaction (aborted)')"
    " OR a.wait_event IN ('ClientRead', 'ClientWrite'))"
    " AND a.state_change < clock_timestamp() - make_interval(secs => %s)"
)


@dataclass(frozen=True, slots=True)
class WriteFence:
    """Run first inside each of the writer's transactions (storage/store.py)."""

    lease_pid: int  # the backend of the connection that holds the lease
    lease_started: Any  # and its start (a datetime), which tells it from a later one with the same pid

    def __call__(self, cursor: Any) -> None:
        # Two statements: the shared lock is held before the holder is looked at.
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [WRITE_FENCE_KEY])
        key = ROUTER_LOCK_KEY
        cursor.execute(_HOLDER_SQL, [*key_halves(key), self.lease_pid, self.lease_started])
        row = cursor.fetchone()
        if not (row and row[0]):
            raise LeaseLost("this router no longer holds the router lease: commit refused")


def migrate_under_lock(database: dict[str, Any], migrate: Any) -> None:
    """Run `migrate()` while holding a lock, so nodes starting together do not race."""
    import psycopg

    with psycopg.connect(autocommit=True, **connection_kwargs(database)) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            migrate()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
