"""Exchanges and bindings: which queues a message goes to.

`Routing` holds the exchanges, the bindings and the indexes between them; the
`Broker` (broker.py) owns one and asks it where each message goes. Like the
broker, every method validates first and changes nothing when it raises.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Forbidden, NotFound, PreconditionFailed
from .exchanges import Exchange, ExchangeSpec
from .jsoncodec import canonical
from .names import DEFAULT_EXCHANGE, HOLDING_PREFIX
from .rules import binding_arguments, check_not_reserved, refuse_default_exchange

BindingKey = tuple[str, str, str, str]  # exchange, queue, binding_key, canonical arguments


@dataclass(frozen=True, slots=True)
class BindingSpec:
    exchange: str
    queue: str
    binding_key: str = ""
    arguments: Mapping[str, Any] | None = None

    @property
    def key(self) -> BindingKey:
        return (self.exchange, self.queue, self.binding_key, canonical(dict(self.arguments or {})))


class Routing:
    def __init__(self) -> None:
        self.exchanges: dict[str, Exchange] = {}
        self.bindings: dict[BindingKey, BindingSpec] = {}
        self._of_queue: dict[str, set[BindingKey]] = {}
        self._of_exchange: dict[str, set[BindingKey]] = {}

    # -- exchanges -----------------------------------------------------

    def declare_exchange(self, spec: ExchangeSpec, *, reserved_ok: bool = False) -> bool:
        """True when created; False when an identical one exists."""
        check_not_reserved("exchange", spec.name, reserved_ok=reserved_ok)
        existing = self.exchanges.get(spec.name)
        if existing is not None:
            if not existing.spec.same_as(spec):
                raise PreconditionFailed(f"exchange {spec.name!r} exists with other properties")
            return False
        self.exchanges[spec.name] = Exchange(spec)
        self._of_exchange[spec.name] = set()
        return True

    def sync_exchange(self, spec: ExchangeSpec) -> None:
        """Make the exchange match its stored definition (admin or ORM edits)."""
        existing = self.exchanges.get(spec.name)
        if existing is None:
            self.declare_exchange(spec, reserved_ok=True)
        elif not existing.spec.same_as(spec):
            replacement = Exchange(spec)
            for key in self._of_exchange[spec.name]:
                binding = self.bindings[key]
                replacement.routes.add(binding.queue, binding.binding_key, binding.arguments or {})
            replacement.binding_count = existing.binding_count
            replacement.published, replacement.unroutable = existing.published, existing.unroutable
            self.exchanges[spec.name] = replacement

    def delete_exchange(self, name: str, *, reserved_ok: bool = False) -> None:
        if name == DEFAULT_EXCHANGE:
            raise Forbidden("the default exchange cannot be deleted")
        check_not_reserved("exchange", name, reserved_ok=reserved_ok)
        self.exchange(name)
        for key in list(self._of_exchange[name]):
            self._remove(key)
        del self.exchanges[name]
        del self._of_exchange[name]

    def exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"exchange {name!r} does not exist")
        return exchange

    def has_exchange(self, name: str) -> bool:
        return name == DEFAULT_EXCHANGE or name in self.exchanges

    # -- queues and bindings -------------------------------------------

    def add_queue(self, name: str) -> None:
        self._of_queue[name] = set()

    def remove_queue(self, name: str) -> None:
        """The queue is gone: so are its bindings."""
        for key in list(self._of_queue[name]):
            self._remove(key)
        del self._of_queue[name]

    def bind(self, spec: BindingSpec, *, queues: Container[str]) -> bool:
        """True when created; False when an identical binding exists."""
        refuse_default_exchange(spec.exchange)
        exchange = self.exchange(spec.exchange)
        if spec.queue not in queues:
            raise NotFound(f"queue {spec.queue!r} does not exist")
        binding_arguments(exchange.kind, spec.arguments)
        key = spec.key
        if key in self.bindings:
            return False
        self.bindings[key] = spec
        self._of_exchange[spec.exchange].add(key)
        self._of_queue[spec.queue].add(key)
        exchange.routes.add(spec.queue, spec.binding_key, spec.arguments or {})
        exchange.binding_count += 1
        return True

    def unbind(self, spec: BindingSpec) -> bool:
        """True when a binding was removed; False when there was none."""
        key = spec.key
        if key not in self.bindings:
            return False
        self._remove(key)
        return True

    def _remove(self, key: BindingKey) -> None:
        spec = self.bindings.pop(key)
        exchange = self.exchanges[spec.exchange]
        exchange.routes.remove(spec.queue, spec.binding_key, spec.arguments or {})
        exchange.binding_count -= 1
        self._of_exchange[spec.exchange].discard(key)
        self._of_queue[spec.queue].discard(key)

    # -- routing -------------------------------------------------------

    def route(self, exchange: str, routing_key: str, headers: Mapping[str, Any], queues: Container[str]) -> Collection[str]:
        """The names of the queues a message goes to; `queues` are those that exist. An
        exchange that routes it nowhere hands it to its alternate exchange, if it has one
        (and that one to its own, each exchange once)."""
        if exchange == DEFAULT_EXCHANGE:
            # A delayed exchange's holding queue is reached only through its exchange.
            return (routing_key,) if routing_key in queues and not routing_key.startswith(HOLDING_PREFIX) else ()
        found = self.exchanges.get(exchange)
        if found is None:  # a dead-letter exchange deleted since its queue was declared
            return ()
        names = found.routes.route(routing_key, headers)
        if names or found.alternate is None:
            return names
        return self._route_alternate(found, routing_key, headers, queues)

    def _route_alternate(
        self, exchange: Exchange, routing_key: str, headers: Mapping[str, Any], queues: Container[str]
    ) -> Collection[str]:
        seen = {exchange.spec.name}
        alternate = exchange.alternate
        while alternate is not None and alternate not in seen:
            seen.add(alternate)
            if alternate == DEFAULT_EXCHANGE:
                return (routing_key,) if routing_key in queues else ()
            found = self.exchanges.get(alternate)
            if found is None:  # named but not declared (yet): as RabbitMQ, the message is dropped
                return ()
            names = found.routes.route(routing_key, headers)
            if names:
                return names
            alternate = found.alternate
        return ()
