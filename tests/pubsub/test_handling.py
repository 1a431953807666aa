"""Declaring handlers (pubsub/handling.py) and stopping one over its time (pubsub/worker/time_limit.py).
What they do with messages is tested against the real processes (tests/e2e/test_handlers_e2e.py)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from pubsub import Message, Retry, handler
from pubsub.handling import registered, unregister
from pubsub.worker.declare import http_base
from pubsub.worker.time_limit import TimeLimitExceeded, Watched


@pytest.fixture(autouse=True)
def forget() -> Iterator[None]:
    before = set(registered())
    yield
    for name in set(registered()) - before:
        unregister(name)


def test_a_handler_is_registered_with_its_settings_and_returned_unchanged() -> None:
    def on_order(message: Message) -> None:
        pass

    decorated = handler(queue="orders", exchange="shop", binding_key="orders.#", concurrency=3, time_limit=5)(on_order)
    assert decorated is on_order
    declared = registered()[f"{__name__}.{on_order.__qualname__}"]
    assert (declared.queue, declared.exchange, declared.binding_key) == ("orders", "shop", "orders.#")
    assert (declared.concurrency, declared.prefetch, declared.time_limit, declared.is_async) == (3, 100, 5.0, False)
    assert declared.retry == Retry()


def test_an_async_handler_is_known_as_such() -> None:
    @handler(queue="a", name="async-one", prefetch=1, time_limit=None)
    async def on_a(message: Message) -> None:
        pass

    declared = registered()["async-one"]
    assert declared.is_async and declared.prefetch == 1 and declared.time_limit is None


class _Callable:
    async def __call__(self, message: Message) -> None:
        pass


async def _async_with_an_argument(extra: int, message: Message) -> None:
    pass


@pytest.mark.parametrize("function", [
    _Callable(), functools.partial(_async_with_an_argument, 1), functools.partial(_Callable()),
], ids=["async-call", "partial", "partial-of-async-call"])
def test_an_async_callable_that_is_no_function_is_known_as_async(function: Any) -> None:
    """Taken for a sync handler, its coroutine was never awaited and its message acknowledged."""
    handler(queue="a", name="async-callable")(function)
    assert registered()["async-callable"].is_async


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"queue": "bad name"}, "queue name"),
        ({"queue": "q", "exchange": ""}, "default exchange"),
        ({"queue": "q", "concurrency": 0}, "concurrency"),
        ({"queue": "q", "prefetch": 0}, "prefetch"),
        ({"queue": "q", "time_limit": 0}, "time_limit"),
        ({"queue": "q", "max_attempts": 0}, "max_attempts"),
        ({"queue": "q", "backoff": -1}, "backoff"),
    ],
)
def test_a_bad_declaration_stops_start_up_naming_the_problem(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=problem):
        handler(**kwargs)(lambda message: None)


def test_one_queue_has_one_handler() -> None:
    handler(queue="shared", name="first")(lambda message: None)
    with pytest.raises(ImproperlyConfigured, match="already handled by 'first'"):
        handler(queue="shared", name="second")(lambda message: None)


def test_backoff_grows_by_its_factor_up_to_its_cap() -> None:
    retry = Retry(max_attempts=6, backoff=0.5, factor=3, max_backoff=10)
    assert [retry.delay(attempt) for attempt in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]


def test_a_watched_call_over_its_time_is_stopped_in_its_thread() -> None:
    watched = Watched()
    outcome: list[str] = []

    def busy() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pass

    def run() -> None:
        try:
            watched.run(busy)
            outcome.append("finished")
        except TimeLimitExceeded:
            outcome.append("stopped")

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.1)
    assert watched.interrupt()
    thread.join(5)
    assert outcome == ["stopped"]
    assert not watched.interrupt()  # nothing runs any more


def test_the_http_address_of_a_websocket_one() -> None:
    assert http_base("ws://127.0.0.1:8060/ws") == "http://127.0.0.1:8060"
    assert http_base("wss://broker.example.com/ws") == "https://broker.example.com"
