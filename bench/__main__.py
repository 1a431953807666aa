"""`python -m bench`: our broker against RabbitMQ Web-STOMP, side by side.

Starts `manage.py runbroker` on a fresh database, finds RabbitMQ's Web-STOMP
(and its management API, for HTTP publish) when reachable, measures the load
generator's own ceiling against bench/ceiling_server.py, runs the scenarios,
prints the table and, as the last line, the JSON summary. Every process it
starts is stopped on the way out, Ctrl-C included.

The outbox scenarios run Django processes of the project that publish in
their transactions (`pubsub.publish`) on the broker's database, against the
same transactions publishing with `transaction.on_commit` and pika (publisher
confirms) to RabbitMQ over AMQP (bench/outbox_scenarios.py).

With `--protocol stomp` our side's WebSocket clients speak STOMP 1.2 to it (the
same frames and destinations as to RabbitMQ, on the same /ws), not our JSON frames.

With `--cluster` it also starts a cluster of ours (a router and two edges, on
PostgreSQL and Redis) and runs the WebSocket scenarios across it: publishers
on one edge, subscribers on the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from types import FrameType

import psutil

from . import (
    backlog_scenario,
    delayed_scenario,
    metrics_scenario,
    other_scenarios,
    outbox_scenarios,
    task_scenarios,
    ws_scenarios,
)
from .measure import Measurement, Mode, last_cpu_by_role, last_other_cores, median_of
from .processes import (
    CeilingServer,
    Cluster,
    Database,
    OurBroker,
    find_redis,
    raise_nofile,
    stop_all,
)
from .profiling import Profiler
from .rabbit import RabbitInfo, probe_amqp, probe_rabbitmq
from .report import SPECS, Row, summary, table
from .targets import PROTOCOLS, Target, ceiling, cluster, ours, rabbitmq

WS_SCENARIOS = ("publish", "consume", "latency", "fanout", "fanout_latency")
# Publishing from Django code (docs/outbox.md) against transaction.on_commit + pika to RabbitMQ.
OUTBOX_SCENARIOS = ("outbox_latency", "outbox_publish", "outbox_publish_many")
# Django tasks: ours against Celery 5 on RabbitMQ and django-tasks-db (bench/task_scenarios.py).
TASK_SCENARIOS = ("tasks_noop", "tasks_insert", "tasks_latency", "tasks_faults")
# A durable queue deeper than memory: ours (a window in memory) against a lazy queue of RabbitMQ's.
BACKLOG_ROWS = ("backlog_publish", "backlog_consume", "backlog_rss")
ALL = (*WS_SCENARIOS, "http", "connections", "recovery", "backlog", *OUTBOX_SCENARIOS, *TASK_SCENARIOS, "metrics", "delayed")
# Queues held while /metrics is scraped (the `metrics` row), full and --quick.
METRICS_QUEUES = (10_000, 2_000)
OUTBOX_WAY = "RabbitMQ: transaction.on_commit, then pika BlockingConnection basic_publish with confirms"
# Where our side's WebSocket clients speak `--protocol`; the others (http, recovery, tasks) open none.
WS_CLIENT_ROWS = (*WS_SCENARIOS, "connections", *BACKLOG_ROWS, *OUTBOX_SCENARIOS)
# Other programs using more than this many cores during a window make its result suspect.
BUSY_CORES = 0.3


SERVERS = ("runbroker", "uvicorn", "daphne")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs, 1 repetition, smaller N: under two minutes")
    parser.add_argument("--database-url", help="a PostgreSQL server URL (postgres://user@host:5432/postgres): a fresh database is created on it and dropped afterwards; default a temporary SQLite file")
    parser.add_argument("--only", help=f"comma-separated scenarios among {','.join(ALL)}")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="json",
        help="what our side's WebSocket clients speak: our JSON frames (default), or STOMP 1.2 on the same /ws "
        "(subprotocol v12.stomp), with the same frames and destinations as RabbitMQ's side, so both sides speak one "
        "protocol; it applies wherever ours gets WebSocket clients (publish, consume, latency, fanout, fanout_latency, "
        "connections, backlog, the outbox scenarios' consumer, and --cluster); http, recovery and tasks open none and "
        "delayed speaks our JSON frames: they run the same either way",
    )
    parser.add_argument("--rabbitmq-url", default="ws://127.0.0.1:15674/ws", help="RabbitMQ Web-STOMP endpoint (guest/guest)")
    parser.add_argument("--rabbitmq-management", default="http://127.0.0.1:15672", help="RabbitMQ management API, for HTTP publish")
    parser.add_argument("--rabbitmq-amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F", help="RabbitMQ AMQP URL, for the outbox scenarios' on_commit + pika publishers")
    parser.add_argument("--rabbitmq-prometheus", default="http://127.0.0.1:15692", help="RabbitMQ's rabbitmq_prometheus endpoint, for the metrics row")
    parser.add_argument("--no-rabbitmq", action="store_true", help="do not use RabbitMQ even if reachable")
    parser.add_argument("--no-ceiling", action="store_true", help="skip measuring the generator's ceiling")
    parser.add_argument("--repetitions", type=int, help="repetitions per scenario (default 3, --quick 1)")
    parser.add_argument("--duration", type=float, help="seconds measured per run (default 6, --quick 1.5)")
    parser.add_argument("--profile", metavar="DIR", help="record py-spy profiles of our broker per scenario into DIR (slows it down)")
    parser.add_argument("--server", choices=SERVERS, default="runbroker", help="run our broker's ASGI application under this server instead of runbroker (the comparison that chose runbroker's embedded server); recovery still starts runbroker")
    parser.add_argument("--cluster", action="store_true", help="also run the WebSocket scenarios across a cluster of ours (a router and two edges); needs a PostgreSQL --database-url and Redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15", help="with --cluster: a Redis database of the cluster's own (redis://host:6379/N); it is emptied (FLUSHDB) first")
    args = parser.parse_args(argv)
    if args.cluster:
        if not (args.database_url or "").startswith(("postgres://", "postgresql://")):
            parser.error("--cluster needs a PostgreSQL server: --database-url postgres://user@host:5432/postgres (a cluster keeps its state there)")
        if not urllib.parse.urlsplit(args.redis_url).path.strip("/").isdigit():
            parser.error(f"--redis-url {args.redis_url!r} must name a database number (redis://host:6379/N): the benchmark empties it")
    chosen = tuple(s.strip() for s in args.only.split(",")) if args.only else ALL
    unknown = [s for s in chosen if s not in ALL]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose among {', '.join(ALL)}")
    args.scenarios = [s for s in ALL if s in chosen]
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def guarded(label: str, run: Callable[[], Awaitable[Measurement]]) -> Measurement:
    """A failed run is a row with a note, not the end of the benchmark."""
    try:
        started = time.monotonic()
        last_other_cores[0] = 0.0
        last_cpu_by_role.clear()
        result = await run()
        other = last_other_cores[0]
        if other > BUSY_CORES:
            result.note = (result.note + "; " if result.note else "") + f"machine busy: other processes used {other:.1f} cores"
        if last_cpu_by_role and result.count > 0:
            split = ", ".join(f"{role} {cpu / result.count * 1000:.4f}" for role, cpu in last_cpu_by_role.items())
            result.note = (result.note + "; " if result.note else "") + f"cpu s/1k by process: {split}"
        log(f"{label}: {result.value if result.value is None else round(result.value, 3)} ({time.monotonic() - started:.1f} s) {result.note}")
        return result
    except (Exception, TimeoutError) as error:
        log(f"{label}: FAILED {type(error).__name__}: {error}")
        return Measurement(None, note=f"failed: {type(error).__name__}: {str(error)[:160]}")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode = Mode.of(args.quick)
        if args.repetitions:
            self.mode.repetitions = args.repetitions
        if args.duration:
            self.mode.duration = args.duration
        self.rows = {key: Row(SPECS[key]) for key in args.scenarios if key != "backlog"}
        if "backlog" in args.scenarios:
            self.rows.update({key: Row(SPECS[key]) for key in BACKLOG_ROWS})
        for key in args.scenarios:
            if key in TASK_SCENARIOS and f"{key}_dtdb" in SPECS:
                self.rows[f"{key}_dtdb"] = Row(SPECS[f"{key}_dtdb"])
        for key in self.cluster_scenarios:
            self.rows[key].cluster = Measurement(None, note="not run")
        for key, row in self.rows.items():
            if key in WS_CLIENT_ROWS:
                row.ours_protocol = args.protocol
        self.profiler = Profiler(args.profile) if args.profile else None

    @property
    def cluster_scenarios(self) -> list[str]:
        return [s for s in self.args.scenarios if s in WS_SCENARIOS] if self.args.cluster else []

    async def run(self, ours_t: Target, rabbit_t: Target | None, ceilings: dict[str, Target], cluster_t: Target | None = None) -> None:
        ws = [s for s in self.args.scenarios if s in WS_SCENARIOS or s == "http"]
        for key in ws:
            targets: list[tuple[str, Target, int]] = [("ours", ours_t, self.mode.repetitions)]
            if cluster_t is not None and key in self.cluster_scenarios:
                targets.append(("cluster", cluster_t, self.mode.repetitions))
            if rabbit_t is not None:
                targets.append(("rabbitmq", rabbit_t, self.mode.repetitions))
            for name, target in ceilings.items():
                # Ours over STOMP is held to the STOMP ceiling (`ceiling_rabbitmq`): the JSON one is not needed.
                if name != "ceiling_ours" or self.rows[key].ours_protocol == "json":
                    targets.append((name, target, 1))
            for slot, target, reps in targets:
                runs = [await self.once(key, slot, target, rep) for rep in range(reps)]
                setattr(self.rows[key], slot, median_of(runs))
        if "connections" in self.rows:
            row = self.rows["connections"]
            row.ours = await guarded("connections ours", lambda: other_scenarios.connections(ours_t, self.mode))
            if rabbit_t is not None:
                limit = self.rabbit_info.connection_limit if self.rabbit_info else None
                row.rabbitmq = await guarded("connections rabbitmq", lambda: other_scenarios.connections(rabbit_t, self.mode, limit))
        if "recovery" in self.rows:
            self.rows["recovery"].ours = await guarded(
                "recovery ours", lambda: asyncio.to_thread(other_scenarios.recovery, self.mode, self.args.database_url)
            )
            self.rows["recovery"].notes.append("RabbitMQ not measured (it would need a restart of the system's server)")
        if "backlog" in self.args.scenarios:
            await self.run_backlog(ours_t, rabbit_t)
        if "metrics" in self.rows:
            await self.run_metrics(ours_t, rabbit_t)
        if "delayed" in self.rows:
            row = self.rows["delayed"]
            runs = [await guarded(f"delayed ours #{rep + 1}", lambda: delayed_scenario.delayed(ours_t, self.mode))
                    for rep in range(self.mode.repetitions)]
            row.ours = median_of(runs)
            row.notes.append("ours only: RabbitMQ's delayed-message exchange is a plugin not measured here")
        outbox = [s for s in self.args.scenarios if s in OUTBOX_SCENARIOS]
        if outbox and self.database is not None:
            await asyncio.to_thread(outbox_scenarios.create_orders_table, self.database)
            ways = [outbox_scenarios.Way("ours", ours_t, self.database)]
            if rabbit_t is not None and self.amqp_url is not None:
                ways.append(outbox_scenarios.Way("rabbitmq", rabbit_t, self.database, self.amqp_url))
            for key in outbox:
                self.rows[key].notes.append(OUTBOX_WAY)
                for way in ways:
                    runs = [await self.once(key, way.name, way, rep) for rep in range(self.mode.repetitions)]
                    setattr(self.rows[key], way.name, median_of(runs))

    async def run_metrics(self, ours_t: Target, rabbit_t: Target | None) -> None:
        """Once each: a scrape with N queues (bench/metrics_scenario.py)."""
        queues = METRICS_QUEUES[1] if self.args.quick else METRICS_QUEUES[0]
        row = self.rows["metrics"]
        row.ours = await guarded("metrics ours", lambda: metrics_scenario.ours(ours_t, queues))
        if rabbit_t is not None and self.amqp_url is not None:
            prometheus = self.args.rabbitmq_prometheus
            row.rabbitmq = await guarded(
                "metrics rabbitmq", lambda: metrics_scenario.rabbitmq(rabbit_t, self.amqp_url or "", prometheus, queues)
            )
        row.notes.append(f"{queues:,} queues, each with a consumer and a binding; RabbitMQ: /metrics/per-object")

    async def run_backlog(self, ours_t: Target, rabbit_t: Target | None) -> None:
        """`--repetitions` times (a million messages take minutes): ours, then RabbitMQ's lazy
        queue, in turn, so that the machine's drift over the minutes falls on both; each row
        is the median run."""
        targets = [("ours", ours_t)] + ([("rabbitmq", rabbit_t)] if rabbit_t is not None else [])
        runs: dict[tuple[str, str], list[Measurement]] = {}
        for _ in range(self.mode.repetitions):
            for slot, target in targets:
                try:
                    measured = await backlog_scenario.backlog(target, self.mode)
                except Exception as error:  # a failed run is a note, not the end of the benchmark
                    log(f"backlog {slot} failed: {error!r}")
                    measured = {key: Measurement(None, note=f"failed: {error!r}"[:200]) for key in BACKLOG_ROWS}
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(target.cleanup(), 30)
                for key, measurement in measured.items():
                    runs.setdefault((key, slot), []).append(measurement)
                log(f"backlog {slot}: " + ", ".join(
                    f"{k} {m.value:.0f}" + (f" ({m.cpu_per_1k * 1000:.1f} µs CPU/msg)" if m.cpu_per_1k is not None else "")
                    for k, m in measured.items() if m.value is not None
                ))
        for (key, slot), measurements in runs.items():
            setattr(self.rows[key], slot, median_of(measurements))
        note = "a durable queue; RabbitMQ's with x-queue-mode lazy; peak RSS over publish and drain"
        for key in BACKLOG_ROWS:
            self.rows[key].notes.append(note)

    async def run_tasks(self) -> None:
        """The task scenarios, on a database and a broker of their own (bench/task_scenarios.py)."""
        chosen = [s for s in self.args.scenarios if s in TASK_SCENARIOS]
        if not chosen:
            return
        if self.amqp_url is None:
            for key in chosen:
                self.rows[key].notes.append("Celery not run: RabbitMQ's AMQP is not reachable")
        database = Database(self.args.database_url)
        try:
            results = await asyncio.to_thread(
                task_scenarios.run, database, self.amqp_url, quick=self.args.quick, repetitions=self.mode.repetitions,
                scenarios=chosen,
            )
        finally:
            database.drop()
        for key, measured in results.items():
            self.rows[key].ours = measured.get("ours")
            self.rows[key].rabbitmq = measured.get("celery")
            if f"{key}_dtdb" in self.rows:
                self.rows[f"{key}_dtdb"].ours = measured.get("ours")
                self.rows[f"{key}_dtdb"].rabbitmq = measured.get("dtdb")
        note = "one worker process each; Celery -P solo, prefetch multiplier 64, results ignored; django-tasks-db's defaults"
        for key in chosen:
            self.rows[key].notes.append(note)

    async def once(self, key: str, slot: str, target: Target | outbox_scenarios.Way, rep: int) -> Measurement:
        way = target if isinstance(target, outbox_scenarios.Way) else None
        if way is not None:
            target = way.target
        assert isinstance(target, Target)
        try:
            if way is not None:
                return await self._outbox_once(key, way, rep)
            return await self._once(key, slot, target, rep)
        finally:
            # Also on Ctrl-C: RabbitMQ keeps durable queues, the benchmark must not leave them behind.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(target.cleanup(), 10)

    async def _outbox_once(self, key: str, way: outbox_scenarios.Way, rep: int) -> Measurement:
        """One run of an outbox scenario; with --profile, ours' first run records the broker
        and the Django publishers (<scenario>.txt, <scenario>.publisher-N.txt)."""
        profiler = self.profiler if way.is_ours and rep == 0 else None

        def started(publishers: list[psutil.Process]) -> None:
            if profiler is not None:
                peers = {f"publisher-{i}": p for i, p in enumerate(publishers)}
                profiler.start(key, dataclasses.replace(way.target, peers=peers))

        runner: dict[str, Callable[[], Awaitable[Measurement]]] = {
            "outbox_latency": lambda: outbox_scenarios.latency(way, self.mode, started),
            "outbox_publish": lambda: outbox_scenarios.throughput(way, self.mode, 1, started),
            "outbox_publish_many": lambda: outbox_scenarios.throughput(way, self.mode, 100, started),
        }
        result = await guarded(f"{key} {way.name} #{rep + 1}", runner[key])
        if profiler is not None:
            profiler.stop()
            result.note = (result.note + "; " if result.note else "") + "profiled (slower)"
        return result

    async def _once(self, key: str, slot: str, target: Target, rep: int) -> Measurement:
        label = f"{key} {slot} #{rep + 1}"
        profile = self.profiler is not None and slot in ("ours", "cluster") and rep == 0
        # A cluster's profiles: cluster.<scenario>.txt for the router, cluster.<scenario>.<edge>.txt.
        name = key if slot == "ours" else f"cluster.{key}"
        if key in ("publish", "consume"):
            async def fill_then_consume() -> Measurement:
                if profile and key == "publish":
                    self.profiler.start(name, target)  # type: ignore[union-attr]
                published, queue, stored = await ws_scenarios.publish(target, self.mode)
                if key == "publish":
                    return published
                if profile:
                    self.profiler.start(name, target)  # type: ignore[union-attr]
                return await ws_scenarios.consume(target, self.mode, queue, stored)

            result = await guarded(label, fill_then_consume)
        else:
            runner: dict[str, Callable[[], Awaitable[Measurement]]] = {
                "latency": lambda: ws_scenarios.latency(target, self.mode),
                "fanout": lambda: ws_scenarios.fanout(target, self.mode),
                "fanout_latency": lambda: ws_scenarios.fanout_latency(target, self.mode),
                "http": lambda: other_scenarios.http_publish(target, self.mode),
            }
            if profile:
                self.profiler.start(name, target)  # type: ignore[union-attr]
            result = await guarded(label, runner[key])
        if profile:
            self.profiler.stop()  # type: ignore[union-attr]
            result.note = (result.note + "; " if result.note else "") + "profiled (slower)"
        return result

    rabbit_info: RabbitInfo | None = None
    database: Database | None = None  # the broker's: the outbox scenarios' Django processes use it
    amqp_url: str | None = None  # RabbitMQ's AMQP, when it answers


async def amain(args: argparse.Namespace) -> int:
    bench = Bench(args)
    needs_servers = any(s != "recovery" for s in args.scenarios)
    database: Database | None = None
    broker: OurBroker | None = None
    ceiling_server: CeilingServer | None = None
    nodes: Cluster | None = None
    try:
        if needs_servers:
            database = Database(args.database_url)
            broker = OurBroker(database, server=args.server, name=args.server)
            broker.start()
            log(f"{args.server} pid {broker.proc.pid if broker.proc else '?'} on {broker.url} ({'PostgreSQL' if database.url else 'SQLite'}), up in {broker.startup_seconds:.2f} s; our clients speak {args.protocol}")
            ours_t = ours(broker.ws_url, broker.url, broker.ps, protocol=args.protocol)
            bench.database = database
            cluster_t: Target | None = None
            if bench.cluster_scenarios:
                nodes = Cluster(args.database_url, args.redis_url)
                nodes.start()
                log(nodes.describe())
                cluster_t = cluster(nodes.router, nodes.edge_a, nodes.edge_b, find_redis(args.redis_url), protocol=args.protocol)
            rabbit_t: Target | None = None
            if not args.no_rabbitmq:
                bench.rabbit_info = await probe_rabbitmq(args.rabbitmq_url, args.rabbitmq_management)
                if bench.rabbit_info.reachable:
                    rabbit_t = rabbitmq(args.rabbitmq_url, bench.rabbit_info.management, bench.rabbit_info.process)
                    log(f"RabbitMQ {bench.rabbit_info.version} Web-STOMP at {args.rabbitmq_url}, beam pid {bench.rabbit_info.process.pid if bench.rabbit_info.process else '?'}, management {'on' if bench.rabbit_info.management else 'off'}")
                else:
                    log(f"RabbitMQ Web-STOMP not reachable at {args.rabbitmq_url}: {bench.rabbit_info.reason}")
                if any(s in OUTBOX_SCENARIOS or s in TASK_SCENARIOS or s == "metrics" for s in args.scenarios):
                    problem = await asyncio.to_thread(probe_amqp, args.rabbitmq_amqp)
                    if problem is None:
                        bench.amqp_url = args.rabbitmq_amqp
                        log(f"RabbitMQ AMQP at {args.rabbitmq_amqp.split('@')[-1]} (on_commit publishers, tasks, metrics queues)")
                    else:
                        log(f"RabbitMQ AMQP not reachable at {args.rabbitmq_amqp.split('@')[-1]}: {problem}")
            ceilings: dict[str, Target] = {}
            if not args.no_ceiling and any(s in WS_SCENARIOS or s == "http" for s in args.scenarios):
                ceiling_server = CeilingServer()
                ceiling_server.start()
                ceilings["ceiling_ours"] = ceiling("ours", ceiling_server.ws_port, ceiling_server.http_port, ceiling_server.ps)
                ceilings["ceiling_rabbitmq"] = ceiling("stomp", ceiling_server.ws_port, ceiling_server.http_port, ceiling_server.ps)
            await bench.run(ours_t, rabbit_t, ceilings, cluster_t)
            await bench.run_tasks()
        else:
            await bench.run(None, None, {})  # type: ignore[arg-type]
    finally:
        if bench.profiler is not None:
            bench.profiler.stop()
        if ceiling_server is not None:
            ceiling_server.stop()
        if broker is not None:
            broker.stop()
        if database is not None:
            database.drop()
        if nodes is not None:
            nodes.stop()
    rows = list(bench.rows.values())
    print(table(rows, args.protocol))
    print(summary(rows, args.protocol), flush=True)
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C even when started in the background by a shell that ignores SIGINT there.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        import uvloop

        uvloop.install()  # the generator gets the same event loop as our broker
    except ImportError:  # pragma: no cover
        pass
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
