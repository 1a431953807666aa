"""The `pubsub` command: declare, bind, publish, consume/tail and list, from a shell.

Exit status: 0 done, 1 the broker refused or could not be reached (the code
and message go to stderr), 2 bad usage, 141 stdout was closed (`| head`): the
status of a command that SIGPIPE ended, quietly. Messages go to stdout as JSON
lines; progress and notices go to stderr, so pipelines see only data.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, Final, TextIO

from . import __version__
from .client import DEFAULT_URL, Client, split_url
from .errors import BrokerError, PubSubError
from .models import Event, EventKind, PublishResult

EXIT_OK: Final = 0
EXIT_BROKER: Final = 1
EXIT_USAGE: Final = 2
# The reader of stdout went away (`pubsub queues | head -3`): what a shell shows for a
# command that SIGPIPE ended (128 + 13), so `set -o pipefail` still tells a cut-short run.
EXIT_PIPE: Final = 141
PROGRESS_AFTER: Final = 2.0  # seconds before a publish run starts reporting progress
PROGRESS_EVERY: Final = 1.0


class BodyError(ValueError):
    """A body (or header value) that reads as a number JSON cannot carry: bad usage."""


def parse_body(text: str) -> Any:
    """JSON when the text parses as JSON, else the text itself as a string.

    `NaN`, `Infinity` and numbers too large for a float (`1e999`) are refused with
    `BodyError`: Python reads them, but they are not JSON, and sending the text as a
    string instead would publish something other than what was meant."""
    try:
        return json.loads(text, parse_constant=_not_a_number, parse_float=_finite_float)
    except BodyError:
        if not _python_reads(text):
            return text  # `NaN or not`: text that only starts like such a number
        raise
    except ValueError:
        return text


def _python_reads(text: str) -> bool:
    """Does Python's `json` read the whole text (taking NaN and infinities)?"""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _not_a_number(name: str) -> Any:
    raise BodyError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"{text} is too large for a JSON number")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    # --url and --token are accepted before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    # The default is SUPPRESS (the main parser's stays), so the help names it outright.
    common.add_argument("--url", default=argparse.SUPPRESS, help=f"broker URL (env PUBSUB_URL; default {DEFAULT_URL})")
    common.add_argument("--token", default=argparse.SUPPRESS, help="bearer token (env PUBSUB_TOKEN)")

    parser = argparse.ArgumentParser(prog="pubsub", description="Talk to a django-pubsub-broker.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--url", default=os.environ.get("PUBSUB_URL") or DEFAULT_URL,
                        help=f"broker URL (env PUBSUB_URL; default {DEFAULT_URL})")
    parser.add_argument("--token", default=os.environ.get("PUBSUB_TOKEN") or None,
                        help="bearer token (env PUBSUB_TOKEN)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    declare = commands.add_parser("declare", parents=[common], help="declare an exchange or a queue")
    kinds = declare.add_subparsers(dest="kind", required=True, metavar="KIND")
    exchange = kinds.add_parser("exchange", parents=[common], help="declare an exchange")
    exchange.add_argument("name")
    exchange.add_argument("--type", default="direct", choices=["direct", "fanout", "topic", "headers", "x-delayed-message"])
    queue = kinds.add_parser("queue", parents=[common], help="declare a queue ('' for a generated name)")
    queue.add_argument("name")
    for sub in (exchange, queue):
        sub.add_argument("--durable", action=argparse.BooleanOptionalAction, default=True)
        sub.add_argument("--auto-delete", action="store_true")
        sub.add_argument("--arguments", type=_json_object, default=None, metavar="JSON",
                         help='e.g. \'{"max_length": 1000}\'')

    bind = commands.add_parser("bind", parents=[common], help="bind a queue to an exchange")
    bind.add_argument("exchange")
    bind.add_argument("queue")
    bind.add_argument("--key", default="", help="binding key")
    bind.add_argument("--arguments", type=_json_object, default=None, metavar="JSON")

    delete = commands.add_parser("delete", parents=[common], help="delete an exchange or a queue")
    delete.add_argument("kind", choices=["exchange", "queue"])
    delete.add_argument("name")

    purge = commands.add_parser("purge", parents=[common], help="drop a queue's ready messages")
    purge.add_argument("queue")

    publish = commands.add_parser("publish", parents=[common],
                                  help="publish BODY, or each line of stdin, and wait for confirms")
    publish.add_argument("exchange", help="exchange name ('' for the default exchange)")
    publish.add_argument("body", nargs="?", help="JSON if it parses, else a string; omitted: stdin, one per line")
    publish.add_argument("--key", default="", help="routing key")
    publish.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                         help="a header (VALUE as JSON if it parses); repeatable")
    publish.add_argument("--transient", action="store_true", help="persistent: false")
    publish.add_argument("--window", type=int, default=256, help="unconfirmed publishes at a time (default 256)")

    for name, help_text in (("consume", "print a queue's messages as JSON lines, acking each after printing"),
                            ("tail", "print an exchange's messages (private queue) as JSON lines")):
        command = commands.add_parser(name, parents=[common], help=help_text)
        if name == "consume":
            command.add_argument("queue")
        else:
            command.add_argument("exchange")
            command.add_argument("--key", default="", help="binding key")
        command.add_argument("--count", type=int, default=0, help="stop after N messages")
        command.add_argument("--timeout", type=float, default=None, help="stop after SECONDS without a message")
        command.add_argument("--prefetch", type=int, default=100)
        command.add_argument("--no-ack", action="store_true", help="auto acknowledgement mode")

    get = commands.add_parser("get", parents=[common], help="take messages over HTTP")
    get.add_argument("queue")
    get.add_argument("--count", type=int, default=1)
    get.add_argument("--requeue", action="store_true", help="leave them in the queue (ack: false)")

    commands.add_parser("queues", parents=[common], help="list queues with live counts")
    commands.add_parser("exchanges", parents=[common], help="list exchanges")
    for sub in (commands.choices["queues"], commands.choices["exchanges"]):
        sub.add_argument("--json", action="store_true", help="JSON instead of a table")
    return parser


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned text columns, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [bool(rows) and all(isinstance(row[i], int) and not isinstance(row[i], bool) for row in rows)
               for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [cell.rjust(w) if numeric[i] else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _print_json(value: Any, out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(value, ensure_ascii=False) + "\n")
    out.flush()


def _notice(text: str) -> None:
    sys.stderr.write(f"pubsub: {text}\n")
    sys.stderr.flush()


def _on_event(event: Event) -> None:
    messages = {
        EventKind.DISCONNECTED: "connection lost; reconnecting",
        EventKind.RECONNECTED: f"reconnected (attempt {event.attempt})",
        EventKind.RESUBSCRIBED: f"resubscribed {event.count}",
        EventKind.REPUBLISHED: f"re-sent {event.count} unconfirmed messages",
        EventKind.GAVE_UP: f"gave up: {event.error}",
        EventKind.ERROR: f"broker error: {event.error}",
    }
    if event.kind in messages:
        _notice(messages[event.kind])


def _asdict(value: Any) -> Any:
    data = dataclasses.asdict(value)
    return {k: v for k, v in data.items() if v is not None}


async def run(args: argparse.Namespace) -> int:
    async with Client(args.url, token=args.token, on_event=_on_event) as client:
        match args.command:
            case "declare" if args.kind == "exchange":
                exchange = await client.declare_exchange(
                    args.name, args.type, durable=args.durable, auto_delete=args.auto_delete, arguments=args.arguments
                )
                _print_json(_asdict(exchange))
            case "declare":
                queue = await client.declare_queue(
                    args.name, durable=args.durable, auto_delete=args.auto_delete, arguments=args.arguments
                )
                _print_json(_asdict(queue))
            case "bind":
                _print_json(_asdict(await client.bind(args.exchange, args.queue, args.key, arguments=args.arguments)))
            case "delete":
                if args.kind == "exchange":
                    await client.delete_exchange(args.name)
                else:
                    await client.delete_queue(args.name)
            case "purge":
                _print_json({"purged": await client.purge_queue(args.queue)})
            case "publish":
                return await publish(client, args)
            case "consume" | "tail":
                return await consume(client, args)
            case "get":
                for message in await client.get(args.queue, count=args.count, ack=not args.requeue):
                    _print_json(message.to_json())
            case "queues":
                queues = await client.queues()
                if args.json:
                    _print_json([_asdict(q) for q in queues])
                else:
                    print(table(
                        ["name", "messages", "ready", "unacked", "consumers", "durable"],
                        [[q.name, q.messages, q.messages_ready, q.messages_unacknowledged, q.consumers,
                          "yes" if q.durable else "no"] for q in queues],
                    ))
            case "exchanges":
                exchanges = await client.exchanges()
                bindings = await client.bindings()
                if args.json:
                    _print_json([_asdict(e) for e in exchanges])
                else:
                    counts: dict[str, int] = {}
                    for binding in bindings:
                        counts[binding.exchange] = counts.get(binding.exchange, 0) + 1
                    print(table(
                        ["name", "type", "durable", "bindings"],
                        [[e.name, e.type, "yes" if e.durable else "no", counts.get(e.name, 0)] for e in exchanges],
                    ))
    return EXIT_OK


def _headers(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            parser.error(f"--header {pair!r}: expected NAME=VALUE")
        try:
            headers[name] = parse_body(value)
        except BodyError as error:
            parser.error(f"--header {name}: {error}")
    return headers


class _Progress:
    """Counts on stderr once a run has lasted PROGRESS_AFTER seconds, then every PROGRESS_EVERY."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = self.started + PROGRESS_AFTER - PROGRESS_EVERY
        self.shown = False
        self.tty = sys.stderr.isatty()

    def update(self, sent: int, confirmed: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_EVERY:
            return
        if final and not self.shown:
            return
        self.last = now
        self.shown = True
        rate = confirmed / max(now - self.started, 1e-9)
        line = f"pubsub: {confirmed} confirmed of {sent} sent ({rate:,.0f} msg/s)"
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


async def publish(client: Client, args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"routing_key": args.key, "headers": args.headers, "persistent": not args.transient}
    if args.body is not None:
        result = await client.publish(args.exchange, args.parsed_body, **options)
        _print_json({"message_id": result.message_id, "routed": result.routed})
        if result.routed == 0:
            _notice("the message reached no queue (routed 0)")
        return EXIT_OK

    window = asyncio.Semaphore(args.window)
    in_flight: set[asyncio.Task[PublishResult]] = set()
    failures: list[BaseException] = []
    sent = confirmed = unrouted = 0
    progress = _Progress()
    number = 0

    def done(task: asyncio.Task[PublishResult]) -> None:
        nonlocal confirmed, unrouted
        in_flight.discard(task)
        window.release()
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            failures.append(error)
            return
        confirmed += 1
        if task.result().routed == 0:
            unrouted += 1

    while not failures:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        number += 1
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            body = parse_body(text)
        except BodyError as error:
            failures.append(BodyError(f"line {number} of stdin: {error}; nothing after it was published"))
            break
        await window.acquire()
        task = asyncio.create_task(client.publish(args.exchange, body, **options))
        task.add_done_callback(done)
        in_flight.add(task)
        sent += 1
        progress.update(sent, confirmed)
    while in_flight:
        await asyncio.wait(set(in_flight), timeout=PROGRESS_EVERY)
        progress.update(sent, confirmed)
    progress.update(sent, confirmed, final=True)
    if failures:
        raise failures[0]
    plural = "" if confirmed == 1 else "s"
    _notice(f"published {confirmed} message{plural}" + (f", {unrouted} reached no queue" if unrouted else ""))
    return EXIT_OK


async def consume(client: Client, args: argparse.Namespace) -> int:
    ack = "auto" if args.no_ack else "client"
    # No more in flight than will be printed: the rest would come back marked redelivered.
    prefetch = min(args.prefetch, args.count) if args.count else args.prefetch
    if args.command == "consume":
        subscription = await client.subscribe(args.queue, ack=ack, prefetch=prefetch)
        _notice(f"consuming {args.queue}")
    else:
        subscription = await client.subscribe(exchange=args.exchange, binding_key=args.key, ack=ack,
                                              prefetch=prefetch)
        _notice(f"tailing {args.exchange or 'amq.default'} ({args.key!r}) through {subscription.queue}")
    received = 0
    try:
        while not args.count or received < args.count:
            message = await subscription.next(args.timeout)
            if message is None:
                break
            _print_json(message.to_json())
            await message.ack()  # after printing: a crash in between means a redelivery, never a loss
            received += 1
    finally:
        await subscription.cancel()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            status = _main(argv)
        finally:
            # Here, not at exit: a closed stdout is then handled below, not printed by Python.
            sys.stdout.flush()
    except BrokenPipeError:
        return _stdout_closed()
    return status


def _stdout_closed() -> int:
    """Stdout's reader went away: exit quietly. Stdout goes to /dev/null so that Python's
    own flush at exit does not fail once more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # not a file (stdout replaced): nothing is flushed to it at exit
    return EXIT_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse matches `publish EXCHANGE [BODY]` in one go, so a BODY after the
        # options (`publish orders --key k BODY`) arrives here.
        if args.command == "publish" and args.body is None and len(extra) == 1:
            args.body = extra[0]
        else:
            parser.error("unrecognized arguments: " + " ".join(extra))
    try:
        split_url(args.url)
    except ValueError as error:
        parser.error(str(error))
    if args.command == "publish":
        args.headers = _headers(parser, args.header)
        try:
            args.parsed_body = None if args.body is None else parse_body(args.body)
        except BodyError as error:
            parser.error(f"BODY: {error}")
        if args.window < 1:
            parser.error("--window must be at least 1")
    try:
        return asyncio.run(run(args))
    except BodyError as error:
        sys.stderr.write(f"pubsub: error: {error}\n")
        return EXIT_USAGE
    except BrokerError as error:
        sys.stderr.write(f"pubsub: error: {error.code}: {error.message}\n")
        for field, problems in error.fields.items():
            sys.stderr.write(f"  {field}: {problems}\n")
        return EXIT_BROKER
    except PubSubError as error:
        sys.stderr.write(f"pubsub: error: {error}\n")
        return EXIT_BROKER
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
