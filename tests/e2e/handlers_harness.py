"""The real `runhandlers` process beside the real `runbroker`, both running the project
with tests/handler_app installed (its handlers and its table of handled rows)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from tests.e2e.client import WsClient
from tests.e2e.harness import ROOT, BrokerProcess, stop_process
from tests.eventually import eventually_sync

SETTINGS = "tests.handler_app.settings"


def handler_broker(workdir: Path, **kwargs: Any) -> BrokerProcess:
    extra_env = {"DJANGO_SETTINGS_MODULE": SETTINGS, **kwargs.pop("extra_env", {})}
    return BrokerProcess(workdir, extra_env=extra_env, **kwargs)


class HandlersProcess:
    def __init__(self, broker: BrokerProcess, *args: str, name: str = "handlers") -> None:
        self.broker = broker
        self.args = args
        self.log_path = broker.workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.env = {**broker.env, "HANDLERS_BROKER_URLS": broker.ws_url}

    def start(self, *, connected: bool = True) -> HandlersProcess:
        self._log = open(self.log_path, "ab")
        self._logged_before = self.log().count("connected to")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runhandlers", *self.args],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        if connected:
            self.wait_connected()
        return self

    def wait_connected(self, timeout: float = 30.0) -> None:
        proc = self.proc
        assert proc is not None

        def connected() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"runhandlers exited with {proc.returncode}:\n{self.log()}")
            return self.log().count("connected to") > self._logged_before

        eventually_sync(connected, timeout=timeout, what="runhandlers connected")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        returncode = stop_process(self.proc, sig, timeout, what="runhandlers", log=self.log)
        if self._log is not None:
            self._log.close()
            self._log = None
        return returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def query(broker: BrokerProcess, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` on the broker's database (SQLite's file, or its PostgreSQL database)."""
    url = broker.env.get("DATABASE_URL")
    if url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            return list(conn.execute(sql).fetchall())
    conn = sqlite3.connect(str(broker.workdir / "broker.sqlite3"), timeout=30)
    try:
        rows = list(conn.execute(sql).fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


def execute(broker: BrokerProcess, sql: str) -> None:
    """Run statements that return no rows (DDL) on the broker's database."""
    url = broker.env.get("DATABASE_URL")
    if url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.encode())
        return
    conn = sqlite3.connect(str(broker.workdir / "broker.sqlite3"), timeout=30)
    try:
        conn.executescript(sql)
    finally:
        conn.close()


def handled(broker: BrokerProcess, queue: str = "work") -> list[tuple[str, int]]:
    """(message_id, delivery_count) of every committed run on `queue`."""
    return [(row[0], row[1]) for row in query(
        broker, f"SELECT message_id, delivery_count FROM handler_app_handledrow WHERE queue = '{queue}' ORDER BY id"
    )]


def publish(broker: BrokerProcess, bodies: list[Any], *, routing_key: str = "work", exchange: str = "",
            headers: dict[str, Any] | None = None) -> list[str]:
    """Publish over WebSocket with confirms; the message ids, in order."""

    async def run() -> list[str]:
        client = await WsClient.connect(broker.ws_url)
        try:
            for index, body in enumerate(bodies):
                await client.send({"type": "publish", "id": index, "exchange": exchange, "routing_key": routing_key,
                                   "body": body, "headers": headers or {}})
            ids: dict[int, str] = {}
            while len(ids) < len(bodies):
                frame = await client.recv(timeout=30)
                assert frame["type"] == "confirm", frame
                assert frame["routed"] == 1, frame
                ids[frame["id"]] = frame["message_id"]
            return [ids[index] for index in range(len(bodies))]
        finally:
            await client.close()

    return asyncio.run(run())


def take(broker: BrokerProcess, queue: str, count: int = 10) -> list[dict[str, Any]]:
    """Take (and acknowledge) up to `count` messages of `queue` over HTTP."""
    import httpx

    answer = httpx.post(f"{broker.url}/api/queues/{queue}/get/", json={"count": count}, timeout=10)
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def counts(broker: BrokerProcess, queue: str) -> tuple[int, int]:
    """(ready, unacknowledged) of a queue."""
    import httpx

    answer = httpx.get(f"{broker.url}/api/queues/{queue}/", timeout=10)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    return found["messages_ready"], found["messages_unacknowledged"]


def http(broker: BrokerProcess, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    import httpx

    answer = httpx.request(method, f"{broker.url}{path}", json=body, timeout=10)
    return answer.status_code, json.loads(answer.text or "null")
