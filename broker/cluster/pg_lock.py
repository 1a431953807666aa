"""One single broker per PostgreSQL database: the router lock, held while the process lives.

Without REDIS_URL, `runbroker` is its database's only router, but two of them on
one PostgreSQL database would each load it and route on their own. So a single
broker takes the cluster's router lock (lease.py's ROUTER_LOCK_KEY: a single
broker and a cluster's router exclude each other too) with pg_try_advisory_lock
on a connection of its own, before it migrates, and keeps it; PostgreSQL drops
it when that connection ends, as it does when the process ends, however it ends.

A single broker rides out a database outage, so losing that connection does
not stop it: a thread checks it every RETRY_SECONDS and, once it is gone,
reconnects and tries the lock again as soon as the database answers. If another
process took the lock meanwhile, this one exits (LEASE_LOST_EXIT) rather than
route as a second broker. Unlike a cluster's router, a single broker's commits
are not fenced (they are the hot path): a second broker started while this
one's lock connection was gone runs alongside it until that next try, at most
about RETRY_SECONDS after the database answers this one again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Final

from broker.cluster.lease import (
    HOLDS_KEY,
    LEASE_LOST_EXIT,
    ROUTER_LOCK_KEY,
    connection_kwargs,
    end_stalled,
    key_halves,
)
from broker.cluster.sqlite_lock import RouterLockHeld

log = logging.getLogger("broker.server")

# How often the lock's connection is checked, and the lock tried again once it is lost.
RETRY_SECONDS: Final = 1.0
# Tries at start-up, RETRY_SECONDS apart, before a failure to take the lock stops it.
START_ATTEMPTS: Final = 5

# The sessions holding the router lock on this database, for the refusal's message.
_HOLDER_SQL: Final = (
    "SELECT l.pid, a.application_name, a.client_addr FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid"
    f" WHERE {HOLDS_KEY}"
)


class PostgresRouterLock:
    """The router lock and the connection that holds it; its methods block."""

    def __init__(self, database: dict[str, Any]) -> None:
        self._database = database
        # Its process in its name: who holds the lock, for the refusal of another broker.
        self._kwargs = {**connection_kwargs(database), "application_name": f"broker-router-lock pid {os.getpid()}"}
        self._conn: Any = None

    def take(self) -> bool:
        """On a new connection: whether the lock is this process's now. Raises psycopg.Error."""
        import psycopg

        self.close()
        self._conn = psycopg.connect(autocommit=True, **self._kwargs)
        if self._try():
            return True
        # A holder whose session has waited for its client for long is no broker's any more
        # (its connection was cut without PostgreSQL knowing, this process's own before a
        # reconnect included): a live one checks its connection every RETRY_SECONDS.
        end_stalled(self._conn, ROUTER_LOCK_KEY, "router lock")
        return self._try()

    def _try(self) -> bool:
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (ROUTER_LOCK_KEY,)).fetchone()
        return bool(row and row[0])

    def refusal(self) -> str:
        """Why this broker may not run (call when `take()` said no)."""
        rows = self._conn.execute(_HOLDER_SQL, key_halves(ROUTER_LOCK_KEY)).fetchall()
        held = "held by another session"
        if rows:
            pid, name, client = rows[0]
            held = f"held by PostgreSQL backend {pid}, application_name {name!r}, client {client or 'the local socket'}"
        host, port = self._database.get("HOST"), self._database.get("PORT")
        where = f"{host}:{port}" if host and port else host or "the local socket"
        return (
            f"another broker is running on the PostgreSQL database {self._database.get('NAME')} on {where} "
            f"(its router lock is {held}): stop it first; one database has one broker"
        )

    def keep(self, lost: bool) -> None:
        """Check the connection for ever; once it is gone, take the lock again (thread body)."""
        import psycopg

        while True:
            time.sleep(RETRY_SECONDS)
            try:
                if not lost:
                    self._conn.execute("SELECT 1").fetchone()
                    continue
                if self.take():
                    log.warning("router lock taken again: this is still the database's only broker")
                    lost = False
                    continue
                refusal = self.refusal()
            except psycopg.Error as error:
                if not lost:
                    log.warning("lost the router lock's connection (%s): taking it again once the database answers", error)
                lost = True
                continue
            except Exception:  # never a silent end of the watch
                log.exception("checking the router lock failed: trying again")
                lost = True
                continue
            log.critical("%s: this broker stops rather than run as a second one", refusal)
            logging.shutdown()
            os._exit(LEASE_LOST_EXIT)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("closing the router lock's connection failed", exc_info=True)


_held: PostgresRouterLock | None = None


def hold_router_lock(database: dict[str, Any]) -> None:
    """Take the router lock of the PostgreSQL `database` (Django's settings) for this process,
    once; raises RouterLockHeld when another process holds it."""
    import psycopg

    global _held
    if _held is not None:
        return
    lock = PostgresRouterLock(database)
    for attempt in range(START_ATTEMPTS):
        try:
            if not lock.take():
                refusal = lock.refusal()
                lock.close()
                raise RouterLockHeld(refusal)
            break
        except psycopg.Error as error:
            # The database answered a moment ago: a passing failure, tried again; one that
            # lasts stops start-up, for no broker serves without its lock.
            if attempt == START_ATTEMPTS - 1:
                lock.close()
                raise RouterLockHeld(f"cannot take the router lock of the PostgreSQL database: {error}") from None
            time.sleep(RETRY_SECONDS)
    _held = lock
    threading.Thread(target=lock.keep, args=(False,), name="broker-router-lock", daemon=True).start()
