"""The exactly-once fault test: 10,000 messages whose handler inserts one row per message
into a table with no unique constraint, while the handler processes are SIGKILLed again
and again, at whatever point they are (before, during or after their commits). At the end
every message has exactly one row and the queue is empty. On SQLite here, on PostgreSQL in
scripts/test's PostgreSQL run."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.e2e.handlers_harness import HandlersProcess, counts, handler_broker, http, publish, query
from tests.eventually import eventually_sync

pytestmark = pytest.mark.e2e

MESSAGES = 10_000
PROCESSES = 2
MIN_KILLS = 8


def test_killed_handler_processes_leave_every_message_handled_exactly_once(tmp_path: Path) -> None:
    broker = handler_broker(tmp_path)
    broker.start()
    processes: list[HandlersProcess] = []
    try:
        assert http(broker, "POST", "/api/queues/", {"name": "work"})[0] == 201
        ids = publish(broker, [{"n": n} for n in range(MESSAGES)])
        processes = [
            HandlersProcess(broker, "tests.handler_app.handlers.record", name=f"handlers-{index}").start()
            for index in range(PROCESSES)
        ]
        rng = random.Random(15)
        kills = 0
        started = time.monotonic()
        while True:
            done = query(broker, "SELECT COUNT(*) FROM handler_app_handledrow")[0][0]
            if done >= MESSAGES and kills >= MIN_KILLS:
                break
            assert time.monotonic() - started < 300, f"{done} handled after 300 s, {kills} kills"
            time.sleep(rng.uniform(0.3, 1.2))
            victim = processes[rng.randrange(PROCESSES)]
            victim.kill()
            kills += 1
            victim.start(connected=False)
        eventually_sync(lambda: counts(broker, "work") == (0, 0), timeout=60, what="the queue empty")
        twice = query(broker, "SELECT message_id, COUNT(*) FROM handler_app_handledrow "
                              "GROUP BY message_id HAVING COUNT(*) > 1")
        assert twice == [], f"{len(twice)} messages handled more than once, e.g. {twice[:5]}"
        handled_ids = {row[0] for row in query(broker, "SELECT message_id FROM handler_app_handledrow")}
        assert handled_ids == set(ids)
        assert query(broker, "SELECT COUNT(*) FROM queues_message")[0][0] == 0
        print(f"{kills} kills; {sum(p.log().count('was handled before') for p in processes)} copies found handled")
    finally:
        for process in processes:
            if process.alive():
                process.kill()
        broker.close()
