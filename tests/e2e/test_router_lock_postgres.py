"""A single broker on PostgreSQL holds the router lock (broker/cluster/pg_lock.py): a
second `runbroker` on its database stops at start-up; one whose lock connection is
cut takes the lock again, or stops if another process took it meanwhile. Each test
runs on a database of its own on E2E_DATABASE_URL's server (created and dropped by
the harness); it fails, never skips, without one."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from broker.cluster.lease import LEASE_LOST_EXIT, ROUTER_LOCK_KEY
from tests.e2e.harness import ROOT, BrokerProcess, free_port, runbroker_that_stops
from tests.eventually import eventually_sync

pytestmark = [pytest.mark.postgresql, pytest.mark.e2e]

# The backend holding the router lock of the current database, with its application_name.
HOLDER_SQL = (
    "SELECT l.pid, a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s"
    " AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    assert os.environ.get("E2E_DATABASE_URL", "").startswith("postgres"), "E2E_DATABASE_URL must name PostgreSQL"
    process = BrokerProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.close()


def holder(database_url: str) -> tuple[int, str] | None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(HOLDER_SQL, (ROUTER_LOCK_KEY >> 32, ROUTER_LOCK_KEY & 0xFFFFFFFF)).fetchone()
    return (row[0], row[1]) if row else None


def test_a_second_broker_on_the_same_postgresql_database_stops_at_start_up(broker: BrokerProcess, tmp_path: Path) -> None:
    assert broker.proc is not None
    url = broker.env["DATABASE_URL"]
    found = holder(url)
    assert found is not None and found[1] == f"broker-router-lock pid {broker.proc.pid}"
    second = subprocess.run(
        [sys.executable, "manage.py", "runbroker"], cwd=ROOT, env={**broker.env, "HTTP_PORT": str(free_port())},
        capture_output=True, text=True, timeout=60,
    )
    assert second.returncode != 0
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    parts = urlsplit(url)
    expected = (
        f"CommandError: another broker is running on the PostgreSQL database {parts.path[1:]} on "
        f"{parts.hostname}:{parts.port} (its router lock is held by PostgreSQL backend {found[0]}, "
        f"application_name 'broker-router-lock pid {broker.proc.pid}', client 127.0.0.1): "
        "stop it first; one database has one broker"
    )
    assert lines == [expected], second.stderr
    # The lock ends with its process, however it ends: a broker started after it runs.
    broker.kill()
    again = BrokerProcess(tmp_path, database_url=url, name="again")
    try:
        again.start()
        assert again.proc is not None
        now = holder(url)
        assert now is not None and now[1] == f"broker-router-lock pid {again.proc.pid}"
    finally:
        again.close()


def test_a_broker_whose_lock_connection_is_cut_takes_the_lock_again(broker: BrokerProcess) -> None:
    assert broker.proc is not None
    url = broker.env["DATABASE_URL"]
    name = f"broker-router-lock pid {broker.proc.pid}"
    found = holder(url)
    assert found is not None and found[1] == name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (found[0],))
    eventually_sync(
        lambda: (now := holder(url)) is not None and now[0] != found[0] and now[1] == name,
        timeout=10, interval=0.1, what="the broker holds the router lock again",
    )
    assert broker.proc.poll() is None
    assert httpx.get(f"{broker.url}/health", timeout=5).status_code == 200


def test_a_broker_that_finds_its_lock_taken_meanwhile_stops(broker: BrokerProcess) -> None:
    assert broker.proc is not None
    url = broker.env["DATABASE_URL"]
    found = holder(url)
    assert found is not None
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (found[0],))
        # Another process takes the lock before the broker's next try (every second).
        eventually_sync(
            lambda: bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (ROUTER_LOCK_KEY,)).fetchone()[0]),
            timeout=1, interval=0.01, what="the lock taken",
        )
        assert broker.proc.wait(10) == LEASE_LOST_EXIT
    assert "another broker is running on the PostgreSQL database" in broker.log()


def test_a_database_that_does_not_exist_stops_start_up_in_one_line() -> None:
    """runbroker reports a database not created in one line naming DATABASE_URL, its
    password hidden (tests/test_runbroker.py has the server that does not answer)."""
    server = urlsplit(os.environ.get("E2E_DATABASE_URL", ""))
    assert server.scheme.startswith("postgres"), "E2E_DATABASE_URL must name a PostgreSQL server"
    missing = f"missing_{uuid.uuid4().hex[:12]}"
    url = server._replace(netloc=f"{server.username or 'postgres'}:s3cret@{server.hostname}:{server.port or 5432}")
    done = runbroker_that_stops(url._replace(path=f"/{missing}").geturl())
    assert done.returncode != 0
    shown = f"{server.username or 'postgres'}:***@{server.hostname}:{server.port or 5432}/{missing}"
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"CommandError: cannot connect to the database of DATABASE_URL=postgres://{shown}: ")
    assert line.endswith(f'database "{missing}" does not exist')
