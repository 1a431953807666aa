"""Exchanges and bindings: which queues a message goes to.

`Routing` holds the exchanges, the bindings and the indexes between them; the
`Broker` (broker.py) owns one and asks it where each message goes. A binding's
destination is a queue or, as RabbitMQ's exchange-to-exchange bindings, another
exchange, which routes the message on by its own bindings (each exchange once
per message, so cycles end). Like the broker, every method validates first and
changes nothing when it raises. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import Forbidden, NotFound, PreconditionFailed
from .exchanges import Exchange, ExchangeSpec, delay_of
from .jsoncodec import canonical
from .names import DEFAULT_EXCHANGE, HOLDING_PREFIX, holding_queue
from .rules import binding_arguments, check_not_reserved, refuse_default_exchange


class DestinationType(StrEnum):
    """What a binding routes to (RabbitMQ's `destination_type`)."""

    QUEUE = "queue"
    EXCHANGE = "exchange"


# exchange, destination type, destination, binding_key, canonical arguments
BindingKey = tuple[str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class BindingSpec:
    exchange: str
    destination: str  # a queue's name, or an exchange's (`destination_type`)
    binding_key: str = ""
    arguments: Mapping[str, Any] | None = None
    destination_type: DestinationType = DestinationType.QUEUE

    @property
    def key(self) -> BindingKey:
        return (self.exchange, self.destination_type, self.destination, self.binding_key,
                canonical(dict(self.arguments or {})))

    @property
    def to_exchange(self) -> bool:
        return self.destination_type == DestinationType.EXCHANGE


class Routing:
    def __init__(self) -> None:
        self.exchanges: dict[str, Exchange] = {}
        self.bindings: dict[BindingKey, BindingSpec] = {}
        self._of_queue: dict[str, set[BindingKey]] = {}  # to the queue
        self._of_exchange: dict[str, set[BindingKey]] = {}  # from the exchange
        self._into_exchange: dict[str, set[BindingKey]] = {}  # to the exchange

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
        self._into_exchange[spec.name] = set()
        return True

    def sync_exchange(self, spec: ExchangeSpec) -> None:
        """Make the exchange match its stored definition (admin or ORM edits)."""
        existing = self.exchanges.get(spec.name)
        if existing is None:
            self.declare_exchange(spec, reserved_ok=True)
        elif not existing.spec.same_as(spec):
            replacement = Exchange(spec)
            for key in self._of_exchange[spec.name]:
                _add_route(replacement, self.bindings[key])
            replacement.binding_count = existing.binding_count
            replacement.published, replacement.unroutable = existing.published, existing.unroutable
            self.exchanges[spec.name] = replacement

    def delete_exchange(self, name: str, *, reserved_ok: bool = False) -> None:
        if name == DEFAULT_EXCHANGE:
            raise Forbidden("the default exchange cannot be deleted")
        check_not_reserved("exchange", name, reserved_ok=reserved_ok)
        self.exchange(name)
        for key in [*self._of_exchange[name], *self._into_exchange[name]]:
            if key in self.bindings:  # one from the exchange to itself is in both
                self._remove(key)
        del self.exchanges[name]
        del self._of_exchange[name]
        del self._into_exchange[name]

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
        if spec.to_exchange:
            refuse_default_exchange(spec.destination, field="destination_exchange")
            self.exchange(spec.destination)
        elif spec.destination not in queues:
            raise NotFound(f"queue {spec.destination!r} does not exist")
        binding_arguments(exchange.kind, spec.arguments)
        key = spec.key
        if key in self.bindings:
            return False
        self.bindings[key] = spec
        self._of_exchange[spec.exchange].add(key)
        self._to(spec).add(key)
        _add_route(exchange, spec)
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
        exchange.remove_route(spec.destination, spec.binding_key, spec.arguments or {}, to_exchange=spec.to_exchange)
        exchange.binding_count -= 1
        self._of_exchange[spec.exchange].discard(key)
        self._to(spec).discard(key)

    def _to(self, spec: BindingSpec) -> set[BindingKey]:
        """The bindings to the same destination as `spec`."""
        return (self._into_exchange if spec.to_exchange else self._of_queue)[spec.destination]

    # -- routing -------------------------------------------------------

    def route(self, exchange: str, routing_key: str, headers: Mapping[str, Any], queues: Container[str]) -> Collection[str]:
        """The names of the queues a message goes to; `queues` are those that exist.

        As RabbitMQ: an exchange bound to other exchanges hands the message on to those its
        bindings match; an exchange that matches nothing hands it to its alternate exchange,
        if it has one. Each exchange routes a message once, and each queue gets one copy. A
        delayed exchange reached on the way takes a message with an `x-delay` into its
        holding queue (routed from there when due); the one published to is the broker's
        to hold (`Broker.publish`)."""
        if exchange == DEFAULT_EXCHANGE:
            return _by_name(routing_key, queues)
        found = self.exchanges.get(exchange)
        if found is None:  # a dead-letter exchange deleted since its queue was declared
            return ()
        names = found.routes.route(routing_key, headers)
        if found.onward is None and (names or found.alternate is None):
            return names  # the common case: no exchange to follow
        return self._route_onward(found, names, routing_key, headers, queues)

    def _route_onward(
        self,
        start: Exchange,
        start_names: Collection[str],
        routing_key: str,
        headers: Mapping[str, Any],
        queues: Container[str],
    ) -> set[str]:
        found: set[str] = set()
        seen = {start.spec.name}
        waiting = [start]
        delayed = bool(headers) and delay_of(headers) > 0
        while waiting:
            exchange = waiting.pop()
            if exchange is start:
                names = start_names
            elif delayed and exchange.delayed and (holding := holding_queue(exchange.spec.name)) in queues:
                found.add(holding)  # held: it routes on from this exchange when due
                continue
            else:
                names = exchange.routes.route(routing_key, headers)
            found.update(names)
            onward: Collection[str] = () if exchange.onward is None else exchange.onward.route(routing_key, headers)
            if not names and not onward and exchange.alternate is not None:
                onward = (exchange.alternate,)
            for name in onward:
                if name in seen:
                    continue
                seen.add(name)
                if name == DEFAULT_EXCHANGE:  # only as an alternate: no binding reaches it
                    found.update(_by_name(routing_key, queues))
                elif (next_exchange := self.exchanges.get(name)) is not None:
                    waiting.append(next_exchange)
                # else: an alternate named but not declared (yet): as RabbitMQ, nothing there
        return found


def _add_route(exchange: Exchange, spec: BindingSpec) -> None:
    exchange.add_route(spec.destination, spec.binding_key, spec.arguments or {}, to_exchange=spec.to_exchange)


def _by_name(routing_key: str, queues: Container[str]) -> Collection[str]:
    """The default exchange's routing: to the queue the key names. A delayed exchange's
    holding queue is reached only through its exchange."""
    return (routing_key,) if routing_key in queues and not routing_key.startswith(HOLDING_PREFIX) else ()
