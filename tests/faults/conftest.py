"""The fault tests' lab (test hosts, and a PostgreSQL and a Redis of its own, made once per
run) and a cluster of real `runbroker` processes on it for each test.

The long variants (`-m long_faults`) run only when the marker is asked for by name:
`pytest tests/faults -m long_faults` (README, "Tests").
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis

from tests.e2e.harness import BrokerProcess
from tests.faults.network import Host, Lab, LabUnavailable
from tests.faults.services import PostgresServer, RedisServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "long_faults" in (config.option.markexpr or ""):
        return
    long = [item for item in items if item.get_closest_marker("long_faults")]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if not item.get_closest_marker("long_faults")]


# Every node listens on its own host's address, on this port.
NODE_PORT = 8060


@dataclass
class FaultLab:
    lab: Lab
    db: Host
    redis: Host
    postgres: PostgresServer
    redis_server: RedisServer
    hosts: dict[str, Host]


@pytest.fixture(scope="session")
def fault_lab() -> Iterator[FaultLab]:
    try:
        lab = Lab()
    except LabUnavailable as missing:
        if os.environ.get("CI") == "true":
            raise  # CI has what they need: missing, it fails
        pytest.skip(f"{missing} (CI runs them)")
    postgres = redis_server = None
    try:
        db, redis_host = lab.host("db"), lab.host("redis")
        hosts = {name: lab.host(name) for name in ("router-a", "router-b", "edge-a", "edge-b")}
        postgres = PostgresServer(db, lab.prefix)
        redis_server = RedisServer(redis_host)
        yield FaultLab(lab, db, redis_host, postgres, redis_server, hosts)
    finally:
        if redis_server is not None:
            redis_server.close()
        if postgres is not None:
            postgres.close()
        lab.close()


class FaultCluster:
    """Router, standby and edges, each a `runbroker` on a test host of its own, on a fresh
    database and an emptied Redis."""

    def __init__(self, lab: FaultLab, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self.database = f"faults_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{lab.postgres.url}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        redis.Redis.from_url(lab.redis_server.url).flushall()
        self.database_url = f"{lab.postgres.url}/{self.database}"
        self.nodes: dict[str, BrokerProcess] = {}

    def host(self, name: str) -> Host:
        return self.lab.hosts[name]

    def node(self, host_name: str, *, edge: bool = False) -> BrokerProcess:
        """Start `runbroker` on the host (a router, or a standby when one runs; `edge`: an edge)."""
        host = self.host(host_name)
        process = BrokerProcess(
            self.workdir,
            database_url=self.database_url,
            extra_env={
                "REDIS_URL": self.lab.redis_server.url,
                "ALLOWED_HOSTS": "*",
                "BROKER_ALLOW_ANONYMOUS": "true",
                "SECRET_KEY": "fault-tests-" + uuid.uuid4().hex,
                "SECURE_COOKIES": "false",
            },
            args=("--edge",) if edge else (),
            name=f"{host_name}-{len(self.nodes)}",
            host=host.address,
            prefix=tuple(host.command()),
            port=NODE_PORT,  # the same after a restart: clients' addresses stay good
        )
        process.start()
        self.nodes[host_name] = process
        return process

    def close(self) -> None:
        for process in self.nodes.values():
            process.close()
        for host in self.lab.lab.hosts.values():
            for other in list(host.cut_from):
                self.lab.lab.heal(host, self.lab.lab.hosts[other])
        with psycopg.connect(f"{self.lab.postgres.url}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


@pytest.fixture
def fault_cluster(fault_lab: FaultLab, tmp_path: Path) -> Iterator[FaultCluster]:
    built = FaultCluster(fault_lab, tmp_path)
    try:
        yield built
    finally:
        built.close()
