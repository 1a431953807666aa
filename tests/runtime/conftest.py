"""The fixture of the cluster-link tests (test_cluster_link.py, test_cluster_failover.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.cluster import edge as edge_module
from broker.cluster import hub as hub_module
from broker.engine.exchanges import ExchangeSpec, ExchangeType
from broker.engine.queues import QueueSpec
from broker.engine.routing import BindingSpec
from tests.stopping import stop_within

from .cluster_harness import Cluster, MemoryStore


@pytest.fixture
async def cluster(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    """A router with queues `jobs` and `other`, both bound to the fanout exchange `fan`."""
    # Beats every 50 ms rather than 500: a new router is heard at once.
    monkeypatch.setattr(hub_module, "BEAT_SECONDS", 0.05)
    monkeypatch.setattr(edge_module, "BEAT_SECONDS", 0.05)
    # A lost answer fails the test in 2 s, not 30.
    monkeypatch.setattr(edge_module, "CALL_TIMEOUT", 2.0)
    store = MemoryStore(
        exchanges=[ExchangeSpec("fan", ExchangeType.FANOUT)],
        queues=[QueueSpec("jobs"), QueueSpec("other")],
        bindings=[BindingSpec("fan", "jobs"), BindingSpec("fan", "other")],
    )
    built = Cluster(store)
    await built.start_router()
    try:
        yield built
    finally:
        await stop_within(built.close(), "the cluster")
