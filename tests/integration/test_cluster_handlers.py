"""Handlers (`manage.py runhandlers`) connected to an edge of a cluster of real processes:
when the router is killed and the standby takes over, they go on, and every message is
handled exactly once. Needs E2E_DATABASE_URL and Redis: fails, never skips, without them."""

from __future__ import annotations

import pytest

from tests.e2e.handlers_harness import SETTINGS, HandlersProcess, counts, http, publish, query
from tests.eventually import eventually_sync
from tests.integration.cluster_harness import Cluster, role

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MESSAGES = 2_000


def test_handlers_on_an_edge_go_on_through_a_failover_exactly_once(cluster: Cluster) -> None:
    env = {"DJANGO_SETTINGS_MODULE": SETTINGS}
    router = cluster.node("router", env=env)
    standby = cluster.node("standby", env=env)
    edge = cluster.node("edge", edge=True, env=env)
    assert (role(router), role(standby), role(edge)) == ("router", "standby", "edge")
    assert http(edge, "POST", "/api/queues/", {"name": "work"})[0] == 201
    ids = publish(edge, [{"n": n} for n in range(MESSAGES)])
    handlers = HandlersProcess(edge, "tests.handler_app.handlers.record").start()
    try:
        done = lambda: query(edge, "SELECT COUNT(*) FROM handler_app_handledrow")[0][0]  # noqa: E731
        eventually_sync(lambda: done() >= MESSAGES // 4, timeout=60, what="a quarter handled")
        router.kill()
        eventually_sync(lambda: role(standby) == "router", timeout=30, what="the standby taking over")
        eventually_sync(lambda: done() >= MESSAGES, timeout=120, what="every message handled")
        eventually_sync(lambda: counts(edge, "work") == (0, 0), timeout=30, what="the queue empty")
        twice = query(edge, "SELECT message_id FROM handler_app_handledrow GROUP BY message_id HAVING COUNT(*) > 1")
        assert twice == []
        assert {row[0] for row in query(edge, "SELECT message_id FROM handler_app_handledrow")} == set(ids)
        assert handlers.alive()
    finally:
        handlers.kill()
