"""Publishing from Django code in a process of its own, against real broker processes
(tests/e2e/test_outbox_e2e.py, tests/integration/test_cluster_outbox.py).

`Publisher` runs a script with Django set up on a broker's database (its
environment, as every process of a deployment shares it): `transaction`,
`OutboxMessage`, `publish`, `publish_many` and `say` (print, flushed) are
there, and `told`, a queue.Queue of the lines the test sends it (`tell`). What it
prints is collected by a thread as it comes, so a busy publisher never blocks
on a full pipe while the test does something else.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import httpx

from tests.e2e.harness import ROOT, BrokerProcess
from tests.eventually import eventually_sync

SETUP = """
import os, queue, sys, threading, time
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "broker_project.settings"
django.setup()
from django.db import transaction
from pubsub import OutboxMessage, publish, publish_many
def say(*words):
    print(*words, flush=True)
told = queue.Queue()  # the lines the test sends (Publisher.tell), then "" once it closes stdin
def _listen():
    for line in sys.stdin:
        told.put(line.strip())
    told.put("")
threading.Thread(target=_listen, daemon=True).start()
"""


class Publisher:
    """Django code in a process of its own (a management command, a worker), publishing."""

    def __init__(self, broker: BrokerProcess, script: str) -> None:
        env = {k: v for k, v in broker.env.items() if k not in ("HTTP_PORT",)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SETUP + textwrap.dedent(script)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []  # what it printed so far
        self._reader = threading.Thread(target=self._read, name="publisher-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def printed(self, marker: str) -> bool:
        """Has it printed a line starting with `marker`? Raises once it ended without."""
        ended = not self._reader.is_alive()  # before looking: every line is in by then
        if any(line.startswith(marker) for line in self.lines):
            return True
        if ended:
            raise AssertionError(f"the publisher ended without printing {marker!r}:\n{''.join(self.lines)}")
        return False

    def read_until(self, marker: str, timeout: float = 30.0) -> list[str]:
        """What it printed, once a line starting with `marker` is among it."""
        eventually_sync(lambda: self.printed(marker), timeout=timeout, what=f"the publisher prints {marker!r}")
        return list(self.lines)

    def tell(self, line: str = "stop") -> None:
        """Send it a line: the script finds it in `told`."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)

    def wait(self, timeout: float = 60.0) -> str:
        """Everything it printed, once it has ended (with 0)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout)
        self._reader.join(10)
        output = "".join(self.lines)
        assert self.proc.returncode == 0, output
        return output


def take(node: BrokerProcess, queue: str) -> list[dict[str, object]]:
    """Every ready message of `queue`, oldest first, taken (acknowledged) over HTTP."""
    answer = httpx.post(f"{node.url}/api/queues/{queue}/get/", json={"count": 100_000}, timeout=30)
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, object]] = answer.json()
    return messages
