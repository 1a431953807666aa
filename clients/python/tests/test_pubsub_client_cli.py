"""The `pubsub` command end to end: subprocesses against the real broker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import unique

from tests.e2e.harness import BrokerProcess

pytestmark = pytest.mark.e2e

SCRIPT = Path(sys.executable).with_name("pubsub")  # the console script the package installs


def command(*args: str) -> list[str]:
    if SCRIPT.exists():
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "pubsub_client", *args]


def pubsub(broker: BrokerProcess, *args: str, stdin: str | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PUBSUB_URL": broker.url}  # the environment default for --url
    return subprocess.run(command(*args), input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


def test_declare_bind_publish_from_stdin_consume_with_acks_and_list(broker: BrokerProcess) -> None:
    exchange, queue = unique("orders"), unique("eu")
    assert pubsub(broker, "declare", "exchange", exchange, "--type", "topic").returncode == 0
    declared = pubsub(broker, "declare", "queue", queue, "--no-durable")
    assert declared.returncode == 0, declared.stderr
    assert json.loads(declared.stdout)["durable"] is False
    bound = pubsub(broker, "bind", exchange, queue, "--key", "orders.eu.*")
    assert json.loads(bound.stdout)["binding_key"] == "orders.eu.*"

    lines = [json.dumps({"n": n}) for n in range(200)] + ["plain text", '"a json string"', ""]
    published = pubsub(broker, "publish", exchange, "--key", "orders.eu.created", "--window", "32",
                       stdin="\n".join(lines) + "\n")
    assert published.returncode == 0, published.stderr
    assert "published 202 messages" in published.stderr
    single = pubsub(broker, "publish", exchange, "--key", "orders.us.created", '{"unrouted": true}')
    assert single.returncode == 0 and json.loads(single.stdout)["routed"] == 0

    table = pubsub(broker, "queues")
    assert table.returncode == 0
    [row] = [line.split() for line in table.stdout.splitlines() if line.startswith(queue)]
    assert row[1:5] == ["202", "202", "0", "0"]  # messages ready unacked consumers
    exchanges = pubsub(broker, "exchanges")
    [ex_row] = [line.split() for line in exchanges.stdout.splitlines() if line.startswith(exchange)]
    assert ex_row == [exchange, "topic", "yes", "1"]

    consumed = pubsub(broker, "consume", queue, "--count", "202", "--prefetch", "50")
    assert consumed.returncode == 0, consumed.stderr
    messages = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert [m["body"] for m in messages] == [{"n": n} for n in range(200)] + ["plain text", "a json string"]
    assert all(m["routing_key"] == "orders.eu.created" for m in messages)

    # Each was acknowledged after printing: the queue is empty, nothing comes back.
    after = json.loads(pubsub(broker, "queues", "--json").stdout)
    assert [(q["messages"], q["consumers"]) for q in after if q["name"] == queue] == [(0, 0)]
    again = pubsub(broker, "consume", queue, "--timeout", "0.3")
    assert (again.returncode, again.stdout) == (0, "")


def test_tail_prints_an_exchange_s_messages(broker: BrokerProcess) -> None:
    exchange = unique("news")
    assert pubsub(broker, "declare", "exchange", exchange, "--type", "topic").returncode == 0
    env = {**os.environ, "PUBSUB_URL": broker.url}
    tail = subprocess.Popen(command("tail", exchange, "--key", "sports.#", "--count", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert tail.stderr is not None
        notice = tail.stderr.readline()  # printed once subscribed
        assert "tailing" in notice and "amq.gen-" in notice, notice
        for body in ('{"goal": 1}', '"rain"', '{"goal": 2}'):
            key = "weather.today" if body == '"rain"' else "sports.football"
            assert pubsub(broker, "publish", exchange, "--key", key, body).returncode == 0
        out, err = tail.communicate(timeout=15)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    assert [json.loads(line)["body"] for line in out.splitlines()] == [{"goal": 1}, {"goal": 2}]


def test_exit_codes_broker_errors_and_usage(broker: BrokerProcess) -> None:
    missing = pubsub(broker, "consume", unique("absent"), "--count", "1")
    assert missing.returncode == 1
    assert "not_found" in missing.stderr
    refused = pubsub(broker, "declare", "queue", "amq.reserved")
    assert refused.returncode == 1 and "forbidden" in refused.stderr
    unknown_exchange = pubsub(broker, "publish", unique("nowhere"), "body")
    assert unknown_exchange.returncode == 1 and "not_found" in unknown_exchange.stderr

    assert pubsub(broker, "declare", "exchange", "x", "--type", "nonsense").returncode == 2
    assert pubsub(broker, "frobnicate").returncode == 2
    assert pubsub(broker, "publish", "x", "b", "--header", "no-equals-sign").returncode == 2

    unreachable = pubsub(broker, "queues", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


def test_version_is_the_installed_package_s() -> None:
    import pubsub_client

    installed = metadata.version("pubsub-client")  # clients/python/pyproject.toml's `version`
    assert pubsub_client.__version__ == installed
    shown = subprocess.run(command("--version"), capture_output=True, text=True, timeout=20)
    assert (shown.returncode, shown.stdout.strip()) == (0, f"pubsub {installed}")
