"""Start and stop the real `runbroker` process for end-to-end tests.

The process is started as a user starts it (`python manage.py runbroker`),
on a free port, with a fresh database: SQLite in a temporary folder, or a new
PostgreSQL database when E2E_DATABASE_URL names a server (see .ci/run).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final

import httpx

from tests.eventually import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


# What the message browser's tests declare through the HTTP API (path, body): orders
# published to exchange `orders` with key `new` reach `work`, whose dead letters go through
# `dlx` to `dead`.
DEAD_LETTER_TOPOLOGY: Final = (
    ("/api/exchanges/", {"name": "orders", "type": "direct"}),
    ("/api/exchanges/", {"name": "dlx", "type": "fanout"}),
    ("/api/queues/", {"name": "dead"}),
    ("/api/bindings/", {"exchange": "dlx", "queue": "dead"}),
    ("/api/queues/", {"name": "work", "arguments": {"x-dead-letter-exchange": "dlx"}}),
    ("/api/bindings/", {"exchange": "orders", "queue": "work", "binding_key": "new"}),
)


# Ports handed out, from below the kernel's ephemeral range: a port picked there is
# not taken by a client socket's own port before the broker binds it.
_LOWEST_PORT: Final = 10000
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now that no other test process picks: scripts/test runs tests in
    several processes (pytest-xdist), each picking from its own share of the ports, and
    the broker binds it only a second or so later."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = int(worker) % workers if worker.isdigit() else 0
    highest = _ephemeral_start() - 1
    if highest - _LOWEST_PORT < 1000 * workers:  # the ephemeral range starts too low to pick below it
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    while True:
        port = random.randrange(_LOWEST_PORT + share, highest, workers)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (by a test's broker, or anything else)
        _handed_out.add(port)
        return port


def postgres_database(server_url: str) -> tuple[str, str]:
    """Create an empty database on the server; returns (its URL, its name)."""
    import psycopg

    name = f"e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = server_url.rsplit("/", 1)[0]
    return f"{base}/{name}", name


def drop_postgres_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def runbroker_that_stops(database_url: str, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`manage.py runbroker [args]` on `database_url` (and the environment's `settings`),
    expected to stop at start-up: its outcome."""
    env = {key: value for key, value in os.environ.items() if key not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env.update(DATABASE_URL=database_url, HTTP_PORT=str(free_port()), **settings)
    return subprocess.run(
        [sys.executable, "manage.py", "runbroker", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float, *, what: str, log: Callable[[], str]) -> int:
    """Send `sig` and wait for the exit; a process that ignores it is killed, and that fails."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise RuntimeError(f"{what} ignored signal {sig}:\n{log()}") from None
    return proc.returncode


class BrokerProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        extra_env: dict[str, str] | None = None,
        database_url: str | None = None,
        args: tuple[str, ...] = (),
        name: str = "broker",
        host: str = "127.0.0.1",
        prefix: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        """`database_url`: a database shared with other processes (a cluster's), left in
        place; without it the process gets a fresh one. `args` go to runbroker. `host`: the
        address it listens on (`port`: a free one unless given); `prefix`: what runs it (a
        test host's `ip netns exec`)."""
        self.workdir = workdir
        self.args = args
        self.prefix = prefix
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.ws_url = f"ws://{host}:{self.port}/ws"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._pg: tuple[str, str] | None = None
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
        env.update(
            HTTP_PORT=str(self.port),
            HTTP_HOST=host,
            DATABASE_NAME=str(workdir / "broker"),
            CHECKPOINT_IN_SECONDS="0.5",
            PYTHONUNBUFFERED="1",
        )
        server = os.environ.get("E2E_DATABASE_URL")
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        elif server:
            self._pg = (server, "")
            url, name = postgres_database(server)
            self._pg = (server, name)
            env["DATABASE_URL"] = url
        env.update(extra_env or {})
        self.env = env

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "manage.py", "runbroker", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        proc = self.proc

        def answering() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"runbroker exited with {proc.returncode}:\n{self.log()}")
            try:
                # /health: 200 once this node reaches a router (itself, or over its link).
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            eventually_sync(answering, timeout=START_TIMEOUT, interval=0.1, what="runbroker answers /health")
        except AssertionError as late:
            raise RuntimeError(f"{late}:\n{self.log()}") from None

    def manage(self, *args: str) -> str:
        """Run a management command on this broker's database; its standard output."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True,
            timeout=60,
        )
        return done.stdout

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        returncode = stop_process(self.proc, sig, timeout, what="runbroker", log=self.log)
        if self._log is not None:
            self._log.close()
            self._log = None
        return returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop(signal.SIGKILL)
        if self._pg is not None and self._pg[1]:
            drop_postgres_database(*self._pg)
