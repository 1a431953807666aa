"""A Django process of the project that publishes: `python -m bench.outbox_worker CONFIG`.

Started by bench/outbox_scenarios.py with the broker's own database settings
(DATABASE_URL or DATABASE_NAME, as `runbroker` got them). Each transaction
inserts a row into `bench_order` (the business write that makes the commit
real) and publishes `per_tx` messages, one of two ways:

- `ours`: `pubsub.publish` (or `publish_many`) inside the transaction: rows of
  the outbox table, routed by the running router once committed;
- `rabbitmq`: `transaction.on_commit` then pika's BlockingConnection with
  publisher confirms (`confirm_delivery()`), each `basic_publish` waiting for
  its confirm, to RabbitMQ's default exchange: the usual way.

Protocol on stdin/stdout: it prints `ready` once set up, reads `go T` (T a
`time.perf_counter()` value: CLOCK_MONOTONIC on Linux, the same clock in every
process), works until T + warmup + duration, writes its result as JSON to the
file `result` names and prints `done`. The result holds the messages done (committed, and confirmed for RabbitMQ) inside the window
[T + warmup, T + warmup + duration), the total committed, the last commit's
time, its own CPU seconds inside the window, the time its transactions took
from `BEGIN` to the end of their commit (on SQLite the write lock is held
meanwhile) and, when paced (`rate`), the time taken just before each commit
inside the window, by sequence number.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

PAD = "x" * 56
ORDERS_TABLE = "bench_order"


def body(seq: int) -> dict[str, Any]:
    """~90 bytes of JSON, as the other scenarios' bodies."""
    return {"seq": seq, "kind": "bench", "pad": PAD}


def _publisher(config: dict[str, Any]) -> Callable[[list[dict[str, Any]]], None]:
    """The call made inside the transaction, for the messages of one transaction."""
    from django.db import transaction

    queue: str = config["queue"]
    if config["way"] == "ours":
        from pubsub import OutboxMessage, publish, publish_many

        def ours(bodies: list[dict[str, Any]]) -> None:
            if len(bodies) == 1:
                publish("", bodies[0], routing_key=queue)
            else:
                publish_many([OutboxMessage("", b, queue) for b in bodies])

        return ours

    import pika

    connection = pika.BlockingConnection(pika.URLParameters(config["amqp_url"]))
    channel = connection.channel()
    channel.confirm_delivery()  # basic_publish now returns once RabbitMQ confirmed (raises if nacked)
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")

    def theirs(bodies: list[dict[str, Any]]) -> None:
        def send() -> None:
            for b in bodies:
                channel.basic_publish("", queue, orjson.dumps(b), properties)

        transaction.on_commit(send)

    return theirs


def run(config: dict[str, Any]) -> dict[str, Any]:
    from django.db import connection, transaction

    publish = _publisher(config)
    per_tx: int = config["per_tx"]
    rate: float | None = config.get("rate")
    phase = float(config.get("phase", 0.0))  # paced processes take turns: 0, 1/total rate, ...
    seq = int(config.get("first_seq", 0))
    insert = f"INSERT INTO {ORDERS_TABLE} (ref, amount) VALUES (%s, %s)"
    with transaction.atomic(), connection.cursor() as cursor:  # connect, and warm the statement
        cursor.execute(insert, ["warm-up", 0])
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if not line or line[0] != "go":
        raise SystemExit(f"expected 'go T', got {line!r}")
    start = float(line[1])
    window_start = start + float(config["warmup"])
    window_end = window_start + float(config["duration"])
    clock = time.perf_counter
    while clock() < start:
        time.sleep(0.0005)
    done = total = transactions = 0
    cpu0: float | None = None
    last_commit = committed = 0.0
    in_transactions = 0.0  # inside the window, BEGIN to the end of the commit

    def mark_committed() -> None:  # the first on_commit callback: before RabbitMQ's publish
        nonlocal committed
        committed = clock()
    before_commit: dict[int, float] = {}
    while True:
        now = clock()
        if now >= window_end:
            break
        if rate is not None:
            due = start + phase + transactions / rate
            if now < due:
                time.sleep(due - now)
        bodies = [body(seq + i) for i in range(per_tx)]
        began = clock()
        with transaction.atomic(), connection.cursor() as cursor:
            transaction.on_commit(mark_committed)
            cursor.execute(insert, [f"order-{seq}", seq % 1000])
            publish(bodies)
            t = clock()  # just before the commit (and, for RabbitMQ, the on_commit publish)
        last_commit = clock()
        if rate is not None and window_start <= t < window_end:
            before_commit[seq] = t
        if window_start <= last_commit < window_end:
            if cpu0 is None:
                cpu0 = time.process_time()
            done += per_tx
            in_transactions += committed - began
        seq += per_tx
        total += per_tx
        transactions += 1
    cpu = time.process_time() - cpu0 if cpu0 is not None else None
    return {
        "done": done,
        "total": total,
        "transactions": transactions,
        "last_commit": last_commit,
        "cpu": cpu,
        "in_transactions": in_transactions,
        "before_commit": before_commit,
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "broker_project.settings")
    import django

    django.setup()
    result = run(config)
    with open(config["result"], "w") as out:
        json.dump(result, out)
    print("done", flush=True)


if __name__ == "__main__":
    main()
