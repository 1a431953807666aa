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
import uuid
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


def rss_bytes(proc: psutil.Process | None) -> int:
    return 0 if proc is None else int(proc.memory_info().rss)


def find_beam() -> psutil.Process | None:
    """RabbitMQ's Erlang VM, found by name (the benchmark does not start RabbitMQ)."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        name = proc.info.get("name") or ""
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if name.startswith("beam") and "rabbit" in cmdline:
            return proc
    return None


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


class OurBroker:
    """`python manage.py runbroker` as users start it, on a free loopback port."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.log_path = database.tmpdir / f"runbroker-{self.port}.log"
        self.startup_seconds = 0.0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_NAME", "DJANGO_SETTINGS_MODULE")}
        env.update(self.database.env(), HTTP_PORT=str(self.port), HTTP_HOST="127.0.0.1", PYTHONUNBUFFERED="1")
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = spawn([sys.executable, "manage.py", "runbroker"], env=env, log=log)
        self.ps = psutil.Process(self.proc.pid)
        deadline = started + START_TIMEOUT
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"runbroker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
                try:
                    if client.get(f"{self.url}/ping").status_code == 200:
                        self.startup_seconds = time.monotonic() - started
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"runbroker did not answer /ping within {START_TIMEOUT} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
            self.ps = None


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
