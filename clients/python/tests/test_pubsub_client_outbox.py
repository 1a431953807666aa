"""`pubsub_client.outbox`: another program writes the outbox row with its own connection
(docs/outbox.md, "From another program: the client's helper"), against the real broker
process. On SQLite the program uses sqlite3; on PostgreSQL (scripts/test's second run,
E2E_DATABASE_URL) psycopg, and psycopg2 where it is installed. Django's connection is
used from a process of its own, as another Django project would."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import unique

from pubsub_client import BrokerError, Client, InvalidRequest, NotFound, TooLarge, outbox
from pubsub_client.outbox import OutboxMessage
from tests.e2e.harness import ROOT, BrokerProcess

pytestmark = pytest.mark.e2e


def on_postgresql(broker: BrokerProcess) -> bool:
    return bool(broker.env.get("DATABASE_URL"))


def connect(broker: BrokerProcess, *, autocommit: bool = False, driver: str = "psycopg") -> Any:
    """A connection of the test's own to the broker's database, as another program opens one."""
    url = broker.env.get("DATABASE_URL")
    if url and driver == "psycopg2":
        import psycopg2

        conn = psycopg2.connect(url)
        conn.autocommit = autocommit
        return conn
    if url:
        import psycopg

        return psycopg.connect(url, autocommit=autocommit)
    path = broker.env["DATABASE_NAME"] + ".sqlite3"
    return sqlite3.connect(path, timeout=20, isolation_level=None if autocommit else "DEFERRED")


def query(conn: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run `sql` (with `%s` placeholders) on the connection; its rows."""
    if isinstance(conn, sqlite3.Connection):
        sql = sql.replace("%s", "?")
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()


@pytest.fixture(scope="module")
def orders_table(broker: BrokerProcess) -> None:
    """A table of the other program's own, in the same database."""
    conn = connect(broker)
    query(conn, "CREATE TABLE IF NOT EXISTS shop_orders (note text)")
    conn.commit()
    conn.close()


@pytest.fixture
async def queue(client: Client) -> str:
    name = unique("outbox-q")
    await client.declare_queue(name)
    return name


@pytest.fixture
def conn(broker: BrokerProcess) -> Iterator[Any]:
    connection = connect(broker)
    try:
        yield connection
    finally:
        connection.close()


async def test_rows_written_with_the_callers_connection_are_delivered_when_it_commits(
    client: Client, queue: str, conn: Any
) -> None:
    exchange = unique("outbox-x")
    await client.declare_exchange(exchange, "topic")
    await client.bind(exchange, queue, "orders.#")
    async with client.consume(queue, ack="auto") as messages:
        first = outbox.publish(
            conn, exchange, {"id": 1, "name": "café 🍰"}, routing_key="orders.eu.created", headers={"from": "shop"}
        )
        rest = outbox.publish_many(conn, [
            OutboxMessage(exchange, [2, 2.5, None, True], "orders.us.created", persistent=False, message_id="mine-2"),
            OutboxMessage("", "to the queue", queue),  # the default exchange
            OutboxMessage("amq.default", {"nul in a body": "\x00"}, queue),
        ])
        assert rest[0] == "mine-2" and len({first, *rest}) == 4
        assert await messages.next(timeout=0.5) is None  # not committed: nothing is routed
        conn.commit()
        got = [await messages.next(timeout=10) for _ in range(4)]
    assert [(m.message_id, m.exchange, m.routing_key, m.body, m.headers, m.persistent) for m in got if m] == [
        (first, exchange, "orders.eu.created", {"id": 1, "name": "café 🍰"}, {"from": "shop"}, True),
        ("mine-2", exchange, "orders.us.created", [2, 2.5, None, True], {}, False),
        (rest[1], "", queue, "to the queue", {}, True),
        (rest[2], "", queue, {"nul in a body": "\x00"}, {}, True),
    ]
    stamp = got[0].published_at if got[0] else ""
    assert stamp.endswith("Z") and abs(datetime.fromisoformat(stamp) - datetime.now(UTC)).total_seconds() < 60


@pytest.mark.usefixtures("orders_table")
async def test_a_rolled_back_transaction_publishes_nothing(client: Client, queue: str, conn: Any) -> None:
    async with client.consume(queue, ack="auto") as messages:
        query(conn, "INSERT INTO shop_orders (note) VALUES (%s)", queue)
        outbox.publish(conn, "", "rolled back", routing_key=queue)
        outbox.publish_many(conn, [OutboxMessage("", n, queue) for n in range(3)])
        conn.rollback()

        query(conn, "INSERT INTO shop_orders (note) VALUES (%s)", queue)
        committed = outbox.publish(conn, "", "committed", routing_key=queue)
        conn.commit()
        delivered = await messages.next(timeout=10)
        assert delivered is not None and (delivered.message_id, delivered.body) == (committed, "committed")
        assert await messages.next(timeout=0.5) is None
    assert query(conn, "SELECT count(*) FROM shop_orders WHERE note = %s", queue) == [(1,)]


@pytest.mark.usefixtures("orders_table")
async def test_a_bad_message_is_refused_before_anything_is_written(client: Client, queue: str, conn: Any) -> None:
    key = queue  # every row below would go to the queue: none may be written
    query(conn, "INSERT INTO shop_orders (note) VALUES (%s)", queue)  # the caller's own work
    refused: list[tuple[dict[str, Any], type[BrokerError], str]] = [
        ({"exchange": "bad name!"}, InvalidRequest, "exchange"),
        ({"exchange": 7}, InvalidRequest, "exchange"),
        ({"routing_key": "k" * 256}, InvalidRequest, "routing_key"),
        ({"routing_key": "a\x00"}, InvalidRequest, "routing_key"),
        ({"body": {1: "a key that is not a string"}}, InvalidRequest, "body"),
        ({"body": float("nan")}, InvalidRequest, "body"),
        ({"body": {"when": datetime.now(UTC)}}, InvalidRequest, "body"),
        ({"body": 2**64}, InvalidRequest, "body"),
        ({"body": "\ud800"}, InvalidRequest, "body"),
        ({"headers": ["not", "an", "object"]}, InvalidRequest, "headers"),
        ({"headers": {"x": "a\x00"}}, InvalidRequest, "headers"),
        ({"headers": {"": "a header without a name"}}, InvalidRequest, "headers"),
        # The router refused it and removed the row: a row it would refuse is never written.
        ({"headers": {"expiration": "soon"}}, InvalidRequest, "headers"),
        ({"headers": {"expiration": -1}}, InvalidRequest, "headers"),
        ({"persistent": "yes"}, InvalidRequest, "persistent"),
        ({"message_id": "m" * 65}, InvalidRequest, "message_id"),
        ({"message_id": ""}, InvalidRequest, "message_id"),
        ({"body": "x" * outbox.MAX_MESSAGE_BYTES}, TooLarge, ""),
        ({"exchange": unique("no-such-exchange")}, NotFound, ""),
    ]
    deep: Any = []
    for _ in range(outbox.MAX_DEPTH):
        deep = [deep]
    refused.append(({"body": deep}, InvalidRequest, "body"))
    for fields, error, field in refused:
        message: dict[str, Any] = {"exchange": "", "body": "x", "routing_key": key, **fields}
        with pytest.raises(error) as caught:
            outbox.publish(conn, **message)
        assert caught.value.code == error.default_code
        assert not field or field in caught.value.fields, caught.value

    with pytest.raises(InvalidRequest, match=r"message 1: body: must be a JSON value \(a set\)"):
        outbox.publish_many(conn, [OutboxMessage("", "fine", key), OutboxMessage("", {1, 2}, key)])
    with pytest.raises(TooLarge):
        outbox.publish(conn, "", "x" * 100, routing_key=key, max_bytes=100)  # 102 bytes with its quotes
    with pytest.raises(TypeError, match="psycopg, psycopg2 or sqlite3"):
        outbox.publish(object(), "", "x", routing_key=key)  # type: ignore[arg-type]

    # Nothing was written, and the caller's transaction goes on (on PostgreSQL, a failed
    # statement would have aborted it).
    assert query(conn, "SELECT count(*) FROM pubsub_outbox WHERE routing_key = %s", key) == [(0,)]
    assert outbox.publish(conn, "", "x" * 98, routing_key=key, max_bytes=100)
    conn.commit()
    async with client.consume(queue, ack="auto") as messages:
        delivered = await messages.next(timeout=10)
        assert delivered is not None and delivered.body == "x" * 98
        assert await messages.next(timeout=0.5) is None
    assert query(conn, "SELECT count(*) FROM shop_orders WHERE note = %s", queue) == [(1,)]


async def test_built_in_exchanges_in_autocommit_and_the_unchecked_way(
    client: Client, queue: str, broker: BrokerProcess
) -> None:
    await client.bind("amq.topic", queue, queue)
    conn = connect(broker, autocommit=True)
    try:
        async with client.consume(queue, ack="auto") as messages:
            outbox.publish(conn, "amq.topic", "autocommit", routing_key=queue)  # committed at once
            delivered = await messages.next(timeout=10)
            assert delivered is not None and (delivered.exchange, delivered.body) == ("amq.topic", "autocommit")

            # Unchecked, a row for an exchange that does not exist is written, and routed nowhere.
            outbox.publish(conn, unique("no-such-exchange"), "lost", routing_key=queue, check_exchange=False)
            outbox.publish(conn, "amq.topic", "after", routing_key=queue, check_exchange=False)
            delivered = await messages.next(timeout=10)
            assert delivered is not None and delivered.body == "after"
    finally:
        conn.close()


@pytest.mark.postgresql
async def test_psycopg2(client: Client, queue: str, broker: BrokerProcess) -> None:
    if not on_postgresql(broker):
        pytest.skip("psycopg2 speaks to PostgreSQL: scripts/test's second run")
    conn = connect(broker, driver="psycopg2")
    try:
        async with client.consume(queue, ack="auto") as messages:
            outbox.publish(conn, "", "rolled back", routing_key=queue)
            conn.rollback()
            sent = outbox.publish_many(conn, [OutboxMessage("", n, queue, headers={"n": n}) for n in range(3)])
            with pytest.raises(NotFound):
                outbox.publish(conn, unique("no-such-exchange"), "x", routing_key=queue)
            conn.commit()
            got = [await messages.next(timeout=10) for _ in range(3)]
            assert [(m.message_id, m.body, m.headers) for m in got if m] == [
                (sent[n], n, {"n": n}) for n in range(3)
            ]
            assert await messages.next(timeout=0.5) is None
    finally:
        conn.close()


async def test_from_another_django_project_with_its_connection(
    client: Client, queue: str, broker: BrokerProcess
) -> None:
    script = f"""
        import os
        os.environ["DJANGO_SETTINGS_MODULE"] = "broker_project.settings"
        import django
        django.setup()
        from django.db import connection, transaction
        from pubsub_client import outbox
        try:
            with transaction.atomic():
                outbox.publish(connection, "", "rolled back", routing_key={queue!r})
                raise RuntimeError
        except RuntimeError:
            pass
        with transaction.atomic():
            outbox.publish_many(connection, [outbox.OutboxMessage("", "in atomic", {queue!r})])
        outbox.publish(connection, "amq.default", "autocommit", routing_key={queue!r})
    """
    env = {k: v for k, v in broker.env.items() if k != "HTTP_PORT"}
    async with client.consume(queue, ack="auto") as messages:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        got = [await messages.next(timeout=10) for _ in range(2)]
        assert [m.body for m in got if m] == ["in atomic", "autocommit"]
        assert await messages.next(timeout=0.5) is None


async def test_a_batch_keeps_its_order_whatever_rows_the_connection_makes(
    client: Client, queue: str, broker: BrokerProcess
) -> None:
    exchange = unique("outbox-x")
    await client.declare_exchange(exchange, "direct")
    await client.bind(exchange, queue, "k")
    conn = connect(broker)
    if isinstance(conn, sqlite3.Connection):
        conn.row_factory = sqlite3.Row
    else:
        from psycopg.rows import dict_row

        conn.row_factory = dict_row  # rows as dicts: the exchange's check still reads them
    try:
        async with client.consume(queue, ack="auto", prefetch=1000) as messages:
            sent = outbox.publish_many(conn, [OutboxMessage(exchange, n, "k") for n in range(600)])
            conn.commit()
            got = [await messages.next(timeout=10) for _ in range(600)]
        assert [(m.message_id, m.body) for m in got if m] == list(zip(sent, range(600), strict=True))
    finally:
        conn.close()
