"""Exactly one active router: a PostgreSQL session advisory lock (issue 6).

A `runbroker` of a cluster asks for the lock on a connection of its own and
serves as an edge while it waits: a hot standby. PostgreSQL drops the lock
when that connection ends (the process died, or was cut off), and the
standby's next try takes it. The active router checks its connection every
`CHECK_SECONDS`; once it cannot, another may hold the lock, so it stops at
once (the exit code says why) rather than run as a second router. The new
router waits `TAKEOVER_GRACE` before it loads, so a router cut off from
the database has stopped committing by then.
"""

from __future__ import annotations

import logging
from typing import Any, Final

log = logging.getLogger("broker.cluster")

# pg_advisory_lock's key: "broker" in ASCII. Advisory locks are per database, so
# brokers on other databases of the same server do not contend.
ROUTER_LOCK_KEY: Final = 0x62726F6B6572
MIGRATION_LOCK_KEY: Final = ROUTER_LOCK_KEY + 1
POLL_SECONDS: Final = 0.5
CHECK_SECONDS: Final = 0.5
TAKEOVER_GRACE: Final = 1.5
# The exit code of a router that lost its lease (EX_TEMPFAIL): a supervisor restarts it,
# and it comes back as a standby.
LEASE_LOST_EXIT: Final = 75
APPLICATION_NAME: Final = "broker-router-lease"


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
    kwargs.update(database.get("OPTIONS") or {})
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
            return bool(row and row[0])
        except psycopg.Error as error:
            log.warning("standby: cannot reach the database for the router lease: %s", error)
            self.release()
            return False

    def check(self) -> None:
        """Raises when the connection holding the lock is gone."""
        self._conn.execute("SELECT 1").fetchone()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("closing the lease connection failed", exc_info=True)


def migrate_under_lock(database: dict[str, Any], migrate: Any) -> None:
    """Run `migrate()` while holding a lock, so nodes starting together do not race."""
    import psycopg

    with psycopg.connect(autocommit=True, **connection_kwargs(database)) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            migrate()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
