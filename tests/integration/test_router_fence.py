"""A router that lost its lease commits nothing (broker/cluster/lease.py,
WriteFence), and a new router waits for the old one's commits under way before it
loads. On the real PostgreSQL: fails, never skips, without it."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from broker.cluster.lease import (
    WRITE_FENCE_KEY,
    LeaseLost,
    RouterLease,
    connection_kwargs,
)
from broker.engine.messages import StoredCopy, make_message
from queues.models import Message, Queue
from storage.store import OrmMessageStore

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def copy(store_id: int) -> StoredCopy:
    message = make_message(
        message_id=f"m{store_id}", exchange="", routing_key="fenced", body_json=str(store_id), headers={},
        persistent=True, published_at="2026-11-28T00:00:00.000000Z",
    )
    return StoredCopy(store_id, "fenced", message)


def database() -> dict[str, Any]:
    assert connection.vendor == "postgresql", "the fence needs PostgreSQL: run with DATABASE_URL=postgres://..."
    return settings.DATABASES["default"]


def stored() -> list[int]:
    return list(Message.objects.order_by("id").values_list("id", flat=True))


def test_a_router_that_lost_its_lease_commits_nothing() -> None:
    Queue.objects.create(name="fenced")
    old = RouterLease(database())
    assert old.try_acquire()
    old_store = OrmMessageStore(fence=old.fence())
    old_store.write([copy(1)], [], [])
    assert stored() == [1]

    old.release()  # as when PostgreSQL ends the lease's session: the lock is gone
    with pytest.raises(LeaseLost):
        old_store.write([copy(2)], [1], [])
    new = RouterLease(database())
    assert new.try_acquire()
    try:
        with pytest.raises(LeaseLost):  # nor once another router holds it
            old_store.write([copy(3)], [1], [])
        assert stored() == [1]  # neither the inserts nor the delete
        OrmMessageStore(fence=new.fence()).write([copy(4)], [1], [])
        assert stored() == [4]
    finally:
        new.release()


def test_a_new_router_waits_for_the_old_router_s_commits_under_way() -> None:
    old = RouterLease(database())
    assert old.try_acquire()
    with psycopg.connect(**connection_kwargs(database())) as writer:
        # The old router's writer inside a commit: past its check, holding the fence shared.
        writer.execute("SELECT pg_advisory_xact_lock_shared(%s)", (WRITE_FENCE_KEY,))
        old.release()
        new = RouterLease(database())
        assert new.try_acquire()
        try:
            waiting = threading.Thread(target=new.wait_for_old_writes)
            waiting.start()
            waiting.join(0.5)
            assert waiting.is_alive()  # the new router does not load yet
            writer.commit()
            waiting.join(5)
            assert not waiting.is_alive()
        finally:
            new.release()
