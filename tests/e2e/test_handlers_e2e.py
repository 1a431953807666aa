"""`manage.py runhandlers` against the real `runbroker`: handled once, retried with a
backoff, dead-lettered, stopped over its time, stopped gracefully, and exactly once
across crashes of the handler process (before and after its commit) and of the router.
On SQLite here; on PostgreSQL too in scripts/test's PostgreSQL run (E2E_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.client import WsClient
from tests.e2e.handlers_harness import (
    HandlersProcess,
    counts,
    execute,
    handled,
    handler_broker,
    http,
    publish,
    query,
    take,
)
from tests.e2e.harness import BrokerProcess
from tests.eventually import eventually_sync

pytestmark = pytest.mark.e2e

RECORD = "tests.handler_app.handlers.record"
AUDIT = "tests.handler_app.handlers.audit"
ASYNC = "tests.handler_app.handlers.record_async"
SLOW = "tests.handler_app.handlers.record_slowly"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = handler_broker(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def handlers(broker: BrokerProcess) -> Iterator[HandlersProcess]:
    process = HandlersProcess(broker, RECORD, "--grace", "10").start()
    try:
        yield process
    finally:
        if process.alive():
            process.kill()


def wait_handled(broker: BrokerProcess, count: int, queue: str = "work", timeout: float = 30.0) -> list[tuple[str, int]]:
    eventually_sync(lambda: len(handled(broker, queue)) >= count, timeout=timeout, what=f"{count} handled on {queue}")
    return handled(broker, queue)


def stored(broker: BrokerProcess, queue: str) -> int:
    return int(query(broker, "SELECT COUNT(*) FROM queues_message m JOIN queues_queue q ON q.id = m.queue_id "
                             f"WHERE q.name = '{queue}'")[0][0])


def test_each_message_is_handled_once_and_its_stored_copy_removed(broker: BrokerProcess, handlers: HandlersProcess) -> None:
    ids = publish(broker, [{"n": n} for n in range(20)])
    rows = wait_handled(broker, 20)
    assert sorted(rows) == sorted((message_id, 1) for message_id in ids)
    eventually_sync(lambda: counts(broker, "work") == (0, 0), what="the queue empty")
    assert stored(broker, "work") == 0


def test_the_console_sees_the_handler_process_and_its_counts(broker: BrokerProcess, handlers: HandlersProcess) -> None:
    publish(broker, [{"n": n} for n in range(5)] + [{"fail_until": 1}])
    wait_handled(broker, 6)

    async def watched() -> list[dict[str, Any]]:
        client = await WsClient.connect(broker.ws_url)
        try:
            await client.request({"type": "watch", "id": "w"})
            for _ in range(10):
                frame = await client.recv(timeout=5)
                found = [h for h in frame.get("handlers", []) if h["handled"] >= 6]
                if frame["type"] == "stats" and found:
                    return found
            return []
        finally:
            await client.close()

    (seen,) = asyncio.run(watched())
    assert (seen["handler"], seen["queue"], seen["concurrency"]) == (RECORD, "work", 4)
    assert (seen["handled"], seen["failed"], seen["retried"], seen["dead_lettered"]) == (6, 1, 1, 0)
    assert seen["process"].split(":")[1] == str(handlers.proc.pid if handlers.proc else "")
    handlers.stop()
    assert query(broker, "SELECT COUNT(*) FROM pubsub_handlerstatus")[0][0] == 0  # gone with its process


def test_a_failing_message_is_retried_with_backoff_and_then_handled(broker: BrokerProcess, handlers: HandlersProcess) -> None:
    started = time.monotonic()
    (message_id,) = publish(broker, [{"fail_until": 2}])
    assert wait_handled(broker, 1) == [(message_id, 3)]
    assert time.monotonic() - started >= 0.6  # 0.2 s after the first failure, 0.4 s after the second
    log = handlers.log()
    assert f"message {message_id}, attempt 1 failed; next attempt in 0.2 s" in log
    assert f"message {message_id}, attempt 2 failed; next attempt in 0.4 s" in log
    assert f"handler {RECORD}: message {message_id}, attempt 2 failed after" in log
    eventually_sync(lambda: counts(broker, "work") == (0, 0), what="the queue empty")
    assert query(broker, "SELECT COUNT(*) FROM pubsub_handlerattempt")[0][0] == 0


def test_a_message_that_keeps_failing_is_kept_in_the_dead_queue(broker: BrokerProcess, handlers: HandlersProcess) -> None:
    (message_id,) = publish(broker, [{"fail_until": 99}], headers={"x-trace": "t1"})
    eventually_sync(lambda: counts(broker, "work.dead")[0] == 1, what="the message in work.dead")
    (dead,) = take(broker, "work.dead")
    headers = dead["headers"]
    assert (dead["message_id"], dead["body"], headers["x-trace"]) == (message_id, {"fail_until": 99}, "t1")
    assert headers["x-handler"] == RECORD and headers["x-handler-attempts"] == 3
    assert headers["x-handler-error"] == "RuntimeError: failing attempt 3 as asked"
    assert headers["x-death"][0]["reason"] == "rejected" and headers["x-death"][0]["queue"] == "work"
    assert handled(broker) == [] and counts(broker, "work") == (0, 0)
    assert f"message {message_id} dead-lettered after 3 attempts" in handlers.log()


def test_dead_letters_go_through_the_queues_dead_letter_exchange(tmp_path: Path) -> None:
    broker = handler_broker(tmp_path)
    broker.start()
    try:
        assert http(broker, "POST", "/api/exchanges/", {"name": "dlx", "type": "direct"})[0] == 201
        assert http(broker, "POST", "/api/queues/", {"name": "failed"})[0] == 201
        assert http(broker, "POST", "/api/bindings/", {"exchange": "dlx", "queue": "failed", "binding_key": "oops"})[0] == 201
        arguments = {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "oops"}
        assert http(broker, "POST", "/api/queues/", {"name": "work", "arguments": arguments})[0] == 201
        handlers = HandlersProcess(broker, RECORD).start()
        try:
            (message_id,) = publish(broker, [{"fail_until": 99}])
            eventually_sync(lambda: counts(broker, "failed")[0] == 1, what="the dead letter in 'failed'")
            (dead,) = take(broker, "failed")
            assert (dead["message_id"], dead["exchange"], dead["routing_key"]) == (message_id, "dlx", "oops")
            assert http(broker, "GET", "/api/queues/work.dead/")[0] == 404  # not made: the exchange serves
        finally:
            handlers.kill()
    finally:
        broker.close()


def test_a_handler_over_its_time_limit_fails_with_its_writes_rolled_back(
    broker: BrokerProcess, handlers: HandlersProcess
) -> None:
    (message_id,) = publish(broker, [{"busy": 30}])
    eventually_sync(lambda: counts(broker, "work.dead")[0] == 1, timeout=30, what="the message dead-lettered")
    (dead,) = take(broker, "work.dead")
    assert dead["headers"]["x-handler-error"] == "time limit of 1 s exceeded"
    assert handled(broker) == []
    took = re.search(rf"message {message_id}, attempt 1 failed after ([0-9.]+) s", handlers.log())
    assert took is not None and 1.0 <= float(took.group(1)) < 5.0  # its limit, and some slack on a busy machine


def test_sigterm_lets_the_running_handler_finish_then_exits(broker: BrokerProcess, handlers: HandlersProcess) -> None:
    (message_id,) = publish(broker, [{"sleep": 0.9}])  # under its time limit of 1 s
    time.sleep(0.4)  # taken and running
    stopped = time.monotonic()
    assert handlers.stop(signal.SIGTERM) == 0
    assert 0.3 < time.monotonic() - stopped < 10
    assert handled(broker) == [(message_id, 1)]
    eventually_sync(lambda: counts(broker, "work") == (0, 0), what="its ack reached the broker")


def test_sigterm_under_load_exits_once_the_running_handlers_are_done(broker: BrokerProcess, handlers: HandlersProcess) -> None:
    # Deliveries keep coming while it stops (each ack frees a place in its prefetch): those it
    # no longer reads must not hold up its close. They took it 10 s more (the close timeout).
    # A batch under way is finished first (up to 64 messages in one transaction): short ones.
    publish(broker, [{"sleep": 0.005} for _ in range(400)])
    eventually_sync(lambda: len(handled(broker)) >= 20, what="handling under way")
    stopped = time.monotonic()
    assert handlers.stop(signal.SIGTERM) == 0
    assert time.monotonic() - stopped < 5
    # Every message it handled was acknowledged before it closed: none is back in the queue.
    ready, unacknowledged = counts(broker, "work")
    rows = handled(broker)
    assert (ready + len(rows), unacknowledged) == (400, 0)
    assert len({message_id for message_id, _ in rows}) == len(rows)


def test_sigterm_leaves_a_handler_that_outlives_the_grace_period(broker: BrokerProcess) -> None:
    handlers = HandlersProcess(broker, SLOW, "--grace", "1").start()
    try:
        publish(broker, [{"sleep": 5}], routing_key="slow-work")
        eventually_sync(lambda: counts(broker, "slow-work") == (0, 1), what="taken")
        time.sleep(0.2)  # and running
        stopped = time.monotonic()
        assert handlers.stop(signal.SIGTERM) == 1  # left running: its transaction dies with the process
        # Within the one grace period (it was waited for twice: once more on the way out).
        assert time.monotonic() - stopped < 1.8
        assert "exiting with 1 message(s) still being handled" in handlers.log()
    finally:
        if handlers.alive():
            handlers.kill()
    assert handled(broker, "slow-work") == []
    eventually_sync(lambda: counts(broker, "slow-work") == (1, 0), what="the message back in its queue")


def test_a_crash_before_the_commit_rolls_back_and_the_message_is_handled_again(
    broker: BrokerProcess, handlers: HandlersProcess
) -> None:
    (message_id,) = publish(broker, [{"die": "before_commit"}])
    eventually_sync(lambda: not handlers.alive(), what="the handler process dead")
    assert handled(broker) == []
    handlers.start()
    assert wait_handled(broker, 1) == [(message_id, 1)]  # a crash is not a counted attempt


def test_a_crash_after_the_commit_does_not_run_the_handler_again(broker: BrokerProcess, handlers: HandlersProcess) -> None:
    """The broker looks for the row of the copy the dead process held: gone, so the message
    is done, and is not even given back (a queue's TTL or delivery limit cannot take it)."""
    (message_id,) = publish(broker, [{"die": "after_commit"}])
    eventually_sync(lambda: not handlers.alive(), what="the handler process dead")
    assert handled(broker) == [(message_id, 1)]
    eventually_sync(lambda: counts(broker, "work") == (0, 0), what="the handled copy done, with no handler running")
    handlers.start()
    time.sleep(0.5)
    assert handled(broker) == [(message_id, 1)]
    assert counts(broker, "work") == (0, 0)


def test_a_copy_whose_row_is_gone_is_acknowledged_without_running(broker: BrokerProcess) -> None:
    """As when a handler cut off from the broker (not dead) committed after the broker gave
    its copy back: the copy comes to a handler, whose transaction finds no row."""
    handlers = HandlersProcess(broker, RECORD, "--grace", "10").start()  # declares the queue
    assert handlers.stop(signal.SIGTERM) == 0
    (message_id,) = publish(broker, [{"n": 1}])
    eventually_sync(lambda: counts(broker, "work") == (1, 0), what="the message waiting")
    assert len(query(broker, "DELETE FROM queues_message RETURNING id")) == 1  # committed by someone else
    handlers.start()
    try:
        eventually_sync(lambda: counts(broker, "work") == (0, 0), what="the copy acknowledged")
        assert handled(broker) == []
        eventually_sync(
            lambda: f"message {message_id} was handled before; acknowledged without running" in handlers.log(),
            what="the log saying so",
        )
    finally:
        handlers.kill()


def test_a_message_that_kills_every_process_that_runs_it_is_dead_lettered_and_its_neighbours_lose_nothing(
    broker: BrokerProcess, handlers: HandlersProcess
) -> None:
    """Given back twice, a copy is a suspect: it runs alone, its attempt recorded before it
    runs, so the deaths count against it alone. The poison dies twice uncounted, then three
    counted times (max_attempts), then goes to work.dead without running; the messages that
    were given back with it each time run alone too, and are handled at their first attempt."""
    poison, *others = publish(broker, [{"die": "always"}, *({"n": n} for n in range(5))])
    deaths = 0
    while counts(broker, "work.dead")[0] == 0:
        # A process started (a Django start-up) and killed by the poison each time: on a busy
        # machine that can take a few seconds.
        eventually_sync(lambda: not handlers.alive() or counts(broker, "work.dead")[0] == 1, timeout=30,
                        what="the handler process dead, or the message dead-lettered")
        if handlers.alive():
            break
        deaths += 1
        assert deaths <= 5, "the message ran again after its attempts were spent"
        handlers.start(connected=False)  # it may die before its connection is logged
    assert deaths == 5
    (dead,) = take(broker, "work.dead")
    assert dead["message_id"] == poison and dead["headers"]["x-handler-attempts"] == 3
    assert "the process died during it" in dead["headers"]["x-handler-error"]
    assert f"message {poison}: its attempts are spent, the last ending with: attempt under way" in handlers.log()
    assert sorted(wait_handled(broker, 5)) == sorted((other, 1) for other in others)
    eventually_sync(lambda: query(broker, "SELECT COUNT(*) FROM pubsub_handlerattempt")[0][0] == 0,
                    what="no attempt left recorded")


def _made_a_suspect(broker: BrokerProcess, process: HandlersProcess, body: dict[str, Any]) -> str:
    """Publish to slow-work and kill the process twice while the message runs: given back
    twice, its next delivery is a suspect. Its message id."""
    (message_id,) = publish(broker, [body], routing_key="slow-work")
    for _ in range(2):
        eventually_sync(lambda: counts(broker, "slow-work") == (0, 1), what="the message running")
        time.sleep(0.3)
        process.kill()
        process.start()
    eventually_sync(lambda: counts(broker, "slow-work") == (0, 1), what="the suspect running")
    return message_id


def under_way(broker: BrokerProcess) -> list[tuple[Any, ...]]:
    return query(broker, "SELECT attempts, last_error FROM pubsub_handlerattempt")


def test_a_suspect_s_attempt_is_recorded_before_it_runs_and_the_record_goes_with_it(broker: BrokerProcess) -> None:
    process = HandlersProcess(broker, SLOW).start()
    try:
        message_id = _made_a_suspect(broker, process, {"sleep": 2})
        eventually_sync(lambda: len(under_way(broker)) == 1, what="its attempt recorded")
        ((attempts, error),) = under_way(broker)
        assert attempts == 1 and error.startswith("attempt under way")  # the two deaths before are not counted
        assert wait_handled(broker, 1, queue="slow-work") == [(message_id, 1)]
        eventually_sync(lambda: under_way(broker) == [], what="its record removed")
    finally:
        process.kill()


def test_sigterm_leaves_a_suspect_that_outlives_the_grace_period(broker: BrokerProcess) -> None:
    process = HandlersProcess(broker, SLOW, "--grace", "1").start()
    try:
        _made_a_suspect(broker, process, {"sleep": 6})
        eventually_sync(lambda: len(under_way(broker)) == 1, what="the suspect running")
        stopped = time.monotonic()
        assert process.stop(signal.SIGTERM) == 1
        assert time.monotonic() - stopped < 1.8
        assert "exiting with 1 message(s) still being handled" in process.log()
    finally:
        if process.alive():
            process.kill()


def test_an_async_handler_is_retried_and_acknowledged_after_success(broker: BrokerProcess) -> None:
    handlers = HandlersProcess(broker, ASYNC).start()
    try:
        (message_id,) = publish(broker, [{"fail_until": 1}], routing_key="async-work")
        assert wait_handled(broker, 1, queue="async-work") == [(message_id, 2)]
        eventually_sync(lambda: counts(broker, "async-work") == (0, 0), what="acknowledged")
        assert stored(broker, "async-work") == 0
    finally:
        handlers.kill()


def test_an_exchange_handler_declares_its_queue_and_binding(broker: BrokerProcess) -> None:
    assert http(broker, "POST", "/api/exchanges/", {"name": "events", "type": "topic"})[0] == 201
    handlers = HandlersProcess(broker, AUDIT).start()
    try:
        ids = publish(broker, [1, 2], exchange="events", routing_key="audit.login")
        assert sorted(wait_handled(broker, 2, queue="events.audit")) == sorted((i, 1) for i in ids)
    finally:
        handlers.kill()


def test_a_missing_exchange_stops_the_command_with_a_clear_error(broker: BrokerProcess) -> None:
    handlers = HandlersProcess(broker, AUDIT).start(connected=False)
    assert handlers.proc is not None and handlers.proc.wait(30) != 0
    assert "binding 'events.audit' to 'events'" in handlers.log() and "not_found" in handlers.log()


def test_a_deleted_queue_is_declared_again_and_handled(broker: BrokerProcess, handlers: HandlersProcess) -> None:
    assert http(broker, "DELETE", "/api/queues/work/")[0] == 204
    eventually_sync(lambda: http(broker, "GET", "/api/queues/work/")[0] == 200, what="the queue declared again")
    handlers.wait_connected()
    (message_id,) = publish(broker, [{"n": 1}])
    assert wait_handled(broker, 1) == [(message_id, 1)]


def test_handlers_reconnect_when_the_router_restarts(broker: BrokerProcess, handlers: HandlersProcess) -> None:
    first = publish(broker, [{"n": n} for n in range(50)])
    wait_handled(broker, 50)
    broker.kill()
    broker.start()
    handlers.wait_connected()
    second = publish(broker, [{"n": n} for n in range(50)])
    rows = wait_handled(broker, 100)
    assert sorted(message_id for message_id, _ in rows) == sorted(first + second)


# An operator's rule the router's stored copies can break: the database refuses a body
# that names "poison" (a trigger, on either database).
REFUSE_POISON = {
    "sqlite": "CREATE TRIGGER refuse_poison BEFORE INSERT ON queues_message WHEN NEW.body LIKE '%poison%' "
              "BEGIN SELECT RAISE(ABORT, 'poison is refused'); END;",
    "postgresql": "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                  "IF NEW.body LIKE '%poison%' THEN RAISE EXCEPTION 'poison is refused' USING ERRCODE = 'check_violation'; "
                  "END IF; RETURN NEW; END $$; "
                  "CREATE TRIGGER refuse_poison BEFORE INSERT ON queues_message "
                  "FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
}


def test_a_message_the_database_refuses_to_store_is_still_handled(broker: BrokerProcess, handlers: HandlersProcess) -> None:
    """Its copy lives in the router's memory only: its delivery names no row, so the
    handler runs it (at least once) rather than taking the missing row for a message
    handled before."""
    execute(broker, REFUSE_POISON["postgresql" if broker.env.get("DATABASE_URL") else "sqlite"])

    async def publish_poison() -> dict[str, Any]:
        client = await WsClient.connect(broker.ws_url)
        try:
            await client.send({"type": "publish", "id": 1, "exchange": "", "routing_key": "work",
                               "body": "poison", "headers": {}, "message_id": "poison-1"})
            return await client.recv(timeout=30)
        finally:
            await client.close()

    answer = asyncio.run(publish_poison())
    assert (answer["type"], answer["code"]) == ("error", "unavailable")  # never confirmed
    assert wait_handled(broker, 1) == [("poison-1", 1)]
    eventually_sync(lambda: counts(broker, "work") == (0, 0), what="the copy acknowledged")
    assert "handled before" not in handlers.log()
