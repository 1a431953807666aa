"""A cluster of real `runbroker` processes on the real PostgreSQL and Redis, for the
integration tests (the `cluster` fixture is in conftest.py).

Needs E2E_DATABASE_URL (a PostgreSQL server) and Redis (TEST_REDIS_URL, default
redis://127.0.0.1:6379): fails, never skips, without them.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import httpx
import redis

from tests.e2e.harness import BrokerProcess, drop_postgres_database, postgres_database

REDIS_SERVER = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")

# `role()` asks a node's /health, blocking the loop: checked every 0.1 s, not more often.
HEALTH_INTERVAL = 0.1


class Cluster:
    def __init__(self, workdir: Path) -> None:
        server = os.environ.get("E2E_DATABASE_URL", "")
        assert server.startswith("postgres"), "E2E_DATABASE_URL must name a PostgreSQL server"
        self.server = server
        # A Redis database of its own, emptied, so no other run's batches get in. First:
        # without Redis, no PostgreSQL database is left behind.
        self.redis_url = f"{REDIS_SERVER}/{random.randint(1, 15)}"
        redis.Redis.from_url(self.redis_url).flushdb()
        self.database_url, self.database = postgres_database(server)
        self.workdir = workdir
        self.nodes: list[BrokerProcess] = []

    def node(self, name: str, *, edge: bool = False, env: dict[str, str] | None = None) -> BrokerProcess:
        process = BrokerProcess(
            self.workdir,
            database_url=self.database_url,
            extra_env={"REDIS_URL": self.redis_url, **(env or {})},
            args=("--edge",) if edge else (),
            name=name,
        )
        process.start()
        self.nodes.append(process)
        return process

    def close(self) -> None:
        for process in self.nodes:
            process.close()
        drop_postgres_database(self.server, self.database)


def role(node: BrokerProcess) -> str:
    try:
        return str(httpx.get(f"{node.url}/health", timeout=2).json()["role"])
    except httpx.HTTPError:
        return "down"
