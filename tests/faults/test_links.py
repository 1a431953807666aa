"""Links cut between test hosts under a steady load of confirmed publishes and acknowledged
consumes: an edge and Redis, a router and Redis, a router and PostgreSQL.

Each test runs a router, a hot standby and two edges, each on a host of its own
(network.py), publishes through one edge and consumes through the other, cuts
links and heals them, and then checks that nothing confirmed was lost, that
nothing acknowledged came back but what was under way at a fault, and that the
cluster served again by itself (load.py).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from broker.cluster.lease import LEASE_LOST_EXIT
from tests.faults.conftest import FaultCluster
from tests.faults.scenario import loaded_cluster
from tests.integration.cluster_harness import role

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.e2e]


async def test_an_edge_cut_off_from_redis_briefly_and_past_the_router_s_patience(
    fault_cluster: FaultCluster,
) -> None:
    async with loaded_cluster(fault_cluster) as load:
        # Shorter than the router's patience with a silent edge (EDGE_TIMEOUT, 5 s).
        await load.cut("edge-a", "redis", 2)
        await load.steady()
        # Longer: the router drops the consumer's edge and requeues what its connections held.
        await load.cut("edge-b", "redis", 8)
        await load.steady()


async def test_the_router_cut_off_from_redis(fault_cluster: FaultCluster) -> None:
    """The edges hear no router and fail what is in flight; the router hears no edge and
    drops them; once the link is back, all resume on the same router."""
    async with loaded_cluster(fault_cluster) as load:
        await load.cut("router-a", "redis", 2)
        await load.steady()
        await load.cut("router-a", "redis", 8)
        await load.steady()
    assert role(fault_cluster.nodes["router-a"]) == "router"


async def test_the_router_cut_off_from_postgresql_gives_way_to_the_standby(fault_cluster: FaultCluster) -> None:
    """The router cannot check its lease and stops (exit 75, for its supervisor to restart);
    PostgreSQL, hearing nothing from the cut connection, ends its session and with it the
    lock; the standby takes over while the link is still cut."""
    lab = fault_cluster.lab
    router = fault_cluster.nodes
    async with loaded_cluster(fault_cluster) as load:
        fault = load.fault("the router cut off from PostgreSQL")
        with lab.lab.link_cut(fault_cluster.host("router-a"), lab.db):
            assert router["router-a"].proc is not None
            assert await asyncio.to_thread(router["router-a"].proc.wait, 10) == LEASE_LOST_EXIT
            await load.served(fault)
        await load.steady()
        assert role(router["router-b"]) == "router"
        # Its supervisor starts it again: a standby now.
        fault_cluster.node("router-a")
        assert role(fault_cluster.nodes["router-a"]) == "standby"
        await load.steady()


async def test_slow_links_slow_the_cluster_down_and_lose_nothing(fault_cluster: FaultCluster) -> None:
    """Links delayed by 50 ms each way (a round trip 100 ms longer, as between far data
    centres): the cluster keeps serving through them."""
    lab = fault_cluster.lab
    async with loaded_cluster(fault_cluster) as load:
        for host, other in (("edge-a", lab.redis), ("router-a", lab.redis), ("router-a", lab.db)):
            fault = load.fault(f"{host} <-> {other.name} delayed 50 ms each way")
            with lab.lab.link_delayed(fault_cluster.host(host), other, 50):
                await load.served(fault, timeout=15)  # while the link is slow
                await load.steady(100)
        fault = load.fault("everything delayed 50 ms each way")
        with contextlib.ExitStack() as delays:
            for host in ("edge-a", "edge-b", "router-a"):
                for other in (lab.redis, lab.db):
                    delays.enter_context(lab.lab.link_delayed(fault_cluster.host(host), other, 50))
            await load.served(fault, timeout=15)
            await load.steady(100)
    assert role(fault_cluster.nodes["router-a"]) == "router"  # slow is not dead: no takeover
