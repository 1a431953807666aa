"""Django tasks: ours (the broker's Tasks backend, run by `runhandlers`) against Celery 5 on
the machine's RabbitMQ and against django-tasks-db's `db_worker`, on the same database, the
same machine, in the same run. One worker process each.

- `tasks_noop`, `tasks_insert`: throughput of a no-op task and of a task that does one ORM
  insert. N tasks are enqueued first, then the worker starts; the rate is taken between
  the moments 10% and 90% of them have left the queue (start-up and prefetch cancel out).
- `tasks_latency`: enqueue-to-start latency at 200 tasks/s for a few seconds, p50 and p99
  (the task writes `time.time() - enqueued` first thing).
- `tasks_faults`: each task inserts one row per key, while its worker is SIGKILLed again
  and again; duplicate rows left at the end. Celery runs with `acks_late` here (at-least-once),
  ours with its handlers' exactly-once effects. A figure for the README, not a goal.

The three systems use bench/task_app (its tasks, its Celery app, its settings). Celery's
worker: `-P solo` (one process), prefetch multiplier 64, results ignored, no
gossip/mingle/heartbeat, as its docs advise for many short tasks. django-tasks-db's: its
defaults (it polls every second when idle).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final

import httpx

from .measure import Measurement, percentile
from .processes import ROOT, Database, free_port, stop

SETTINGS: Final = "bench.task_app.settings"
SYSTEMS: Final = ("ours", "celery", "dtdb")
LATENCY_RATE: Final = 200.0
START_TIMEOUT: Final = 60.0
DRAIN_TIMEOUT: Final = 300.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] tasks: {message}", file=sys.stderr, flush=True)


class TaskBench:
    """A broker of ours with the benchmark's settings, and the three systems' workers."""

    def __init__(self, database: Database, amqp_url: str) -> None:
        self.database = database
        self.amqp_url = amqp_url
        self.port = free_port()
        self.logdir = Path(tempfile.mkdtemp(prefix="bench-tasks-"))
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")},
            **database.env(),
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "HTTP_PORT": str(self.port),
            "HTTP_HOST": "127.0.0.1",
            "HANDLERS_BROKER_URLS": f"ws://127.0.0.1:{self.port}/ws",
            "BENCH_AMQP_URL": amqp_url.replace("%2F", "/") if amqp_url.endswith("%2F") else amqp_url,
            "PYTHONUNBUFFERED": "1",
        }
        self.broker: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    # -- processes -----------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log_file = open(self.logdir / f"{name}.log", "ab")
        self._logs.append(log_file)
        return subprocess.Popen(args, cwd=ROOT, env=env or self.env, stdout=log_file, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self.broker = self._spawn("runbroker", [sys.executable, "manage.py", "runbroker"])
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.broker.poll() is not None:
                raise RuntimeError(f"the task benchmark's broker did not start: see {self.logdir}/runbroker.log")
            time.sleep(0.1)
        answer = httpx.post(f"http://127.0.0.1:{self.port}/api/queues/", json={"name": "tasks.bench"}, timeout=10)
        assert answer.status_code in (200, 201), answer.text

    def close(self) -> None:
        if self.broker is not None:
            stop(self.broker)
        for log_file in self._logs:
            log_file.close()

    def worker(self, system: str, *, acks_late: bool = False) -> subprocess.Popen[bytes]:
        if system == "ours":
            args = [sys.executable, "manage.py", "runhandlers", "tasks:default:bench", "--grace", "1"]
        elif system == "dtdb":
            args = [sys.executable, "manage.py", "db_worker", "--backend", "db", "--queue-name", "bench"]
        else:
            args = [sys.executable, "-m", "celery", "-A", "bench.task_app.celery_app", "worker", "-P", "solo",
                    "-Q", "bench", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"]
        env = {**self.env, "BENCH_ACKS_LATE": "1" if acks_late else "0", "BENCH_WORKER": "1"}
        return self._spawn(f"worker-{system}", args, env)

    @contextmanager
    def running(self, system: str, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
        proc = self.worker(system, **kwargs)
        try:
            yield proc
        finally:
            stop(proc, sig=signal.SIGKILL if kwargs.get("acks_late") else signal.SIGTERM)

    # -- Django code ---------------------------------------------------------------

    def django(self, code: str, timeout: float = 600.0) -> str:
        setup = "import django\ndjango.setup()\n"
        done = subprocess.run([sys.executable, "-c", setup + textwrap.dedent(code)], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"Django code failed: {done.stderr[-2000:]}")
        return done.stdout.strip()

    def reset(self) -> None:
        self.django("""
            from django_tasks_db.models import DBTaskResult
            from bench.task_app.models import BenchLatency, BenchRow
            from pubsub.models import TaskResultRow
            BenchRow.objects.all().delete(); BenchLatency.objects.all().delete()
            DBTaskResult.objects.all().delete(); TaskResultRow.objects.all().delete()
        """)
        httpx.post(f"http://127.0.0.1:{self.port}/api/queues/tasks.bench/purge/", timeout=10)
        self.celery_queue(purge=True)

    def enqueue(self, system: str, task: str, count: int, *, paced: float | None = None) -> None:
        """Enqueue `count` tasks (one transaction each for ours and django-tasks-db, as a view would)."""
        args = {"noop": "()", "insert": f"({system!r}, n)", "probe": f"({system!r}, time.time())"}[task]
        if system == "celery":
            call = f"celery_app.{task}.apply_async({args})"
        elif system == "dtdb":
            call = f"tasks.{task}.using(backend='db').enqueue(*{args})"
        else:
            call = f"tasks.{task}.enqueue(*{args})"
        pace = f"time.sleep(max(0.0, start + n / {paced} - time.monotonic()))" if paced else "pass"
        self.django(f"""
            import time
            from bench.task_app import celery_app, tasks
            start = time.monotonic()
            for n in range({count}):
                {pace}
                {call}
        """)

    # -- what is left ----------------------------------------------------------------

    def celery_queue(self, *, purge: bool = False) -> int:
        import pika

        params = pika.URLParameters(self.amqp_url)
        with pika.BlockingConnection(params) as conn:
            channel = conn.channel()
            ok = channel.queue_declare("bench", durable=True)
            if purge:
                channel.queue_purge("bench")
            return int(ok.method.message_count)

    def remaining(self, system: str) -> int:
        if system == "celery":
            return self.celery_queue()
        if system == "ours":
            found = httpx.get(f"http://127.0.0.1:{self.port}/api/queues/tasks.bench/", timeout=10).json()
            return int(found["messages_ready"] or 0)
        return int(self.django("""
            from django_tasks_db.models import DBTaskResult
            print(DBTaskResult.objects.filter(status="READY").count())
        """) or 0)

    def count(self, sql: str) -> int:
        return int(self.django(f"""
            from django.db import connection
            with connection.cursor() as cursor:
                cursor.execute({sql!r})
                print(cursor.fetchone()[0])
        """))


def throughput(bench: TaskBench, system: str, task: str, count: int) -> Measurement:
    bench.reset()
    bench.enqueue(system, task, count)
    with bench.running(system) as proc:
        marks: dict[float, float] = {}
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while len(marks) < 2:
            if proc.poll() is not None:
                raise RuntimeError(f"the {system} worker exited: see {bench.logdir}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{system}: the queue did not drain in {DRAIN_TIMEOUT:.0f} s")
            left = bench.remaining(system)
            for share in (0.9, 0.1):
                if share not in marks and left <= share * count:
                    marks[share] = time.monotonic()
            time.sleep(0.05 if system != "dtdb" else 0.2)
    span = marks[0.1] - marks[0.9]
    rate = 0.8 * count / span if span > 0 else None
    return Measurement(rate, note=f"{count} tasks")


def latency(bench: TaskBench, system: str, seconds: float) -> Measurement:
    bench.reset()
    count = int(LATENCY_RATE * seconds)
    with bench.running(system):
        time.sleep(5 if system == "ours" else 3)  # connected and idle
        bench.enqueue(system, "probe", count, paced=LATENCY_RATE)
        deadline = time.monotonic() + 60
        while bench.count("SELECT COUNT(*) FROM task_bench_benchlatency") < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{system}: not every probe ran")
            time.sleep(0.2)
    values = sorted(float(v) * 1000 for v in bench.django("""
        from bench.task_app.models import BenchLatency
        print(" ".join(str(v) for v in BenchLatency.objects.values_list("latency", flat=True)))
    """).split())
    result = Measurement(percentile(values, 99), note=f"{count} tasks at {LATENCY_RATE:.0f}/s")
    result.extra["p50_ms"] = percentile(values, 50)
    return result


def faults(bench: TaskBench, system: str, count: int, kills: int) -> Measurement:
    """Duplicate rows left after `kills` SIGKILLs of the worker while it inserts one row per key."""
    bench.reset()
    bench.enqueue(system, "insert", count)
    rng = random.Random(15)
    done = 0
    for _ in range(kills):
        proc = bench.worker(system, acks_late=True)
        time.sleep(rng.uniform(1.0, 2.0))  # about a second to start, then at work
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with bench.running(system, acks_late=True):
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while bench.remaining(system) > 0 or done < count:
            done = bench.count("SELECT COUNT(DISTINCT key) FROM task_bench_benchrow")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{system}: {done} of {count} handled")
            time.sleep(0.5)
        time.sleep(2)
    rows = bench.count("SELECT COUNT(*) FROM task_bench_benchrow")
    return Measurement(float(rows - count), note=f"{count} tasks, {kills} kills: {rows - count} duplicate rows")


def run(
    database: Database, amqp_url: str | None, *, quick: bool, repetitions: int, scenarios: Sequence[str]
) -> dict[str, dict[str, Measurement]]:
    """The chosen task scenarios for every system: {scenario: {system: measurement}}.
    Without `amqp_url` Celery is left out."""
    count = 1000 if quick else 4000
    systems = [system for system in SYSTEMS if amqp_url is not None or system != "celery"]
    bench = TaskBench(database, amqp_url or "amqp://guest:guest@127.0.0.1:5672/%2F")
    results: dict[str, dict[str, Measurement]] = {}
    try:
        bench.start()
        plans: dict[str, Callable[[str], Measurement]] = {
            "tasks_noop": lambda system: throughput(bench, system, "noop", count),
            "tasks_insert": lambda system: throughput(bench, system, "insert", count),
            "tasks_latency": lambda system: latency(bench, system, 3 if quick else 10),
        }
        for key, plan in plans.items():
            if key not in scenarios:
                continue
            results[key] = {}
            for system in systems:
                runs = []
                for _ in range(repetitions):
                    try:
                        runs.append(plan(system))
                    except Exception as error:
                        log(f"{key} {system}: FAILED {type(error).__name__}: {error}")
                        runs.append(Measurement(None, note=f"failed: {type(error).__name__}: {str(error)[:160]}"))
                values = sorted((m for m in runs if m.value is not None), key=lambda m: m.value or 0)
                results[key][system] = values[len(values) // 2] if values else runs[0]
                log(f"{key} {system}: {results[key][system].value} {results[key][system].note}")
        if "tasks_faults" not in scenarios:
            return results
        results["tasks_faults"] = {}
        for system in [system for system in ("ours", "celery") if system in systems]:
            try:
                results["tasks_faults"][system] = faults(bench, system, 2000 if quick else 5000, 3 if quick else 6)
            except Exception as error:
                results["tasks_faults"][system] = Measurement(None, note=f"failed: {error}")
            log(f"tasks_faults {system}: {results['tasks_faults'][system].note}")
    finally:
        bench.close()
    return results


