"""The long variant: every kind of fault of test_links.py and test_processes.py, in a random
order, round after round, on one cluster under one steady load, checked once at the end.

Run only when asked for: `pytest tests/faults -m long_faults --log-cli-level=INFO`.
FAULT_ROUNDS (3) sets the rounds, FAULT_SEED the order (logged, to repeat a run).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from broker.cluster.lease import LEASE_LOST_EXIT
from tests.eventually import eventually
from tests.faults.conftest import FaultCluster
from tests.faults.scenario import Load, loaded_cluster, stopped
from tests.integration.cluster_harness import role

pytestmark = [pytest.mark.faults, pytest.mark.long_faults, pytest.mark.integration, pytest.mark.e2e]

log = logging.getLogger("tests.faults")

Action = Callable[[FaultCluster, Load], Awaitable[None]]


def roles(cluster: FaultCluster) -> tuple[str, str]:
    """(the router's host, the standby's host)."""
    a = role(cluster.nodes["router-a"])
    return ("router-a", "router-b") if a == "router" else ("router-b", "router-a")


def cut(host: str, other: str, seconds: float) -> Action:
    async def act(cluster: FaultCluster, load: Load) -> None:
        await load.cut(host, other, seconds)

    return act


def delayed(host: str, other: str, delay_ms: float, seconds: float) -> Action:
    async def act(cluster: FaultCluster, load: Load) -> None:
        lab = cluster.lab.lab
        fault = load.fault(f"{host} <-> {other} delayed {delay_ms} ms each way for {seconds} s")
        with lab.link_delayed(lab.hosts[host], lab.hosts[other], delay_ms):
            await asyncio.sleep(seconds)
        await load.served(fault)

    return act


async def router_cut_from_postgresql(cluster: FaultCluster, load: Load) -> None:
    lab = cluster.lab.lab
    router, _ = roles(cluster)
    fault = load.fault(f"the router ({router}) cut off from PostgreSQL")
    with lab.link_cut(lab.hosts[router], lab.hosts["db"]):
        proc = cluster.nodes[router].proc
        assert proc is not None
        assert await asyncio.to_thread(proc.wait, 15) == LEASE_LOST_EXIT
        await load.served(fault)
    cluster.node(router)


async def router_killed(cluster: FaultCluster, load: Load) -> None:
    router, _ = roles(cluster)
    fault = load.fault(f"the router ({router}) killed")
    cluster.nodes[router].kill()
    await load.served(fault)
    cluster.node(router)


async def router_stopped(cluster: FaultCluster, load: Load) -> None:
    router, _ = roles(cluster)
    fault = load.fault(f"the router ({router}) stopped for 12 s")
    with stopped(cluster.nodes[router]) as proc:
        await load.served(fault)
        await asyncio.sleep(12 - (time.monotonic() - fault.began))
    assert await asyncio.to_thread(proc.wait, 15) == LEASE_LOST_EXIT
    cluster.node(router)


def edge_killed(edge: str) -> Action:
    async def act(cluster: FaultCluster, load: Load) -> None:
        fault = load.fault(f"{edge} killed")
        cluster.nodes[edge].kill()
        await load.served(fault)
        cluster.node(edge, edge=True)

    return act


def edge_stopped(edge: str, seconds: float) -> Action:
    async def act(cluster: FaultCluster, load: Load) -> None:
        node = cluster.nodes[edge]
        fault = load.fault(f"{edge} stopped for {seconds} s")
        with stopped(node):
            await asyncio.sleep(seconds)
        await load.served(fault)
        await eventually(lambda: role(node) == "edge", timeout=20, what=f"{edge} follows again")

    return act


async def standby_killed(cluster: FaultCluster, load: Load) -> None:
    _, standby = roles(cluster)
    fault = load.fault(f"the standby ({standby}) killed")
    cluster.nodes[standby].kill()
    await load.steady(100)
    fault.recovered = time.monotonic()
    cluster.node(standby)


async def redis_restarted(cluster: FaultCluster, load: Load) -> None:
    fault = load.fault("Redis restarted empty")
    await asyncio.to_thread(cluster.lab.redis_server.restart)
    await load.served(fault)


async def postgresql_restarted(cluster: FaultCluster, load: Load) -> None:
    router, _ = roles(cluster)
    proc = cluster.nodes[router].proc
    assert proc is not None
    fault = load.fault("PostgreSQL restarted")
    await asyncio.to_thread(cluster.lab.postgres.restart)
    assert await asyncio.to_thread(proc.wait, 15) == LEASE_LOST_EXIT
    await load.served(fault)
    cluster.node(router)


ACTIONS: dict[str, Action] = {
    "edge-a/redis cut 3 s": cut("edge-a", "redis", 3),
    "edge-b/redis cut 10 s": cut("edge-b", "redis", 10),
    "router-a/redis cut 6 s": cut("router-a", "redis", 6),
    "router-b/redis cut 6 s": cut("router-b", "redis", 6),
    "edge-a/redis 2 s delay": delayed("edge-a", "redis", 2000, 8),
    "router-a/redis 200 ms delay": delayed("router-a", "redis", 200, 8),
    "router-a/db 100 ms delay": delayed("router-a", "db", 100, 8),
    "router cut from db": router_cut_from_postgresql,
    "router killed": router_killed,
    "router stopped": router_stopped,
    "edge-a killed": edge_killed("edge-a"),
    "edge-b killed": edge_killed("edge-b"),
    "edge-b stopped 8 s": edge_stopped("edge-b", 8),
    "standby killed": standby_killed,
    "Redis restarted": redis_restarted,
    "PostgreSQL restarted": postgresql_restarted,
}


async def test_every_fault_in_a_random_order_round_after_round(fault_cluster: FaultCluster) -> None:
    rounds = int(os.environ.get("FAULT_ROUNDS", "3"))
    seed = int(os.environ.get("FAULT_SEED", str(random.randrange(1 << 32))))
    log.info("FAULT_SEED=%d FAULT_ROUNDS=%d", seed, rounds)
    order = random.Random(seed)
    async with loaded_cluster(fault_cluster) as load:
        for number in range(rounds):
            names = list(ACTIONS)
            order.shuffle(names)
            log.info("round %d: %s", number + 1, ", ".join(names))
            for name in names:
                await ACTIONS[name](fault_cluster, load)
                await load.steady(100)
