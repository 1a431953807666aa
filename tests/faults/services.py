"""PostgreSQL and Redis servers of the fault tests' own, each on a test host of its own.

The machine's servers listen on loopback only, which no other namespace reaches:
the fault tests start their own from the same binaries (Debian's PostgreSQL, as
user postgres, in a fresh data folder; redis-server with nothing on disk).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.faults.network import Host

POSTGRES_USER = "postgres"


def _spawn(command: list[str], log_path: Path, host: Host, port: int, what: str) -> subprocess.Popen[bytes]:
    """Start a server, its output appended to `log_path`, and wait until it listens."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    _wait_for_port(host.address, port, what, proc, log_path)
    return proc


def _wait_for_port(address: str, port: int, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {address}:{port}:\n{log.read_text(errors='replace')}")


def postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql (Debian's postgresql)")
    return versions[-1].parent


class PostgresServer:
    """A PostgreSQL server on `host`, port 5432, trusting the lab's addresses."""

    def __init__(self, host: Host, lab_prefix: str) -> None:
        self.host = host
        self.folder = Path(tempfile.mkdtemp(prefix="pf-postgres-"))
        shutil.chown(self.folder, POSTGRES_USER, POSTGRES_USER)
        data = self.data = self.folder / "data"
        self.log_path = self.folder / "server.log"
        binaries = postgres_bin()
        subprocess.run(
            ["runuser", "-u", POSTGRES_USER, "--", str(binaries / "initdb"), "-D", str(data), "--auth=trust",
             "-U", "postgres", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {lab_prefix}.0/24 trust\n")
        # The servers' own durability is not under test here (only shut down cleanly): fsync off.
        self._command = host.command(
            "runuser", "-u", POSTGRES_USER, "--", str(binaries / "postgres"), "-D", str(data),
            "-c", f"listen_addresses={host.address}", "-c", "port=5432",
            "-c", f"unix_socket_directories={self.folder}", "-c", "fsync=off", "-c", "max_connections=200",
        )
        self.url = f"postgres://postgres@{host.address}:5432"
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return _spawn(self._command, self.log_path, self.host, 5432, "PostgreSQL")

    def stop(self) -> None:
        """A fast shutdown (SIGINT to the postmaster, not to runuser, which would not pass
        it on): sessions are ended, transactions under way roll back."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError(f"PostgreSQL did not shut down:\n{self.log_path.read_text(errors='replace')}") from None

    def restart(self) -> None:
        self.stop()
        self.proc = self._start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisServer:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.folder = Path(tempfile.mkdtemp(prefix="pf-redis-"))
        self.log_path = self.folder / "server.log"
        self._command = host.command(
            "redis-server", "--bind", host.address, "--port", "6379", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--dir", str(self.folder),
        )
        self.url = f"redis://{host.address}:6379"
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return _spawn(self._command, self.log_path, self.host, 6379, "Redis")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        """Killed and started again: empty (it keeps nothing on disk)."""
        self.kill()
        self.proc = self._start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
