"""`runhandlers`' runner around a failed attempt (pubsub/worker/runner.py): an async
handler's own CancelledError is a failure like any other; the failure is recorded before
anything else happens, and when recording it fails (the database away), it is tried again,
and the handler is not run again meanwhile: that may have been its last attempt. An attempt
the database failed before is made again, as the same attempt. A stop while the queues are
declared opens no session."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from broker.engine.jsoncodec import loads
from pubsub.handling import Handler, Message, Retry
from pubsub.worker import execution, runner
from pubsub.worker.execution import Failed, Outcome
from pubsub.worker.runner import Runner


def _handler() -> Handler:
    return Handler(name="h", function=lambda m: None, queue="q", exchange=None, binding_key="", concurrency=1,
                   prefetch=10, retry=Retry(max_attempts=3), time_limit=None, is_async=False)


def _message(attempt: int) -> Message:
    return Message(body=1, headers={}, routing_key="q", exchange="", message_id="m1", published_at="",
                   queue="q", redelivered=attempt > 1, delivery_count=attempt)


_made: list[Runner] = []


def _runner(handler: Handler) -> Runner:
    made = Runner([handler], urls=["ws://127.0.0.1:1/ws"], token=lambda: "", grace=1.0)
    made._stopping = asyncio.Event()
    _made.append(made)
    return made


@pytest.fixture(autouse=True)
def _threads_stopped() -> Iterator[None]:
    """The runners' handler threads end with each test."""
    yield
    while _made:
        for executor in _made.pop()._executors.values():
            executor.shutdown(wait=False)


async def test_a_failure_that_cannot_be_recorded_is_recorded_again_not_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def settle(handler: Handler, message: Message, store_id: Any, error: str, exception: Any = None) -> Outcome:
        calls.append(message.delivery_count)
        if len(calls) < 3:
            raise OSError("the database is away")
        return Outcome.DEAD_LETTERED

    monkeypatch.setattr(execution, "settle_failure", settle)
    monkeypatch.setattr(runner, "SETTLE_RETRY_SECONDS", 0.01)
    handler = _handler()
    made = _runner(handler)

    outcome = await made._failed(handler, _message(3), 7, RuntimeError("boom"), 0.1, made._generation)

    # The last attempt's failure, recorded on the third try: dead-lettered, not a fourth attempt.
    assert outcome is Outcome.DEAD_LETTERED and calls == [3, 3, 3]


async def test_a_stop_ends_the_tries_and_leaves_the_message_to_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    def settle(*args: Any) -> Outcome:
        raise OSError("the database is away")

    monkeypatch.setattr(execution, "settle_failure", settle)
    monkeypatch.setattr(runner, "SETTLE_RETRY_SECONDS", 0.05)
    handler = _handler()
    made = _runner(handler)
    assert made._stopping is not None
    asyncio.get_running_loop().call_later(0.1, made._stopping.set)

    outcome = await made._failed(handler, _message(3), 7, RuntimeError("boom"), 0.1, made._generation)

    assert outcome is Outcome.NOT_STARTED  # not acknowledged: the broker hands it out again


async def test_a_lost_connection_ends_the_tries_too(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def settle(*args: Any) -> Outcome:
        calls.append(1)
        made._generation += 1  # the connection is lost while the database is away
        raise OSError("the database is away")

    monkeypatch.setattr(execution, "settle_failure", settle)
    monkeypatch.setattr(runner, "SETTLE_RETRY_SECONDS", 0.01)
    handler = _handler()
    made = _runner(handler)

    outcome = await made._failed(handler, _message(3), 7, RuntimeError("boom"), 0.1, made._generation)

    assert outcome is Outcome.NOT_STARTED and calls == [1]  # the broker hands it out again


class _Socket:
    """The broker's end of the connection: keeps the frames sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, frame: str) -> None:
        self.sent.append(loads(frame))


async def _settled_all(made: Runner) -> None:
    while made._tasks:
        await asyncio.wait_for(asyncio.gather(*made._tasks), timeout=5)


async def test_a_message_not_attempted_is_attempted_again_as_the_same_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database failed before its handler ran (execution.py: NOT_ATTEMPTED): the same
    attempt once it answers, neither counted nor acknowledged meanwhile."""
    attempts: list[int] = []

    async def attempt(handler: Handler, message: Message, store_id: Any, generation: int) -> Outcome:
        attempts.append(message.delivery_count)
        return Outcome.NOT_ATTEMPTED if len(attempts) < 2 else Outcome.HANDLED

    monkeypatch.setattr(runner, "SETTLE_RETRY_SECONDS", 0.01)
    handler = _handler()
    made = _runner(handler)
    monkeypatch.setattr(made, "_attempt", attempt)
    made._ws = socket = _Socket()  # type: ignore[assignment]

    made._settled(handler, {"delivery_tag": 5, "store_id": 7}, socket, made._generation, _message(1),
                  Outcome.NOT_ATTEMPTED)
    await _settled_all(made)

    assert attempts == [1, 1] and made.counts["h"] == Counter({"handled": 1})
    assert socket.sent == [{"type": "ack", "delivery_tags": [5]}]


async def test_a_stop_while_the_database_is_away_leaves_the_message_to_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    async def attempt(handler: Handler, message: Message, store_id: Any, generation: int) -> Outcome:
        return Outcome.NOT_ATTEMPTED

    monkeypatch.setattr(runner, "SETTLE_RETRY_SECONDS", 0.01)
    handler = _handler()
    made = _runner(handler)
    monkeypatch.setattr(made, "_attempt", attempt)
    made._ws = socket = _Socket()  # type: ignore[assignment]
    assert made._stopping is not None
    asyncio.get_running_loop().call_later(0.1, made._stopping.set)

    made._settled(handler, {"delivery_tag": 5, "store_id": 7}, socket, made._generation, _message(1),
                  Outcome.NOT_ATTEMPTED)
    await _settled_all(made)

    assert socket.sent == [] and not made.counts["h"]  # the broker hands it out again


async def test_an_async_handler_s_own_cancellation_is_a_failure_not_the_end_of_its_message() -> None:
    async def cancelled_inside(message: Message) -> None:
        inner = asyncio.ensure_future(asyncio.sleep(10))
        asyncio.get_running_loop().call_soon(inner.cancel)
        await inner  # raises CancelledError: the handler's own, not the runner's

    handler = Handler(name="a", function=cancelled_inside, queue="q", exchange=None, binding_key="", concurrency=1,
                      prefetch=10, retry=Retry(), time_limit=None, is_async=True)
    made = _runner(handler)

    outcome = await made._run_async(handler, _message(1), None, time.monotonic())

    assert isinstance(outcome, Failed) and isinstance(outcome.error, asyncio.CancelledError)


async def test_an_async_handler_cancelled_by_the_runner_stops() -> None:
    started = asyncio.Event()

    async def slow(message: Message) -> None:
        started.set()
        await asyncio.sleep(10)

    handler = Handler(name="a", function=slow, queue="q", exchange=None, binding_key="", concurrency=1,
                      prefetch=10, retry=Retry(), time_limit=None, is_async=True)
    made = _runner(handler)
    attempt = asyncio.ensure_future(made._run_async(handler, _message(1), None, time.monotonic()))
    await started.wait()
    attempt.cancel()

    with pytest.raises(asyncio.CancelledError):
        await attempt


async def test_an_async_handler_s_sys_exit_fails_its_message_and_the_process_goes_on() -> None:
    async def exits(message: Message) -> None:
        await asyncio.sleep(0)
        raise SystemExit(3)

    handler = Handler(name="a", function=exits, queue="q", exchange=None, binding_key="", concurrency=1,
                      prefetch=10, retry=Retry(), time_limit=5.0, is_async=True)
    made = _runner(handler)

    outcome = await made._run_async(handler, _message(1), None, time.monotonic())

    assert isinstance(outcome, Failed) and isinstance(outcome.error, SystemExit)


class _Custom(BaseException):
    pass


@pytest.mark.parametrize("raised", [KeyboardInterrupt(), _Custom()], ids=["keyboard-interrupt", "custom"])
async def test_an_async_handler_s_base_exception_fails_its_message_and_the_process_goes_on(raised: BaseException) -> None:
    """As a sync handler's does (execution.HANDLER_FAILURES). Let through, it ended the task
    that settles the message (never acknowledged, retried or dead-lettered, its prefetch place
    held), and a KeyboardInterrupt stopped the loop."""
    async def raises(message: Message) -> None:
        await asyncio.sleep(0)
        raise raised

    handler = Handler(name="a", function=raises, queue="q", exchange=None, binding_key="", concurrency=1,
                      prefetch=10, retry=Retry(), time_limit=5.0, is_async=True)
    made = _runner(handler)

    outcome = await made._run_async(handler, _message(1), None, time.monotonic())

    assert isinstance(outcome, Failed) and outcome.error is raised


async def test_an_async_handler_over_its_time_limit_fails() -> None:
    async def slow(message: Message) -> None:
        await asyncio.sleep(10)

    handler = Handler(name="a", function=slow, queue="q", exchange=None, binding_key="", concurrency=1,
                      prefetch=10, retry=Retry(), time_limit=0.05, is_async=True)
    made = _runner(handler)

    outcome = await made._run_async(handler, _message(1), None, time.monotonic())

    assert isinstance(outcome, Failed) and isinstance(outcome.error, TimeoutError)


async def test_a_stop_that_comes_as_an_async_handler_returns_is_not_lost() -> None:
    """The runner's cancel in the very turn the handler is woken to return: the attempt
    stops (Python 3.11's wait_for, with a time limit, swallowed that cancel)."""
    wake = asyncio.Event()
    started = asyncio.Event()

    async def waits(message: Message) -> None:
        started.set()
        await wake.wait()

    handler = Handler(name="a", function=waits, queue="q", exchange=None, binding_key="", concurrency=1,
                      prefetch=10, retry=Retry(), time_limit=30.0, is_async=True)
    made = _runner(handler)
    attempt = asyncio.ensure_future(made._run_async(handler, _message(1), None, time.monotonic()))
    await started.wait()
    await asyncio.sleep(0)
    wake.set()
    attempt.cancel()

    with pytest.raises(asyncio.CancelledError):
        await attempt


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


@pytest.mark.parametrize(("error", "text"), [
    (_Unprintable(), "_Unprintable: <its str() failed: RuntimeError>"),
    (ValueError("a \x00 byte"), "ValueError: a \\x00 byte"),
    # A name decoded with surrogateescape: b"caf\xe9" read as UTF-8.
    (FileNotFoundError(b"caf\xe9".decode("utf-8", "surrogateescape")), "FileNotFoundError: caf\\udce9"),
    (ValueError("é ✓"), "ValueError: é ✓"),
], ids=["unprintable", "nul", "lone-surrogate", "unicode"])  # no surrogate in an id: xdist cannot send it
async def test_a_failure_is_recorded_whatever_its_exception_says(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: BaseException, text: str
) -> None:
    """Its str() failing left the message neither retried nor acknowledged; U+0000 in it
    could not be recorded on PostgreSQL, nor be put in a dead letter's headers."""
    # The failure's log line carries its traceback, the surrogate with it: pytest-xdist cannot
    # send a test report that holds one (the log goes to stderr, which writes it escaped).
    caplog.set_level(logging.ERROR, logger="pubsub.handlers")
    recorded: list[str] = []

    def settle(handler: Handler, message: Message, store_id: Any, error: str, exception: Any = None) -> Outcome:
        recorded.append(error)
        return Outcome.RETRY

    monkeypatch.setattr(execution, "settle_failure", settle)
    handler = _handler()
    made = _runner(handler)

    outcome = await made._failed(handler, _message(1), 7, error, 0.1, made._generation)

    assert outcome is Outcome.RETRY and recorded == [text]


async def test_a_stop_while_the_queues_are_declared_opens_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subscribed all the same, the process was handed messages only to give them back as it
    closed, each given-back copy one step nearer to being a suspect."""
    made = _runner(_handler())
    assert made._stopping is not None
    stopping = made._stopping
    sessions: list[str] = []

    def declare_all(base: str) -> None:
        stopping.set()  # SIGTERM comes meanwhile

    async def session(url: str) -> None:
        sessions.append(url)

    monkeypatch.setattr(made, "_declare_all", declare_all)
    monkeypatch.setattr(made, "_session", session)

    await asyncio.wait_for(made._connect_forever(), timeout=5)

    assert sessions == []
