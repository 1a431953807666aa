"""A cluster node (REDIS_URL set) whose Redis cannot be reached stops at start-up in a
line naming REDIS_URL, its password hidden, as for a database it cannot reach: a
router candidate and an edge alike. It fails, never skips, without PostgreSQL
(E2E_DATABASE_URL); nothing is migrated before Redis answers."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

from tests.e2e.harness import free_port, runbroker_that_stops

pytestmark = [pytest.mark.postgresql, pytest.mark.e2e]


@pytest.mark.parametrize("args", [(), ("--edge",)], ids=["candidate", "edge"])
def test_a_redis_that_does_not_answer_stops_start_up_in_one_line(args: tuple[str, ...]) -> None:
    database = os.environ.get("E2E_DATABASE_URL", "")
    assert database.startswith("postgres"), "E2E_DATABASE_URL must name PostgreSQL"
    port = free_port()  # nothing listens there
    done = runbroker_that_stops(database, *args, REDIS_URL=f"redis://:s3cret@127.0.0.1:{port}/0")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"CommandError: cannot connect to Redis at REDIS_URL=redis://:***@127.0.0.1:{port}/0: ")
    assert "refused" in lines[0]
    assert "s3cret" not in done.stderr + done.stdout


def test_a_redis_that_refuses_the_password_stops_start_up_with_its_words() -> None:
    database = os.environ.get("E2E_DATABASE_URL", "")
    assert database.startswith("postgres"), "E2E_DATABASE_URL must name PostgreSQL"
    # The tests' Redis (the cluster tests' TEST_REDIS_URL) with a password it does not take:
    # none at all (AUTH refused), or another one (WRONGPASS).
    redis = urlsplit(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    where = f"{redis.hostname}:{redis.port or 6379}"
    done = runbroker_that_stops(database, REDIS_URL=f"redis://:n0t-its-s3cret@{where}/0")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"CommandError: cannot connect to Redis at REDIS_URL=redis://:***@{where}/0: ")
    assert "AUTH" in lines[0] or "WRONGPASS" in lines[0]
    assert "n0t-its-s3cret" not in done.stderr + done.stdout
