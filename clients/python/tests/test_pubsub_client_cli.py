"""The `pubsub` command end to end: subprocesses against the real broker process."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from conftest import unique
from websockets.asyncio.server import ServerConnection, serve

from pubsub_client.cli import EXIT_PIPE, EXIT_USAGE, BodyError, build_parser, main, parse_body
from pubsub_client.client import DEFAULT_URL
from tests.e2e.harness import BrokerProcess, free_port

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


def test_a_closed_stdout_ends_the_command_quietly(broker: BrokerProcess) -> None:
    """`pubsub exchanges | head -1`: the reader is gone before the table is written."""
    env = {**os.environ, "PUBSUB_URL": broker.url}
    for args in (("exchanges",), ("queues", "--json")):
        listing = subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert listing.stdout is not None and listing.stderr is not None
        listing.stdout.close()
        try:
            err = listing.stderr.read().decode()
            listing.wait(timeout=20)
        finally:
            if listing.poll() is None:
                listing.kill()
                listing.wait()
        assert (listing.returncode, err) == (EXIT_PIPE, ""), args


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command of the parser, as the words that name it."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*path, name))
                found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(build_parser())


def test_every_command_is_listed() -> None:
    assert {"declare", "bind", "delete", "purge", "publish", "consume", "tail", "get", "queues", "exchanges",
            "declare exchange", "declare queue"} <= {" ".join(words) for words in COMMANDS}


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_the_help_of_every_command(words: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: pubsub {' '.join(words)}")
    assert f"(env PUBSUB_URL; default {DEFAULT_URL})" in " ".join(shown.split())


# -- bodies that are not JSON numbers (no broker: refused before anything is sent) -------


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999", '{"n": -1e999}', "[NaN]"])
def test_a_body_of_a_number_json_cannot_carry_is_refused(text: str) -> None:
    """Python's `json` reads these as floats, which are not JSON: sent, the broker would
    refuse the frame, and the publish would wait for ever."""
    with pytest.raises(BodyError):
        parse_body(text)


def test_bodies_that_are_json_or_text_are_kept() -> None:
    assert parse_body('{"n": 1.5}') == {"n": 1.5}
    assert parse_body("NaN or not") == "NaN or not"
    assert parse_body("[1e999, 2") == "[1e999, 2"
    assert parse_body("1e308") == 1e308


def test_a_body_argument_of_nan_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--url", "http://127.0.0.1:9", "publish", "x", "NaN"])
    assert exited.value.code == EXIT_USAGE
    assert "NaN is not a JSON number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["--url", "http://127.0.0.1:9", "publish", "x", "b", "--header", "n=1e999"])
    assert exited.value.code == EXIT_USAGE


async def test_a_stdin_line_of_nan_stops_the_run_as_bad_usage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lines before it are published; it and those after it are not."""
    bodies: list[Any] = []

    def strict(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")  # as the broker reads frames

    async def handler(connection: ServerConnection) -> None:
        async for text in connection:
            try:
                frame = json.loads(text, parse_constant=strict)
            except ValueError:
                await connection.send(json.dumps({"type": "error", "id": None, "code": "invalid", "message": "not JSON"}))
                continue
            if frame.get("type") == "publish":
                bodies.append(frame["body"])
                await connection.send(json.dumps({"type": "confirm", "id": frame["id"],
                                                  "message_id": frame["message_id"], "routed": 1}))

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"n": 1}\nNaN\n{"n": 2}\n'))
    port = free_port()
    async with serve(handler, "127.0.0.1", port):
        status = await asyncio.wait_for(
            asyncio.to_thread(main, ["--url", f"http://127.0.0.1:{port}", "publish", "x"]), 20
        )
    assert status == EXIT_USAGE
    assert "line 2 of stdin: NaN is not a JSON number" in capsys.readouterr().err
    assert bodies == [{"n": 1}]
