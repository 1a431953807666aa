"""Publishing from Django code (pubsub): the caller's transaction decides, the router
routes each outbox row once, in order (docs/outbox.md). The router runs on the test's
loop; Django code runs in a worker thread, as a view's would."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connection, transaction

from broker.engine.errors import BrokerError, NotFound, TooLarge
from broker.engine.jsoncodec import loads
from broker.engine.queues import AckMode
from broker.runtime.runtime import Runtime
from exchanges.models import Exchange
from pubsub import OutboxMessage, databases, publish, publish_many, publishing
from pubsub.models import OutboxRow
from queues.models import Message, Queue
from tests.conftest import Sink
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def declare(*queues: str) -> None:
    for name in queues:
        Queue.objects.create(name=name)


def subscribe(runtime: Runtime, queue: str) -> Sink:
    sink = Sink()
    conn = runtime.connect(sink)
    runtime.subscribe(conn, subscription="s", subscription_json='"s"', ack_mode=AckMode.AUTO, prefetch=0, queue=queue)
    return sink


def bodies(sink: Sink) -> list[Any]:
    return [loads(frame)["body"] for frame in sink.frames if frame.startswith('{"type":"message"')]


@database_sync_to_async
def outbox_depth() -> int:
    return OutboxRow.objects.count()


async def test_in_autocommit_a_publish_is_committed_before_it_returns_and_delivered(runtime: Runtime) -> None:
    await declare("jobs")
    sink = subscribe(runtime, "jobs")

    message_id = await database_sync_to_async(publish)("", {"n": 1}, routing_key="jobs", headers={"k": "v"})

    await eventually(lambda: bodies(sink) == [{"n": 1}], what="the delivery")
    frame = loads(sink.frames[-1])
    assert (frame["message_id"], frame["exchange"], frame["routing_key"], frame["headers"]) == (
        message_id, "", "jobs", {"k": "v"},
    )
    assert await outbox_depth() == 0


async def test_inside_a_transaction_only_what_commits_is_delivered_in_order(runtime: Runtime) -> None:
    await declare("jobs")
    sink = subscribe(runtime, "jobs")

    def work() -> None:
        with transaction.atomic():
            publish("", 1, routing_key="jobs")
            try:
                with transaction.atomic():  # a savepoint that rolls back takes its publish with it
                    publish("", "rolled back", routing_key="jobs")
                    raise RuntimeError
            except RuntimeError:
                pass
            publish("", 2, routing_key="jobs")
            assert bodies(sink) == []  # not before the commit
        try:
            with transaction.atomic():
                publish("", "rolled back too", routing_key="jobs")
                raise RuntimeError
        except RuntimeError:
            pass
        with transaction.atomic():
            publish_many([OutboxMessage("", 3, "jobs"), OutboxMessage("amq.default", 4, "jobs")])

    await database_sync_to_async(work)()

    await eventually(lambda: bodies(sink) == [1, 2, 3, 4], what="the committed messages, in order")
    await asyncio.sleep(0.1)
    assert bodies(sink) == [1, 2, 3, 4]


async def test_durable_copies_are_stored_as_the_outbox_rows_go(runtime: Runtime) -> None:
    await declare("stored")
    await database_sync_to_async(Exchange.objects.create)(name="fan", type="fanout")

    def work() -> list[str]:
        from bindings.models import Binding

        Binding.objects.create(exchange=Exchange.objects.get(name="fan"), queue=Queue.objects.get(name="stored"))
        return publish_many([OutboxMessage("fan", n) for n in range(3)] + [OutboxMessage("fan", "memory", persistent=False)])

    await database_sync_to_async(work)()

    async def stored() -> list[str]:
        return await database_sync_to_async(
            lambda: list(Message.objects.filter(queue__name="stored").order_by("id").values_list("body", flat=True))
        )()

    await eventually(lambda: runtime.queue_counts(["stored"])["stored"].messages_ready == 4, what="all four enqueued")
    assert await stored() == ["0", "1", "2"]  # the persistent ones, with their rows gone
    assert await outbox_depth() == 0


def test_a_large_batch_is_written_whole_in_order_with_every_field() -> None:
    """More rows than one statement of VALUES takes, with every field varied: the rows
    are the messages given, in their order (PostgreSQL writes them as arrays)."""
    messages = [
        OutboxMessage(
            "", {"n": n, "text": "é\u2603'\"\\{}"}, f"key.{n}", headers={"n": n} if n % 2 else None,
            persistent=n % 3 != 0, message_id=f"id-{n}",
        )
        for n in range(1203)
    ]
    with transaction.atomic():
        assert publish_many(messages) == [f"id-{n}" for n in range(1203)]
    rows = list(
        OutboxRow.objects.order_by("id").values_list("message_id", "routing_key", "body", "headers", "persistent")
    )
    assert [row[0] for row in rows] == [f"id-{n}" for n in range(1203)]
    for n, (_, key, body, headers, persistent) in enumerate(rows):
        assert (key, loads(body), loads(headers), persistent) == (
            f"key.{n}", {"n": n, "text": "é\u2603'\"\\{}"}, {"n": n} if n % 2 else {}, n % 3 != 0,
        )


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: publish("nowhere", 1), NotFound),
        (lambda: publish("", 1, routing_key="k" * 256), BrokerError),
        (lambda: publish("bad name!", 1), BrokerError),
        (lambda: publish("", {"x": "y" * 2_000_000}), TooLarge),
        (lambda: publish("", 1, headers={"a": "\x00"}), BrokerError),
        (lambda: publish_many([OutboxMessage("", 1), OutboxMessage("nowhere", 2)]), NotFound),
        # orjson wrote them as null: the message changed without a word.
        (lambda: publish("", {"v": float("nan")}), BrokerError),
        (lambda: publish("", [float("-inf")]), BrokerError),
        (lambda: publish("", 1, headers={"h": float("inf")}), BrokerError),
    ],
    ids=["unknown exchange", "long key", "bad name", "too large", "NUL", "one of many", "NaN", "infinity",
         "infinite header"],
)
async def test_what_http_refuses_is_refused_at_the_call_and_nothing_is_written(
    runtime: Runtime, call: Any, error: type[BrokerError]
) -> None:
    with pytest.raises(error):
        await database_sync_to_async(call)()
    assert await outbox_depth() == 0


async def test_a_row_another_program_wrote_wrongly_is_removed_and_the_rest_go_through(runtime: Runtime) -> None:
    await declare("jobs")
    sink = subscribe(runtime, "jobs")

    def work() -> None:
        with transaction.atomic():
            OutboxRow.objects.create(message_id="bad", routing_key="jobs", body="{not json", published_at="x")
            deep = '{"a":' * 300 + "1" + "}" * 300  # JSON, but deeper than the broker keeps
            OutboxRow.objects.create(message_id="deep", routing_key="jobs", body="1", headers=deep, published_at="x")
            if connection.vendor == "sqlite":  # PostgreSQL's column refuses it itself
                OutboxRow.objects.create(message_id="x" * 65, routing_key="jobs", body="1", published_at="x")
            publish("", "good", routing_key="jobs")

    await database_sync_to_async(work)()

    await eventually(lambda: bodies(sink) == ["good"], what="the good message")
    assert await outbox_depth() == 0


async def test_a_drain_the_database_refuses_for_a_while_routes_each_row_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await declare("jobs")
    sink = subscribe(runtime, "jobs")
    store = runtime.store
    real = store.drain_outbox
    failures = [2]

    def flaky(rows: Any) -> list[int]:
        if failures[0]:
            failures[0] -= 1
            raise OSError("the database is away")
        return real(rows)

    monkeypatch.setattr(store, "drain_outbox", flaky)
    monkeypatch.setattr("broker.runtime.outbox.RETRY_SECONDS", 0.01)

    await database_sync_to_async(publish_many)([OutboxMessage("", n, "jobs") for n in range(5)])

    await eventually(lambda: bodies(sink) == [0, 1, 2, 3, 4], what="each message once, in order")
    await asyncio.sleep(0.1)
    assert bodies(sink) == [0, 1, 2, 3, 4] and failures == [0]


def test_the_outbox_s_depth_and_its_oldest_row_s_age_are_in_the_api_without_a_router() -> None:
    from rest_framework.test import APIClient

    publish_many([OutboxMessage("", n, "nowhere") for n in range(2)])  # no router runs: they wait
    answer = APIClient().get("/api/outbox/")
    assert answer.status_code == 200
    body = answer.json()
    assert body["depth"] == 2 and body["oldest_age_seconds"] >= 0
    OutboxRow.objects.all().delete()
    assert APIClient().get("/api/outbox").json() == {"depth": 0, "oldest_age_seconds": None}


async def test_the_console_s_stats_frame_counts_the_outbox(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.runtime import runtime as runtime_module

    monkeypatch.setattr(runtime_module, "STATS_SECONDS", 0.05)
    # The router neither reads nor removes them (notified on PostgreSQL, it still plans them): they wait.
    monkeypatch.setattr(runtime.store, "read_outbox", lambda limit: [])
    monkeypatch.setattr(runtime.store, "drain_outbox", lambda rows: [])
    await database_sync_to_async(publish_many)([OutboxMessage("", n, "nowhere") for n in range(2)])
    sink = Sink()
    runtime.watch(runtime.connect(sink))

    def outbox_counted() -> bool:
        stats = [loads(frame) for frame in sink.frames if frame.startswith('{"type":"stats"')]
        return any(frame["totals"]["outbox_depth"] == 2 and frame["totals"]["outbox_oldest_age"] >= 0 for frame in stats)

    await eventually(outbox_counted, what="a stats frame with the outbox's depth")


async def test_a_row_the_database_refuses_is_removed_and_the_others_are_routed(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import DataError

    await declare("jobs")
    sink = subscribe(runtime, "jobs")
    store = runtime.store
    real = store.drain_outbox

    def refuses_the_second(rows: Any) -> list[int]:
        if any(copy.message.body_json == '"refused"' for _, copies in rows for copy in copies):
            raise DataError("value too long")  # what a column refuses, as a database says it
        return real(rows)

    monkeypatch.setattr(store, "drain_outbox", refuses_the_second)
    await database_sync_to_async(publish_many)([OutboxMessage("", body, "jobs") for body in ("a", "refused", "b")])

    await eventually(lambda: bodies(sink) == ["a", "b"], what="the others, in order")
    assert await outbox_depth() == 0


def test_an_alias_of_another_database_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The router reads the outbox of `default` only: rows written through an alias of
    another database were accepted and never routed."""

    class Alias:
        def __init__(self, name: str) -> None:
            self.settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": name, "HOST": "", "PORT": ""}

    aliases = {"default": Alias("broker.sqlite3"), "replica": Alias("broker.sqlite3"), "other": Alias("other.sqlite3")}
    monkeypatch.setattr(databases, "connections", aliases)
    with pytest.raises(BrokerError, match="another database") as refused:
        publish("", 1, routing_key="q", using="other")
    assert refused.value.code == "invalid" and list(refused.value.fields) == ["using"]
    publishing._require_the_broker_s_database("replica")  # the same database: taken
