"""Routers, the standby and edges killed (SIGKILL) and stopped (SIGSTOP) under a steady load
of confirmed publishes and acknowledged consumes, each on a test host of its own
(network.py), with the same checks as test_links.py (load.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from broker.cluster.lease import LEASE_LOST_EXIT
from tests.eventually import eventually
from tests.faults.conftest import FaultCluster
from tests.faults.scenario import loaded_cluster, stopped
from tests.integration.cluster_harness import HEALTH_INTERVAL, role

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.e2e]


async def test_a_killed_router_and_then_a_stopped_one_give_way_to_the_standby(fault_cluster: FaultCluster) -> None:
    nodes = fault_cluster.nodes
    async with loaded_cluster(fault_cluster) as load:
        fault = load.fault("the router killed")
        nodes["router-a"].kill()
        await load.served(fault)
        assert role(nodes["router-b"]) == "router"
        fault_cluster.node("router-a")  # as its supervisor would: a standby now
        assert role(nodes["router-a"]) == "standby"
        await load.steady()

        # Stopped, the router's connections stay up (its kernel answers for it): the standby
        # ends the lease's silent session and takes over while it is still stopped.
        fault = load.fault("the router stopped (SIGSTOP) for 15 s")
        with stopped(nodes["router-b"]) as stale:
            await load.served(fault)
            await eventually(
                lambda: role(nodes["router-a"]) == "router", timeout=5, interval=HEALTH_INTERVAL,
                what="the standby is the router",
            )
            await asyncio.sleep(max(0.0, fault.began + 15 - time.monotonic()))
        # Woken, it finds its lease gone and stops before a commit of its own (the fence).
        assert await asyncio.to_thread(stale.wait, 15) == LEASE_LOST_EXIT
        await load.steady()
    log = nodes["router-a"].log()
    assert "has not been heard from" in log and "ending its session" in log


async def test_edges_killed_and_stopped_and_the_standby_killed(fault_cluster: FaultCluster) -> None:
    nodes = fault_cluster.nodes
    async with loaded_cluster(fault_cluster) as load:
        fault = load.fault("the consumer's edge killed")
        nodes["edge-b"].kill()
        await load.served(fault)  # the consumer connects to the other edge
        fault_cluster.node("edge-b", edge=True)
        await load.steady()

        # Past the router's patience (EDGE_TIMEOUT): the router drops it and requeues what
        # its connections held; woken, it hears the reset and resumes.
        fault = load.fault("the publisher's edge stopped (SIGSTOP) for 8 s")
        with stopped(nodes["edge-a"]):
            await asyncio.sleep(8)
        await load.served(fault)
        await eventually(lambda: role(nodes["edge-a"]) == "edge", timeout=20, what="the stopped edge follows again")

        fault = load.fault("the standby killed")
        nodes["router-b"].kill()
        await load.steady()
        fault.recovered = time.monotonic()
        fault_cluster.node("router-b")
        assert role(nodes["router-b"]) == "standby"
        await load.steady()


async def test_redis_restarted_empty_and_postgresql_restarted(fault_cluster: FaultCluster) -> None:
    """Redis forgets every batch on the way and the edges' group: answers are missed, beats
    stop reaching the edges, and all resume. PostgreSQL's restart ends every session: the
    router's lease with them (it exits 75, for its supervisor to start again), and one of
    the two takes the lease once the server is back."""
    lab = fault_cluster.lab
    async with loaded_cluster(fault_cluster) as load:
        fault = load.fault("Redis restarted empty")
        await asyncio.to_thread(lab.redis_server.restart)
        await load.served(fault)
        await load.steady()

        fault = load.fault("PostgreSQL restarted")
        router = fault_cluster.nodes["router-a"].proc
        assert router is not None
        await asyncio.to_thread(lab.postgres.restart)
        assert await asyncio.to_thread(router.wait, 15) == LEASE_LOST_EXIT
        await load.served(fault)  # router-b took the lease
        fault_cluster.node("router-a")  # as its supervisor would: a standby now
        await load.steady()
