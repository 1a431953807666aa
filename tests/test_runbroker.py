"""`runbroker`'s start-up: which database it names, how many migrations it applied, that a
database it cannot reach stops it in a line or two, and that a second broker on the same
SQLite file refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dj_database_url
import pytest
from django.db import connection
from django.db.utils import ConnectionHandler

from common.redact import without_password
from subscriptions.management.commands.runbroker import Command, describe_database
from tests.e2e.harness import ROOT, BrokerProcess, free_port, runbroker_that_stops


def test_a_sqlite_database_is_named_by_its_file() -> None:
    assert describe_database(connection) == f"SQLite {connection.settings_dict['NAME']}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://alice:s3cret@db.internal:5433/broker", "PostgreSQL 'broker' on db.internal:5433"),
        ("postgres://alice:s3cret@db.internal/broker", "PostgreSQL 'broker' on db.internal"),
        ("postgres:///broker", "PostgreSQL 'broker' on the local socket"),
    ],
)
def test_a_server_database_is_named_without_its_user_or_password(url: str, shown: str) -> None:
    handler = ConnectionHandler({"default": dj_database_url.parse(url)})
    assert describe_database(handler["default"]) == shown


@pytest.mark.django_db(transaction=True)
def test_migrating_a_migrated_database_applies_none() -> None:
    assert Command._migrate("single") == 0


@pytest.mark.e2e
def test_a_second_broker_on_the_same_sqlite_file_stops_at_start_up(tmp_path: Path) -> None:
    database = tmp_path / "broker.sqlite3"
    first = BrokerProcess(tmp_path, database_url=f"sqlite:///{database}")
    first.start()
    try:
        assert first.proc is not None
        env = {**first.env, "HTTP_PORT": str(free_port())}
        second = subprocess.run(
            [sys.executable, "manage.py", "runbroker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
        assert second.returncode != 0
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        expected = (
            f"CommandError: another broker is running on the SQLite database {database} "
            f"(locked by process {first.proc.pid}, {database}.router-lock): stop it first; one database has one broker"
        )
        assert lines == [expected]
        # The lock ends with its process, however it ends: a broker started after it runs.
        first.kill()
        again = BrokerProcess(tmp_path, database_url=f"sqlite:///{database}", name="again")
        again.start()
        again.close()
    finally:
        first.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://alice:s3cret@db.internal:5433/broker", "postgres://alice:***@db.internal:5433/broker"),
        ("postgres://alice@db.internal/broker", "postgres://alice@db.internal/broker"),
        ("postgres://:s3cret@db.internal/broker?sslmode=require", "postgres://:***@db.internal/broker?sslmode=require"),
        # urlsplit refuses these: the password is hidden all the same, up to the last @
        ("postgres://alice:s3cret@[::1/broker", "postgres://alice:***@[::1/broker"),
        ("redis://:s3@cret@[::1", "redis://:***@[::1"),
        ("redis://:pa#ss@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        ("postgres://alice:p/w?x@db.internal/broker", "postgres://alice:***@db.internal/broker"),
    ],
)
def test_a_database_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert without_password(url) == shown


@pytest.mark.e2e
def test_a_database_server_that_does_not_answer_stops_start_up_in_two_lines() -> None:
    port = free_port()  # nothing listens there
    done = runbroker_that_stops(f"postgres://postgres:s3cret@127.0.0.1:{port}/broker")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, done.stderr
    assert lines[0].startswith(
        f"CommandError: cannot connect to the database of DATABASE_URL=postgres://postgres:***@127.0.0.1:{port}/broker: "
    )
    assert "Connection refused" in lines[0]
    assert "s3cret" not in done.stderr


def test_a_sqlite_uri_filename_locks_its_file(tmp_path: Path) -> None:
    """A `file:` name (as DATABASES' NAME may be) was taken for a relative path: start-up
    died with a traceback, or locked another file."""
    import fcntl

    from broker.cluster.sqlite_lock import hold_router_lock

    database = tmp_path / "uri.sqlite3"
    locked = hold_router_lock(f"file:{database}?mode=rwc")
    assert locked == Path(f"{database}.router-lock")
    fd = os.open(locked, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):  # held: another open of it cannot lock it
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_router_lock_that_cannot_be_taken_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure to take the PostgreSQL router lock at start-up (the server gone again, a
    bad option) was logged and the broker served without it."""
    from broker.cluster import pg_lock
    from broker.cluster.sqlite_lock import RouterLockHeld

    monkeypatch.setattr(pg_lock, "RETRY_SECONDS", 0.01)
    monkeypatch.setattr(pg_lock, "_held", None)
    database = {"NAME": "broker", "USER": "postgres", "HOST": "127.0.0.1", "PORT": free_port()}
    with pytest.raises(RouterLockHeld, match="^cannot take the router lock of the PostgreSQL database: "):
        pg_lock.hold_router_lock(database)
    assert pg_lock._held is None
