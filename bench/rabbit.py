"""Finding RabbitMQ: is Web-STOMP reachable, is the management API on, which process is it.

The benchmark never starts, stops or configures RabbitMQ; it only connects as
guest/guest over loopback and reads the Erlang VM's CPU and memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Final

import httpx
import psutil

from . import stomp
from .dialects import StompDialect
from .processes import find_beam

PROBE_TIMEOUT: Final = 5.0
# Sockets left to the benchmark's other connections.
FD_MARGIN: Final = 100
FD_SHARE: Final = 0.6
# When its limit cannot be read: a number every default RabbitMQ takes safely.
UNKNOWN_LIMIT_CONNECTIONS: Final = 400


def _nofile(pid: int) -> int | None:
    """The soft open-files limit of a process, from /proc (prlimit may be refused)."""
    try:
        with open(f"/proc/{pid}/limits") as limits:
            lines = limits.read().splitlines()
        for line in lines:
            if line.startswith("Max open files"):
                value = line.split()[3]
                return None if value == "unlimited" else int(value)
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class RabbitInfo:
    reachable: bool
    reason: str = ""
    version: str = "?"
    management: str | None = None
    process: psutil.Process | None = None
    connection_limit: int | None = None


async def probe_rabbitmq(ws_url: str, management_url: str) -> RabbitInfo:
    dialect = StompDialect()
    try:
        ws = await asyncio.wait_for(dialect.open(ws_url), PROBE_TIMEOUT)
    except (OSError, TimeoutError, RuntimeError, Exception) as error:
        return RabbitInfo(False, reason=f"{type(error).__name__}: {error}")
    info = RabbitInfo(True)
    try:
        with contextlib.suppress(Exception):  # the probe only needed CONNECTED
            await ws.send(stomp.encode("DISCONNECT", {"receipt": "bye"}))
            await asyncio.wait_for(ws.recv(), PROBE_TIMEOUT)
    finally:
        await ws.close()
    try:
        async with httpx.AsyncClient(auth=("guest", "guest"), timeout=PROBE_TIMEOUT) as client:
            reply = await client.get(f"{management_url}/api/overview")
            if reply.status_code == 200:
                info.management = management_url
                info.version = str(reply.json().get("rabbitmq_version", "?"))
    except httpx.HTTPError:
        pass
    info.process = find_beam()
    if info.process is not None:
        soft = _nofile(info.process.pid)
        try:
            used = info.process.num_fds()
        except psutil.Error:
            used = 0
        # Well below RabbitMQ's socket limit (~90% of its descriptors, `rabbitmqctl
        # status`): at the limit its file-descriptor alarm blocks connections and
        # its memory monitor can crash on EMFILE (seen with 3.10), breaking the node.
        info.connection_limit = max(0, int(soft * FD_SHARE) - used - FD_MARGIN) if soft else UNKNOWN_LIMIT_CONNECTIONS
    return info


def probe_amqp(url: str) -> str | None:
    """None when RabbitMQ answers AMQP at `url` (what the Django publishers of the outbox
    scenarios use, with pika); otherwise why not. Blocking: call it in a thread."""
    try:
        import pika
    except ImportError:
        return "pika is not installed (pip install -e '.[bench]')"
    try:
        params = pika.URLParameters(url)
        params.socket_timeout = PROBE_TIMEOUT
        params.blocked_connection_timeout = PROBE_TIMEOUT
        connection = pika.BlockingConnection(params)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    with contextlib.suppress(Exception):
        connection.close()
    return None
