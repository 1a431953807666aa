"""The fault tests' steady load on a cluster (load.py), and how a test marks its faults."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx

from tests.e2e.harness import BrokerProcess
from tests.eventually import eventually
from tests.faults.conftest import FaultCluster
from tests.faults.load import Consumer, Fault, Publisher, check
from tests.integration.cluster_harness import role

log = logging.getLogger("tests.faults")

QUEUE = "orders"
RECOVERY = 45.0  # seconds for the cluster to serve again once a fault ends


class Load:
    def __init__(self, cluster: FaultCluster) -> None:
        self.cluster = cluster
        edge_a, edge_b = cluster.nodes["edge-a"], cluster.nodes["edge-b"]
        self.publisher = Publisher([edge_a.ws_url, edge_b.ws_url], QUEUE)
        self.consumer = Consumer([edge_b.ws_url, edge_a.ws_url], QUEUE)
        self.faults: list[Fault] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.publisher.run(), name="publisher"),
            asyncio.create_task(self.consumer.run(), name="consumer"),
        ]

    def fault(self, what: str) -> Fault:
        fault = Fault(what, time.monotonic())
        self.faults.append(fault)
        return fault

    async def served(self, fault: Fault, timeout: float = RECOVERY) -> None:
        """Until messages published after now are confirmed and delivered: then the fault
        is over."""
        mark = self.publisher.next
        await eventually(
            lambda: any(n >= mark for n in self.publisher.confirmed)
            and any(d.body >= mark for d in self.consumer.deliveries),
            timeout=timeout,
            what=f"the cluster serves again after: {fault.what}",
        )
        fault.recovered = time.monotonic()

    async def cut(self, host: str, other: str, seconds: float) -> None:
        """`host`'s link to `other` (a host's name: "redis", "db", "edge-a"...) cut for
        `seconds`, then healed: a fault until the cluster serves again."""
        lab = self.cluster.lab.lab
        fault = self.fault(f"{host} cut off from {other} for {seconds:g} s")
        with lab.link_cut(lab.hosts[host], lab.hosts[other]):
            await asyncio.sleep(seconds)
        await self.served(fault)

    async def steady(self, count: int = 200) -> None:
        """Until `count` more messages were confirmed."""
        target = len(self.publisher.confirmed) + count
        await eventually(lambda: len(self.publisher.confirmed) >= target, timeout=30, what=f"{count} confirms")

    async def finish(self) -> None:
        self.publisher.stopping = True
        publishing = self._tasks[0]
        await asyncio.wait_for(publishing, 60)
        await eventually(
            lambda: self.publisher.confirmed <= self.consumer.bodies,
            timeout=60,
            what="every confirmed message delivered",
        )
        for task in self._tasks:
            task.cancel()
        # What was seen: `--log-cli-level=INFO` shows it.
        log.info("%s", check(self.publisher, self.consumer, self.faults))
        for edge_log in self.cluster.workdir.glob("edge-*.log"):
            followed = FOLLOWED.findall(edge_log.read_text(errors="replace"))
            # The same router again after a silence is fine; back to one it left for another
            # is not: that one had lost its lease (or died), and one router serves at a time.
            changes = [epoch for number, epoch in enumerate(followed) if number == 0 or epoch != followed[number - 1]]
            back = [epoch for number, epoch in enumerate(changes) if epoch in changes[:number]]
            assert not back, f"{edge_log.name} went back to router {back[0]}: {followed}"


@contextmanager
def stopped(node: BrokerProcess) -> Iterator[subprocess.Popen[bytes]]:
    """The node's process stopped (SIGSTOP) for the block, and continued after it, whatever
    happens in it."""
    proc = node.proc
    assert proc is not None and proc.poll() is None
    proc.send_signal(signal.SIGSTOP)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGCONT)


# The routers an edge followed, in order (broker/cluster/edge.py's log).
FOLLOWED = re.compile(r"(?:following router|replaced by) ([0-9a-f]{8})")


@asynccontextmanager
async def loaded_cluster(cluster: FaultCluster) -> AsyncIterator[Load]:
    cluster.node("router-a")
    cluster.node("router-b")
    cluster.node("edge-a", edge=True)
    cluster.node("edge-b", edge=True)
    assert (role(cluster.nodes["router-a"]), role(cluster.nodes["router-b"])) == ("router", "standby")
    async with httpx.AsyncClient(base_url=cluster.nodes["edge-a"].url, timeout=10) as http:
        assert (await http.post("/api/queues/", json={"name": QUEUE})).status_code == 201
    load = Load(cluster)
    load.start()
    try:
        await load.steady()
        yield load
        await load.finish()
    finally:
        for task in load._tasks:
            task.cancel()

