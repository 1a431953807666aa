"""Processes the benchmark starts (our broker, the ceiling server) and the ones it only watches.

Every process started here is registered in `STARTED` and stopped by
`stop_all`, which `__main__` runs in a `finally` and on SIGTERM, so Ctrl-C
never leaves a broker behind. Children get their own session: the terminal's
Ctrl-C reaches only the benchmark, which then stops them in order.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

import httpx
import psutil

ROOT: Final = Path(__file__).resolve().parents[1]
START_TIMEOUT: Final = 180.0  # a million stored messages take a while to load
STOP_TIMEOUT: Final = 30.0
# Idle connections per process in the connections scenario, plus headroom.
NOFILE: Final = 65536

STARTED: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile() -> None:
    """As many open files as the hard limit allows (the connections scenario needs ~10k)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def spawn(args: list[str], *, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    # Own session: the terminal's Ctrl-C reaches the benchmark, which stops the child in order.
    # The open-file limit is inherited: `__main__` raised it before starting anything.
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc in STARTED:
        STARTED.remove(proc)


def stop_all() -> None:
    for proc in list(reversed(STARTED)):
        stop(proc)


def cpu_seconds(proc: psutil.Process | None) -> float:
    """User + system CPU time of a server process (its threads included)."""
    if proc is None:
        return 0.0
    times = proc.cpu_times()
    return float(times.user + times.system)


def total_cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    """The CPU time of all the processes that make one server (a cluster's router and edges)."""
    return sum(cpu_seconds(proc) for proc in procs)


def rss_bytes(proc: psutil.Process | None) -> int:
    return 0 if proc is None else int(proc.memory_info().rss)


def find_beam() -> psutil.Process | None:
    """RabbitMQ's Erlang VM, found by name (the benchmark does not start RabbitMQ)."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        name = proc.info.get("name") or ""
        # Redis rewrites its title ("redis-server 127.0.0.1:6379"), padded with empty arguments.
        cmdline = " ".join(part for part in proc.info.get("cmdline") or [] if part)
        if name.startswith("beam") and "rabbit" in cmdline:
            return proc
    return None


def find_redis(url: str) -> psutil.Process | None:
    """The local redis-server serving `url`'s port, found by name (the benchmark does not start Redis)."""
    port = urllib.parse.urlsplit(url).port or 6379
    for proc in psutil.process_iter(["name", "cmdline"]):
        # Redis rewrites its title ("redis-server 127.0.0.1:6379"), padded with empty arguments.
        cmdline = " ".join(part for part in proc.info.get("cmdline") or [] if part)
        if (proc.info.get("name") or "").startswith("redis-server") and cmdline.endswith(f":{port}"):
            return proc
    return None


def find_postgres() -> list[psutil.Process]:
    """The local PostgreSQL server's processes (its backends work for every publisher alike)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if (proc.info.get("name") or "") in ("postgres", "postmaster"):
            found.append(proc)
    return found


class Database:
    """A fresh database for one broker: a temporary SQLite file, or a new PostgreSQL database."""

    def __init__(self, server_url: str | None) -> None:
        self.server_url = server_url
        self.tmpdir = Path(tempfile.mkdtemp(prefix="bench-broker-"))
        self.pg_name: str | None = None
        if server_url:
            import psycopg

            self.pg_name = f"bench_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_name}"')

    @property
    def sqlite_path(self) -> Path:
        return self.tmpdir / "broker.sqlite3"

    @property
    def url(self) -> str | None:
        if self.server_url is None or self.pg_name is None:
            return None
        return f"{self.server_url.rsplit('/', 1)[0]}/{self.pg_name}"

    def env(self) -> dict[str, str]:
        if self.url:
            return {"DATABASE_URL": self.url}
        return {"DATABASE_NAME": str(self.tmpdir / "broker")}

    def drop(self) -> None:
        if self.server_url and self.pg_name:
            import psycopg

            with psycopg.connect(self.server_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            self.pg_name = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def project_env(database: Database) -> dict[str, str]:
    """The environment of a process of the project on `database`: `runbroker`, or Django
    code of the project that publishes (bench/outbox_worker.py), on the same database."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_NAME", "DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env.update(database.env(), PYTHONUNBUFFERED="1")
    return env


class OurBroker:
    """`python manage.py runbroker` as users start it, on a free loopback port.

    A cluster's node gets its `args` (`--edge`), its `env` (REDIS_URL) and is
    ready at `/health` (200 once it reaches a router); a single broker at `/ping`.
    """

    def __init__(
        self,
        database: Database,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        ready: str = "/ping",
        name: str = "runbroker",
        server: str = "runbroker",
    ) -> None:
        self.database = database
        self.server = server
        self.args = args
        self.extra_env = env or {}
        self.ready = ready
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.log_path = database.tmpdir / f"{name}-{self.port}.log"
        self.startup_seconds = 0.0
        self._started = 0.0

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        env = project_env(self.database)
        env.update(HTTP_PORT=str(self.port), HTTP_HOST="127.0.0.1")
        # The connections scenario opens 10,000 from this one address (README, "Limits").
        env.setdefault("MAX_CONNECTIONS_PER_IP", "0")
        env.update(self.extra_env)
        self._started = time.monotonic()
        with open(self.log_path, "ab") as log:
            if self.server != "runbroker":  # runbroker migrates by itself; the others serve only
                subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
            self.proc = spawn(self.command(), env=env, log=log)
        self.ps = psutil.Process(self.proc.pid)

    def command(self) -> list[str]:
        """`runbroker`, or the same ASGI application under another server (`--server`),
        as the README says it may be run: the comparison that chose runbroker's."""
        app = "broker_project.asgi:application"
        if self.server == "daphne":
            return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), app]
        if self.server == "uvicorn":  # uvicorn's own WebSocket protocol, with httptools and uvloop
            return [
                sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port),
                "--ws", "websockets-sansio", "--http", "httptools", "--loop", "uvloop", "--no-access-log",
                "--log-level", "warning",
            ]
        return [sys.executable, "manage.py", "runbroker", *self.args]

    def wait_ready(self) -> None:
        assert self.proc is not None, "launch() first"
        deadline = self._started + START_TIMEOUT
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
                try:
                    if client.get(f"{self.url}{self.ready}").status_code == 200:
                        self.startup_seconds = time.monotonic() - self._started
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not answer {self.ready} within {START_TIMEOUT} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
            self.ps = None


class Cluster:
    """A cluster of ours: a router (`runbroker`) and two edges (`runbroker --edge`).

    The three share one fresh PostgreSQL database (made on `database_server`,
    dropped by `stop`) and a Redis database that is emptied first, so that no
    other run's batches get in. Edge A takes the publishers, edge B the
    subscribers: every message crosses Redis twice.
    """

    def __init__(self, database_server: str, redis_url: str) -> None:
        self.redis_url = redis_url
        self.database = database = Database(database_server)
        env = {"REDIS_URL": redis_url}
        self.router = OurBroker(database, env=env, ready="/health", name="router")
        self.edge_a = OurBroker(database, args=("--edge",), env=env, ready="/health", name="edge-a")
        self.edge_b = OurBroker(database, args=("--edge",), env=env, ready="/health", name="edge-b")
        self.nodes = (self.router, self.edge_a, self.edge_b)

    def start(self) -> None:
        import redis

        with redis.Redis.from_url(self.redis_url) as client:
            client.flushdb()
        for node in self.nodes:  # together: they migrate one at a time under their own lock
            node.launch()
        for node in self.nodes:
            node.wait_ready()

    def stop(self) -> None:
        for node in reversed(self.nodes):  # edges first: the router outlives its clients
            node.stop()
        self.database.drop()

    def describe(self) -> str:
        nodes = ", ".join(f"{n.name} pid {n.proc.pid if n.proc else '?'} on {n.url} (up in {n.startup_seconds:.2f} s)" for n in self.nodes)
        return f"cluster on PostgreSQL and {self.redis_url}: {nodes}"


class CeilingServer:
    """bench/ceiling_server.py in a subprocess: the trivial peer that measures the generator's ceiling."""

    def __init__(self) -> None:
        self.ws_port = free_port()
        self.http_port = free_port()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="bench-ceiling-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        args = [sys.executable, "-m", "bench.ceiling_server", str(self.ws_port), str(self.http_port)]
        with open(self.tmpdir / "ceiling.log", "ab") as log:
            self.proc = spawn(args, env=env, log=log)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ceiling server exited: " + (self.tmpdir / "ceiling.log").read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("ceiling server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)
