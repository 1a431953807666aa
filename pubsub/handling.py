"""Handlers: Django code that consumes a queue, declared with `@handler`.

    # orders/handlers.py (found like admin.py: every installed app's `handlers` module)
    from pubsub import handler

    @handler(queue="orders.billing", exchange="orders", binding_key="orders.*.created")
    def bill(message):
        Invoice.objects.create(order_id=message.body["id"])

`python manage.py runhandlers` runs them (pubsub/worker/). A sync handler runs
inside `transaction.atomic()`, and a message of a durable queue is removed from
the queue in that same transaction: its effects happen exactly once. An async
handler is at-least-once (Django's async ORM has no transactions). This module
holds the declarations only: no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

from broker.engine.errors import BrokerError
from broker.engine.queues import MAX_PREFETCH
from broker.engine.rules import check_name, key_field

# Messages a handler process is handed ahead of time: enough that short handlers never wait
# for the round trip of an ack; lower it for slow handlers shared between processes.
DEFAULT_PREFETCH: Final = 100

# The module of each installed app that declares its handlers (not `consumers`:
# Channels' word for WebSocket consumers).
MODULE_NAME: Final = "handlers"


@dataclass(frozen=True, slots=True)
class Retry:
    """How a failed message is tried again: `max_attempts` in all, waiting
    `backoff` seconds after the first failure, `factor` times longer after each
    next one, never more than `max_backoff`."""

    max_attempts: int = 5
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ImproperlyConfigured(f"max_attempts must be an integer of at least 1, not {self.max_attempts!r}")
        for name in ("backoff", "factor", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ImproperlyConfigured(f"{name} must be a number of at least 0, not {value!r}")

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt `failed_attempt` (1 for the first) failed."""
        try:
            return float(min(self.max_backoff, self.backoff * self.factor ** (failed_attempt - 1)))
        except OverflowError:  # a very late attempt of a very patient handler
            return float(self.max_backoff)


@dataclass(frozen=True, slots=True)
class Message:
    """What a handler receives."""

    body: Any
    headers: Mapping[str, Any]
    routing_key: str
    exchange: str
    message_id: str
    published_at: str
    queue: str
    # Handed out before (to this or another process): a crash, a lost connection, a retry.
    redelivered: bool
    # 1 for the first attempt, 2 for the first retry, ...; an attempt its process died
    # during counts too once the message is a suspect (docs/handlers.md).
    delivery_count: int


@dataclass(frozen=True, slots=True)
class Handler:
    name: str
    function: Callable[[Message], Any] = field(repr=False)
    queue: str
    exchange: str | None
    binding_key: str
    concurrency: int
    prefetch: int
    retry: Retry
    time_limit: float | None  # seconds; None: none
    is_async: bool
    # Called, instead of dead-lettering, in the transaction that gives up on a message
    # (with the last attempt's exception): the Tasks backend records the task as failed.
    give_up: Callable[[Message, BaseException], None] | None = field(default=None, repr=False)
    # Called before a batch's commit, in its transaction, with each message handled and what
    # the handler returned: the Tasks backend writes the batch's results in one statement.
    flush: Callable[[list[tuple[Message, Any]]], None] | None = field(default=None, repr=False)


_registry: dict[str, Handler] = {}


def handler(
    *,
    queue: str,
    exchange: str | None = None,
    binding_key: str = "",
    concurrency: int = 1,
    prefetch: int | None = None,
    max_attempts: int = 5,
    backoff: float = 1.0,
    backoff_factor: float = 2.0,
    max_backoff: float = 300.0,
    time_limit: float | None = 300.0,
    name: str | None = None,
    give_up: Callable[[Message, BaseException], None] | None = None,
    flush: Callable[[list[tuple[Message, Any]]], None] | None = None,
) -> Callable[[Callable[[Message], Any]], Callable[[Message], Any]]:
    """Declare a handler of `queue`. With `exchange`, the queue (durable) and its binding
    to the exchange with `binding_key` are declared when the handlers start; without,
    the queue is declared if it does not exist. `prefetch` defaults to DEFAULT_PREFETCH
    (at least `concurrency`). The function is returned unchanged."""

    def register(function: Callable[[Message], Any]) -> Callable[[Message], Any]:
        retry = Retry(max_attempts, backoff, backoff_factor, max_backoff)
        declared = _spec(function, name, queue, exchange, binding_key, concurrency, prefetch, retry, time_limit)
        if give_up is not None or flush is not None:
            declared = replace(declared, give_up=give_up, flush=flush)
        for other in _registry.values():
            if other.queue == declared.queue and other.name != declared.name:
                raise ImproperlyConfigured(
                    f"handler {declared.name!r}: queue {declared.queue!r} is already handled by {other.name!r}"
                )
        _registry[declared.name] = declared
        return function

    return register


def _spec(
    function: Callable[[Message], Any],
    name: str | None,
    queue: str,
    exchange: str | None,
    binding_key: str,
    concurrency: int,
    prefetch: int | None,
    retry: Retry,
    time_limit: float | None,
) -> Handler:
    label = name or f"{function.__module__}.{function.__qualname__}"
    try:
        check_name("queue", queue)
        if exchange is not None and exchange != "":
            check_name("exchange", exchange)
        key_field("binding_key", binding_key)
    except BrokerError as error:
        raise ImproperlyConfigured(f"handler {label!r}: {error.message}") from None
    if exchange == "":
        raise ImproperlyConfigured(f"handler {label!r}: every queue is bound to the default exchange already")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ImproperlyConfigured(f"handler {label!r}: concurrency must be an integer of at least 1")
    chosen = max(DEFAULT_PREFETCH, concurrency) if prefetch is None else prefetch
    if isinstance(chosen, bool) or not isinstance(chosen, int) or not 1 <= chosen <= MAX_PREFETCH:
        raise ImproperlyConfigured(f"handler {label!r}: prefetch must be an integer from 1 to {MAX_PREFETCH}")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, int | float) or time_limit <= 0):
        raise ImproperlyConfigured(f"handler {label!r}: time_limit must be a positive number of seconds, or None")
    return Handler(
        name=label,
        function=function,
        queue=queue,
        exchange=exchange,
        binding_key=binding_key,
        concurrency=concurrency,
        prefetch=chosen,
        retry=retry,
        time_limit=None if time_limit is None else float(time_limit),
        is_async=is_async_callable(function),
    )


def is_async_callable(function: Callable[..., Any]) -> bool:
    """Whether calling it makes a coroutine to await: an `async def` function, also behind
    `functools.partial`, marked as one (asgiref's `markcoroutinefunction`), or an object whose
    `__call__` is one. (A sync decorator's wrapper around one is not seen here: the worker fails
    its attempts when it returns a coroutine.)"""
    while isinstance(function, functools.partial):
        function = function.func
    return iscoroutinefunction(function) or iscoroutinefunction(type(function).__call__)


def autodiscover() -> None:
    """Import every installed app's `handlers` module."""
    autodiscover_modules(MODULE_NAME)


def registered() -> dict[str, Handler]:
    """The declared handlers by name."""
    return dict(_registry)


def unregister(name: str) -> None:
    """Forget a handler (tests declare their own)."""
    _registry.pop(name, None)
