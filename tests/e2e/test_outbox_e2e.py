"""Publishing from Django code in another process than the router's (docs/outbox.md),
against the real `runbroker`: the router hears the commit (PostgreSQL's NOTIFY, SQLite's
data version), nothing committed is lost when the publisher or the router is killed,
and nothing is routed twice. Runs on SQLite, and on PostgreSQL in scripts/test's
second run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.client import WsClient
from tests.e2e.harness import BrokerProcess
from tests.e2e.outbox_harness import Publisher, take
from tests.eventually import eventually, eventually_sync

pytestmark = pytest.mark.e2e

@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.close()


def declare(broker: BrokerProcess, queue: str) -> None:
    assert httpx.post(f"{broker.url}/api/queues/", json={"name": queue}).status_code == 201


async def test_a_commit_in_another_process_is_delivered_and_a_rollback_is_not(broker: BrokerProcess) -> None:
    declare(broker, "jobs")
    client = await WsClient.connect(broker.ws_url)
    await client.send({"type": "subscribe", "id": "s", "queue": "jobs"})
    assert (await client.recv())["type"] == "subscribed"

    publisher = Publisher(broker, """
        with transaction.atomic():
            publish("", "committed", routing_key="jobs")
        try:
            with transaction.atomic():
                publish("", "rolled back", routing_key="jobs")
                raise RuntimeError
        except RuntimeError:
            pass
        publish("", "autocommit", routing_key="jobs")
    """)
    publisher.wait()

    received = [(await client.recv(timeout=10))["body"] for _ in range(2)]
    assert received == ["committed", "autocommit"]
    assert await client.silent(timeout=0.5)
    await client.close()


@pytest.mark.parametrize("way", ["outbox", "on_commit"])
async def test_a_publisher_killed_right_after_its_commit_loses_nothing_here_and_the_message_the_usual_way(
    broker: BrokerProcess, way: str
) -> None:
    declare(broker, "jobs")
    # The usual way: send once the transaction has committed (here over HTTP; with
    # RabbitMQ, a basic_publish). A process that dies in between loses the message.
    usual = f"""
        import httpx
        def send():
            say("committed")
            time.sleep(30)  # the moment a crash, a deploy or an OOM kill comes
            httpx.post("{broker.url}/api/exchanges/amq.default/publish/", json={{"routing_key": "jobs", "body": "sent"}})
        with transaction.atomic():
            transaction.on_commit(send)
        time.sleep(30)
    """
    outbox = """
        with transaction.atomic():
            publish("", "sent", routing_key="jobs")
        say("committed")
        time.sleep(30)
    """
    publisher = Publisher(broker, outbox if way == "outbox" else usual)
    publisher.read_until("committed")
    publisher.kill()

    if way == "outbox":
        await eventually(lambda: bool(broker_counts(broker)), what="the message reaches its queue")
        assert [m["body"] for m in take(broker, "jobs")] == ["sent"]
    else:
        assert broker_counts(broker) == 0  # and it never will: the process that would send it is gone


def broker_counts(broker: BrokerProcess) -> int:
    found: int = httpx.get(f"{broker.url}/api/queues/jobs/").json()["messages_ready"]
    return found


def test_a_router_killed_during_a_stream_of_transactions_routes_each_committed_message_once(
    broker: BrokerProcess,
) -> None:
    declare(broker, "stream")
    publisher = Publisher(broker, """
        n = 0
        for batch in range(60):
            with transaction.atomic():
                ids = publish_many([OutboxMessage("", n + i, "stream") for i in range(10)])
            n += 10
            say("committed", *ids)
            if batch == 20:
                say("killing time")
            time.sleep(0.02)
        say("done")
    """)
    publisher.read_until("killing time")
    broker.kill()  # the router dies while transactions keep committing
    broker.start()
    lines = publisher.read_until("done")
    publisher.wait()

    committed = [word for line in lines if line.startswith("committed") for word in line.split()[1:]]
    assert len(committed) == 600

    def all_routed() -> bool:
        return bool(httpx.get(f"{broker.url}/api/queues/stream/").json()["messages_ready"] == 600)

    eventually_sync(all_routed, timeout=30, what="every committed message in the queue")
    taken = take(broker, "stream")
    counts = Counter(str(m["message_id"]) for m in taken)
    assert set(counts) == set(committed) and max(counts.values()) == 1  # none lost, none twice
    bodies = [m["body"] for m in taken]
    assert bodies == sorted(bodies)  # in the order of the transactions that committed them


async def test_a_model_change_stream_delivers_exactly_the_committed_changes(broker: BrokerProcess) -> None:
    for path, body in (
        ("/api/exchanges/", {"name": "audit", "type": "topic"}),
        ("/api/queues/", {"name": "groups"}),
        ("/api/bindings/", {"exchange": "audit", "queue": "groups", "binding_key": "auth.group.*"}),
    ):
        assert httpx.post(f"{broker.url}{path}", json=body).status_code == 201
    client = await WsClient.connect(broker.ws_url)
    await client.send({"type": "subscribe", "id": "s", "queue": "groups"})
    assert (await client.recv())["type"] == "subscribed"

    Publisher(broker, """
        from django.contrib.auth.models import Group
        from pubsub import stream
        stream(Group, exchange="audit", fields=["name"])
        with transaction.atomic():
            kept = Group.objects.create(name="kept")
        try:
            with transaction.atomic():
                Group.objects.create(name="rolled back")
                raise RuntimeError
        except RuntimeError:
            pass
        kept.delete()
    """).wait()

    received = [await client.recv(timeout=10) for _ in range(2)]
    assert [(m["routing_key"], m["body"]["fields"]) for m in received] == [
        ("auth.group.created", {"name": "kept"}),
        ("auth.group.deleted", {"name": "kept"}),
    ]
    assert await client.silent(timeout=0.5)
    await client.close()
