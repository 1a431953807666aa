"""Exchange types: map a routing key and headers to the names of queues.

Direct and fanout are dict lookups; topic walks a trie of words, so its cost
grows with the key, not with the number of bindings.
Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from .errors import BrokerError
from .jsoncodec import canonical, json_equal
from .names import MAX_NAME_LENGTH, holding_queue


class ExchangeType(StrEnum):
    DIRECT = "direct"
    FANOUT = "fanout"
    TOPIC = "topic"
    HEADERS = "headers"
    # RabbitMQ's delayed-message plugin: routes as its `x-delayed-type` argument says, after
    # the delay a message's `x-delay` header asks for (docs/protocol.md, "Delayed messages").
    DELAYED = "x-delayed-message"


TYPE_NAMES: Final = "direct, fanout, topic, headers, x-delayed-message"
DELAYED_TYPE: Final = "x-delayed-type"
DELAY: Final = "x-delay"  # a message's delay, in ms


def parse_exchange_type(value: object) -> ExchangeType:
    if isinstance(value, str) and value in ExchangeType.__members__.values():
        return ExchangeType(value)
    raise BrokerError(
        f"exchange type {value!r} must be one of {TYPE_NAMES}",
        fields={"type": [f"must be one of {TYPE_NAMES}"]},
    )


def routing_kind(spec: ExchangeSpec) -> ExchangeType:
    """How the exchange routes: its type, or a delayed exchange's `x-delayed-type`."""
    if spec.type is not ExchangeType.DELAYED:
        return spec.type
    kind = spec.arguments.get(DELAYED_TYPE)
    if kind not in ("direct", "fanout", "topic", "headers"):
        raise BrokerError(
            f"exchange argument {DELAYED_TYPE!r}: an x-delayed-message exchange routes as direct, fanout, "
            "topic or headers",
            fields={"arguments": [f"{DELAYED_TYPE}: must be direct, fanout, topic or headers"]},
        )
    return ExchangeType(kind)


def check_delayed_name(kind: ExchangeType, name: str) -> None:
    """A delayed exchange's name leaves room for its holding queue's (`amq.delayed.<name>`)."""
    if kind is ExchangeType.DELAYED and len(holding_queue(name)) > MAX_NAME_LENGTH:
        longest = MAX_NAME_LENGTH - len(holding_queue(""))
        message = f"a delayed exchange's name is at most {longest} characters (its holding queue's is longer)"
        raise BrokerError(f"name: {message}", fields={"name": [message]})


def routing_kind_of(type_name: str, arguments: Mapping[str, Any] | None) -> ExchangeType:
    """`routing_kind` of a stored exchange's type and arguments."""
    return routing_kind(ExchangeSpec("", parse_exchange_type(type_name), arguments=dict(arguments or {})))


def delay_of(headers: Mapping[str, Any]) -> int:
    """A message's `x-delay` in ms (an integer, or a string of digits); 0 without one."""
    value = headers.get(DELAY)
    if isinstance(value, str) and value.isascii() and value.lstrip("-").isdigit() and len(value) <= 12:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return 0
    return value


def split_topic(key: str) -> list[str]:
    # As RabbitMQ does: the empty key has no words; "a..b" has an empty middle word.
    return key.split(".") if key else []


class Routes:
    """The bindings of one exchange, indexed for its type."""

    def add(self, queue: str, binding_key: str, arguments: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def remove(self, queue: str, binding_key: str, arguments: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def route(self, routing_key: str, headers: Mapping[str, Any]) -> set[str] | frozenset[str]:
        raise NotImplementedError


class DirectRoutes(Routes):
    def __init__(self) -> None:
        self._by_key: dict[str, Counter[str]] = {}

    def add(self, queue: str, binding_key: str, arguments: Mapping[str, Any]) -> None:
        self._by_key.setdefault(binding_key, Counter())[queue] += 1

    def remove(self, queue: str, binding_key: str, arguments: Mapping[str, Any]) -> None:
        queues = self._by_key[binding_key]
        queues[queue] -= 1
        if queues[queue] <= 0:
            del queues[queue]
            if not queues:
                del self._by_key[binding_key]

    def route(self, routing_key: str, headers: Mapping[str, Any]) -> set[str] | frozenset[str]:
        queues = self._by_key.get(routing_key)
        return set(queues) if queues else frozenset()


class FanoutRoutes(Routes):
    def __init__(self) -> None:
        self._queues: Counter[str] = Counter()

    def add(self, queue: str, binding_key: str, arguments: Mapping[str, Any]) -> None:
        self._queues[queue] += 1

    def remove(self, queue: str, binding_key: str, arguments: Mapping[str, Any]) -> None:
        self._queues[queue] -= 1
        if self._queues[queue] <= 0:
            del self._queues[queue]

    def route(self, routing_key: str, headers: Mapping[str, Any]) -> set[str] | frozenset[str]:
        return set(self._queues)


@dataclass(slots=True, eq=False)
class _TopicNode:
    words: dict[str, _TopicNode] = field(default_factory=dict)
    queues: Counter[str] = field(default_factory=Counter)

    def is_empty(self) -> bool:
        return not self.words and not self.queues


class TopicRoutes(Routes):
    """A trie over the words of binding keys; `*` and `#` are children like any word."""

    def __init__(self) -> None:
        self._root = _TopicNode()

    def add(self, queue: str, binding_key: str, arguments: Mapping[str, Any]) -> None:
        node = self._root
        for word in split_topic(binding_key):
            node = node.words.setdefault(word, _TopicNode())
        node.queues[queue] += 1

    def remove(self, queue: str, binding_key: str, arguments: Mapping[str, Any]) -> None:
        path = [self._root]
        words = split_topic(binding_key)
        for word in words:
            path.append(path[-1].words[word])
        leaf = path[-1]
        leaf.queues[queue] -= 1
        if leaf.queues[queue] <= 0:
            del leaf.queues[queue]
        # Prune emptied nodes so the trie's size follows the live bindings.
        for depth in range(len(words), 0, -1):
            if not path[depth].is_empty():
                break
            del path[depth - 1].words[words[depth - 1]]

    def route(self, routing_key: str, headers: Mapping[str, Any]) -> set[str] | frozenset[str]:
        words = split_topic(routing_key)
        found: set[str] = set()
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[_TopicNode, int]] = [(self._root, 0)]
        end = len(words)
        while stack:
            node, i = stack.pop()
            state = (id(node), i)
            if state in seen:
                continue
            seen.add(state)
            hash_node = node.words.get("#")
            if hash_node is not None:
                # `#` takes zero or more words.
                for j in range(i, end + 1):
                    stack.append((hash_node, j))
            if i == end:
                found.update(node.queues)
                continue
            child = node.words.get(words[i])
            if child is not None:
                stack.append((child, i + 1))
            star = node.words.get("*")
            if star is not None:
                stack.append((star, i + 1))
        return found


@dataclass(frozen=True, slots=True)
class _HeadersBinding:
    queue: str
    match_any: bool
    items: tuple[tuple[str, Any], ...]
    # The arguments as JSON text: Python finds `1 == True`, so `items` alone would let
    # removing the binding {"a": true} take away {"a": 1} (docs/protocol.md, headers match).
    identity: str

    def matches(self, headers: Mapping[str, Any]) -> bool:
        hits = (key in headers and json_equal(headers[key], value) for key, value in self.items)
        return any(hits) if self.match_any else all(hits)


def parse_headers_match(arguments: Mapping[str, Any]) -> bool:
    """Validate a headers binding's `x-match`; True when it is `any`."""
    mode: object = arguments.get("x-match", "all")
    if mode not in ("all", "any"):
        raise BrokerError(
            f"x-match {mode!r} must be 'all' or 'any'",
            fields={"arguments": ["x-match must be 'all' or 'any'"]},
        )
    return mode == "any"


class HeadersRoutes(Routes):
    """Headers cannot be indexed by key; the bindings are scanned."""

    def __init__(self) -> None:
        self._bindings: list[_HeadersBinding] = []

    @staticmethod
    def _binding(queue: str, arguments: Mapping[str, Any]) -> _HeadersBinding:
        items = tuple((k, v) for k, v in sorted(arguments.items()) if not k.startswith("x-"))
        return _HeadersBinding(queue, parse_headers_match(arguments), items, canonical(dict(arguments)))

    def add(self, queue: str, binding_key: str, arguments: Mapping[str, Any]) -> None:
        self._bindings.append(self._binding(queue, arguments))

    def remove(self, queue: str, binding_key: str, arguments: Mapping[str, Any]) -> None:
        self._bindings.remove(self._binding(queue, arguments))

    def route(self, routing_key: str, headers: Mapping[str, Any]) -> set[str] | frozenset[str]:
        return {b.queue for b in self._bindings if b.matches(headers)}


ROUTES_BY_TYPE: dict[ExchangeType, type[Routes]] = {
    ExchangeType.DIRECT: DirectRoutes,
    ExchangeType.FANOUT: FanoutRoutes,
    ExchangeType.TOPIC: TopicRoutes,
    ExchangeType.HEADERS: HeadersRoutes,
}


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    type: ExchangeType
    durable: bool = True
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def same_as(self, other: ExchangeSpec) -> bool:
        return (
            self.type == other.type
            and self.durable == other.durable
            and self.auto_delete == other.auto_delete
            and dict(self.arguments) == dict(other.arguments)
        )


ALTERNATE_EXCHANGE: Final = "alternate-exchange"


def alternate_exchange(arguments: Mapping[str, Any]) -> str | None:
    """An exchange's `alternate-exchange` argument (RabbitMQ's name): where the messages it
    routes to no queue go. Raises `invalid` unless it is a string."""
    value = arguments.get(ALTERNATE_EXCHANGE)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BrokerError(
            f"exchange argument {ALTERNATE_EXCHANGE!r}: must be a string (an exchange's name)",
            fields={"arguments": [f"{ALTERNATE_EXCHANGE}: must be a string"]},
        )
    return value


class Exchange:
    __slots__ = (
        "_onward_count", "alternate", "binding_count", "delayed", "kind", "onward", "published", "routes", "spec",
        "unroutable",
    )

    def __init__(self, spec: ExchangeSpec) -> None:
        self.spec = spec
        self.kind = routing_kind(spec)  # raises first: nothing made for a bad declaration
        self.delayed = spec.type is ExchangeType.DELAYED
        self.routes: Routes = ROUTES_BY_TYPE[self.kind]()  # bindings to queues
        # Bindings to other exchanges, indexed as `routes` are; None while there are none, so
        # routing looks no further (routing.py).
        self.onward: Routes | None = None
        self._onward_count = 0
        self.alternate = alternate_exchange(spec.arguments)
        self.binding_count = 0
        # Running totals (metrics): messages published to it, and those it routed nowhere.
        self.published = 0
        self.unroutable = 0

    def add_route(self, destination: str, binding_key: str, arguments: Mapping[str, Any], *, to_exchange: bool) -> None:
        if not to_exchange:
            self.routes.add(destination, binding_key, arguments)
            return
        if self.onward is None:
            self.onward = ROUTES_BY_TYPE[self.kind]()
        self.onward.add(destination, binding_key, arguments)
        self._onward_count += 1

    def remove_route(self, destination: str, binding_key: str, arguments: Mapping[str, Any], *, to_exchange: bool) -> None:
        if not to_exchange:
            self.routes.remove(destination, binding_key, arguments)
            return
        assert self.onward is not None
        self.onward.remove(destination, binding_key, arguments)
        self._onward_count -= 1
        if not self._onward_count:
            self.onward = None
