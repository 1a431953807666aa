"""Django's Tasks on the broker, end to end: tasks enqueued by Django code in a process
of its own (inside its transaction, or rolled back with it), run by `runhandlers` against
the real `runbroker`, their results read back through Django's own `get_result`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.handlers_harness import SETTINGS, HandlersProcess, counts, handled, handler_broker, query
from tests.e2e.harness import ROOT, BrokerProcess
from tests.eventually import eventually_sync

pytestmark = pytest.mark.e2e

TASK_HANDLER = "tasks:default:default"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = handler_broker(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def worker(broker: BrokerProcess) -> Iterator[HandlersProcess]:
    process = HandlersProcess(broker, TASK_HANDLER).start()
    try:
        yield process
    finally:
        if process.alive():
            process.kill()


def django(broker: BrokerProcess, script: str) -> str:
    """Run Django code with the broker's settings in a process of its own; what it printed."""
    setup = f"import os, django\nos.environ['DJANGO_SETTINGS_MODULE'] = {SETTINGS!r}\ndjango.setup()\n"
    done = subprocess.run([sys.executable, "-c", setup + textwrap.dedent(script)], cwd=ROOT, env=broker.env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def result(broker: BrokerProcess, result_id: str) -> dict[str, object]:
    printed = django(broker, f"""
        import json
        from tests.handler_app.tasks import record
        found = record.get_backend().get_result({result_id!r})
        print(json.dumps({{"status": str(found.status), "value": found.return_value if found.is_finished and
            not found.errors else None, "errors": [e.exception_class_path for e in found.errors],
            "attempts": found.attempts}}))
    """)
    import json

    loaded: dict[str, object] = json.loads(printed.splitlines()[-1])
    return loaded


def test_a_task_enqueued_in_a_transaction_runs_once_and_its_result_is_kept(
    broker: BrokerProcess, worker: HandlersProcess
) -> None:
    result_id = django(broker, """
        from django.db import transaction
        from tests.handler_app.tasks import record
        with transaction.atomic():
            enqueued = record.enqueue("alpha")
        print(enqueued.id)
    """)
    eventually_sync(lambda: result(broker, result_id)["status"].endswith("SUCCESSFUL"), timeout=30,  # type: ignore[union-attr]
                    what="the task successful")
    assert result(broker, result_id) == {"status": "SUCCESSFUL", "value": "ALPHA", "errors": [], "attempts": 1}
    assert handled(broker, "tasks") == [("alpha", 1)]
    eventually_sync(lambda: counts(broker, "tasks.default") == (0, 0), what="the task's message acknowledged")


def test_a_task_enqueued_in_a_rolled_back_transaction_never_runs(broker: BrokerProcess, worker: HandlersProcess) -> None:
    django(broker, """
        from django.db import transaction
        from tests.handler_app.tasks import record
        try:
            with transaction.atomic():
                record.enqueue("never")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        record.enqueue("after")
    """)
    eventually_sync(lambda: handled(broker, "tasks") == [("after", 1)], what="the committed task run")
    time.sleep(0.5)
    assert handled(broker, "tasks") == [("after", 1)]
    assert query(broker, "SELECT COUNT(*) FROM pubsub_taskresultrow")[0][0] == 1


def test_a_failing_task_is_failed_with_its_error_and_its_writes_rolled_back(
    broker: BrokerProcess, worker: HandlersProcess
) -> None:
    result_id = django(broker, "from tests.handler_app.tasks import fail\nprint(fail.enqueue('beta').id)")
    eventually_sync(lambda: result(broker, result_id)["status"] == "FAILED", timeout=30, what="the task failed")
    assert result(broker, result_id)["errors"] == ["builtins.ValueError"]
    assert handled(broker, "tasks") == []


def test_a_deferred_task_runs_when_it_is_due(broker: BrokerProcess, worker: HandlersProcess) -> None:
    started = time.monotonic()
    result_id = django(broker, """
        import datetime
        from django.utils import timezone
        from tests.handler_app.tasks import record
        print(record.using(run_after=timezone.now() + datetime.timedelta(seconds=3)).enqueue("later").id)
    """)
    time.sleep(1)
    assert result(broker, result_id)["status"] == "READY"
    eventually_sync(lambda: handled(broker, "tasks") == [("later", 1)], timeout=30, what="the deferred task run")
    assert time.monotonic() - started >= 3


def test_a_task_with_context_knows_its_result_and_attempt(broker: BrokerProcess, worker: HandlersProcess) -> None:
    printed = django(broker, """
        import time
        from tests.handler_app.tasks import attempt
        enqueued = attempt.enqueue("gamma")
        for _ in range(300):
            enqueued.refresh()
            if enqueued.is_finished:
                break
            time.sleep(0.1)
        print(enqueued.status, enqueued.return_value == {"label": "gamma", "attempt": 1, "id": enqueued.id})
    """)
    assert printed.splitlines()[-1] == "SUCCESSFUL True"


def test_runhandlers_deletes_the_results_kept_longer_than_keep_results(
    broker: BrokerProcess, worker: HandlersProcess
) -> None:
    old, recent = (django(broker, f"""
        from tests.handler_app.tasks import record
        print(record.enqueue({name!r}).id)
    """) for name in ("old", "recent"))
    eventually_sync(lambda: len(handled(broker, "tasks")) == 2, timeout=30, what="both tasks run")
    eventually_sync(lambda: all(result(broker, found)["status"] == "SUCCESSFUL" for found in (old, recent)),
                    timeout=10, what="both results written")
    two_days_earlier = ("finished_at - INTERVAL '2 days'" if broker.env.get("DATABASE_URL")
                        else "datetime(finished_at, '-2 days')")
    assert query(broker, f"UPDATE pubsub_taskresultrow SET finished_at = {two_days_earlier} WHERE id = '{old}'"
                         " RETURNING id") == [(old,)]
    eventually_sync(lambda: [row[0] for row in query(broker, "SELECT id FROM pubsub_taskresultrow")] == [recent],
                    timeout=10, what="the result older than a day (the default KEEP_RESULTS) deleted")
