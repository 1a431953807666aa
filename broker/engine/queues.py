"""Queues, their arguments, consumers and connections: the engine's state.

Pure: no I/O, no clock (times are passed in as floats, in seconds).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from .backlog import Backlog
from .errors import BrokerError, PreconditionFailed
from .jsoncodec import dumps, loads, utf8_size
from .messages import BASE64, BODY_ENCODING, TEXT, Envelope, Message
from .names import held_for
from .rules import integer_field, mapping_field

MAX_PREFETCH: Final = 65535  # AMQP's bound for basic.qos prefetch-count
DEFAULT_PREFETCH: Final = 100  # docs/protocol.md, subscribe frame


def check_prefetch(prefetch: object) -> int:
    """A subscription's prefetch: 0 (unbounded) to AMQP's bound."""
    return integer_field("prefetch", prefetch, low=0, high=MAX_PREFETCH)


class Overflow(StrEnum):
    DROP_HEAD = "drop-head"
    REJECT_PUBLISH = "reject-publish"
    REJECT_PUBLISH_DLX = "reject-publish-dlx"  # and the refused message is dead-lettered


class AckMode(StrEnum):
    AUTO = "auto"
    CLIENT = "client"
    # Client ack, for a consumer that settles a stored copy by deleting its row in a
    # database transaction of its own (the handlers' exactly-once effects): each delivery
    # names its copy's `store_id`, and is sent only once that copy is committed.
    TRANSACTION = "transaction"


@dataclass(frozen=True, slots=True)
class QueueArguments:
    message_ttl: int | None = None  # ms
    max_length: int | None = None
    overflow: Overflow = Overflow.DROP_HEAD
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    expires: int | None = None  # ms unused before the queue is deleted
    delivery_limit: int | None = None  # returns (nack with requeue, consumer gone) before dead-lettering
    max_priority: int | None = None  # a priority queue: messages' `priority` 0..this, highest first
    max_length_bytes: int | None = None  # the most body bytes its ready messages hold
    single_active_consumer: bool = False  # only the oldest subscription gets messages
    # RabbitMQ's `x-queue-type` (`classic` or `quorum`), taken for compatibility: every queue
    # here is one kind, whose messages are as durable as the queue and the message say.
    queue_type: str = "classic"


# RabbitMQ users write the `x-` spellings; both mean the same.
_ALIASES: Final = {
    "x-message-ttl": "message_ttl",
    "x-max-length": "max_length",
    "x-overflow": "overflow",
    "x-dead-letter-exchange": "dead_letter_exchange",
    "x-dead-letter-routing-key": "dead_letter_routing_key",
    "x-expires": "expires",
    "x-delivery-limit": "delivery_limit",
    "x-single-active-consumer": "single_active_consumer",
    "x-queue-type": "queue_type",
    "x-max-priority": "max_priority",
    "x-max-length-bytes": "max_length_bytes",
}
QUEUE_TYPES: Final = ("classic", "quorum")
_INT_ARGUMENTS: Final = {
    "message_ttl": 0, "max_length": 0, "expires": 1, "delivery_limit": 0, "max_priority": 1, "max_length_bytes": 0,
}
MAX_PRIORITY: Final = 255  # RabbitMQ's bound for x-max-priority
_STR_ARGUMENTS: Final = ("dead_letter_exchange", "dead_letter_routing_key")
_BOOL_ARGUMENTS: Final = ("single_active_consumer",)


def refuse_two_spellings(raw: Mapping[str, Any] | None) -> None:
    """A new declaration's argument given in both spellings (`x-message-ttl` and
    `message_ttl`) is refused, as which one wins would hang on the keys' order
    (PostgreSQL's jsonb keeps its own). A queue stored so before still loads (the later
    key wins), and may be declared again as it is (queues/services.py)."""
    spelled: dict[str, str] = {}
    for key in raw or {}:
        name = _ALIASES.get(key, key)
        if name in spelled:
            problem = f"given twice, as {spelled[name]!r} too"
            raise BrokerError(f"queue argument {key!r}: {problem}", fields={"arguments": [f"{key}: {problem}"]})
        spelled[name] = key


def parse_queue_arguments(raw: Mapping[str, Any] | None) -> QueueArguments:
    """Validate a queue's `arguments` (docs/protocol.md, "Queue properties and arguments")."""
    if raw is None:
        return QueueArguments()
    raw = mapping_field("arguments", raw)
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for key, value in raw.items():
        name = _ALIASES.get(key, key)
        if name in _INT_ARGUMENTS:
            low = _INT_ARGUMENTS[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                errors[key] = [f"must be an integer >= {low}"]
            elif name == "max_priority" and value > MAX_PRIORITY:
                errors[key] = [f"must be an integer from 1 to {MAX_PRIORITY}"]
            else:
                values[name] = value
        elif name in _STR_ARGUMENTS:
            if not isinstance(value, str):
                errors[key] = ["must be a string"]
            else:
                values[name] = value
        elif name in _BOOL_ARGUMENTS:
            if not isinstance(value, bool):
                errors[key] = ["must be true or false"]
            else:
                values[name] = value
        elif name == "queue_type":
            if value not in QUEUE_TYPES:
                errors[key] = ["must be 'classic' or 'quorum'"]
            else:
                values[name] = value
        elif name == "overflow":
            if value not in tuple(Overflow):
                errors[key] = ["must be 'drop-head', 'reject-publish' or 'reject-publish-dlx'"]
            else:
                values[name] = Overflow(value)
        else:
            errors[key] = ["unknown queue argument"]
    if errors:
        first = next(iter(errors))
        raise BrokerError(f"queue argument {first!r}: {errors[first][0]}", fields={"arguments": [
            f"{k}: {v[0]}" for k, v in errors.items()
        ]})
    return QueueArguments(**values)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    durable: bool = True
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)
    exclusive_to: int | None = None  # the connection that owns a private queue
    row_id: int | None = None  # the stored definition's row, when it has one (not a property)

    def same_as(self, other: QueueSpec) -> bool:
        return (
            self.durable == other.durable
            and self.auto_delete == other.auto_delete
            and dict(self.arguments) == dict(other.arguments)
            and self.exclusive_to == other.exclusive_to
        )


class Consumer:
    """A subscription: one connection consuming one queue."""

    __slots__ = ("ack_mode", "connection", "flow", "prefetch", "queue", "subscription", "subscription_json", "unacked")

    def __init__(
        self,
        connection: Connection,
        subscription: str,
        subscription_json: str,
        queue: QueueState,
        ack_mode: AckMode,
        prefetch: int,
        flow: bool = False,
    ) -> None:
        self.connection = connection
        self.subscription = subscription
        self.subscription_json = subscription_json
        self.queue = queue
        self.ack_mode = ack_mode
        self.prefetch = prefetch  # 0 = unbounded
        self.unacked = 0
        # Held back by its connection's credit (auto-ack and client-ack alike, as RabbitMQ's
        # credit flow holds a queue back from a channel whose socket is not writable).
        self.flow = flow

    def has_room(self) -> bool:
        if self.flow and self.connection.credit <= 0:
            return False
        return self.ack_mode == AckMode.AUTO or self.prefetch == 0 or self.unacked < self.prefetch


PRIORITY: Final = "priority"  # the header of a message's priority (RabbitMQ's property)


def priority_of(headers: Mapping[str, Any], highest: int) -> int:
    """A message's priority in a queue whose `x-max-priority` is `highest`: its `priority`
    header (an integer, or a string of digits), at most `highest`; 0 without one."""
    value = headers.get(PRIORITY)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return 0
    return min(value, highest)


# What a delivery's frame holds besides the fields `delivery_cost` counts: its tag, the
# protocol's names and punctuation, `redelivered`, a delivery count.
DELIVERY_OVERHEAD: Final = 256


def delivery_cost(message: Message) -> int:
    """What a delivery of `message` takes from its connection's credit, but for its
    subscription's id: its frame's size in bytes, about and not below it, for JSON and
    STOMP alike (a STOMP frame carries a text or base64 body decoded, smaller). Made once
    per message."""
    cost = message.cost
    if cost < 0:
        cost = (
            utf8_size(message.body_json)
            + utf8_size(message.exchange)
            + utf8_size(message.routing_key)
            + 2 * utf8_size(message.message_id)  # a JSON frame's `unique_id` repeats it
            + len(message.published_at)
            + DELIVERY_OVERHEAD
        )
        if message.headers:
            cost += utf8_size(dumps(message.headers))
        message.cost = cost
    return cost


def message_bytes(message: Message) -> int:
    """What a message counts toward `x-max-length-bytes`: its body's bytes as a STOMP or AMQP
    consumer gets them (a text or base64 body decoded; a JSON body as its text)."""
    body = message.body_json
    encoding = message.headers.get(BODY_ENCODING) if message.headers else None
    if encoding == TEXT:
        text = loads(body)
        if isinstance(text, str):
            return utf8_size(text)
    elif encoding == BASE64:
        size = len(body) - 2  # the quotes
        return max(0, size * 3 // 4 - body.count("=", -4))
    return utf8_size(body)


class SizedReady(deque[Envelope]):
    """A ready deque that keeps the sum of its messages' body sizes (`x-max-length-bytes`)."""

    __slots__ = ("bytes",)

    def __init__(self, envelopes: Iterable[Envelope] = ()) -> None:
        super().__init__()
        self.bytes = 0
        for envelope in envelopes:
            self.append(envelope)

    def append(self, envelope: Envelope) -> None:
        super().append(envelope)
        self.bytes += message_bytes(envelope.message)

    def appendleft(self, envelope: Envelope) -> None:
        super().appendleft(envelope)
        self.bytes += message_bytes(envelope.message)

    def extendleft(self, envelopes: Iterable[Envelope]) -> None:
        for envelope in envelopes:
            self.appendleft(envelope)

    def popleft(self) -> Envelope:
        envelope = super().popleft()
        self.bytes -= message_bytes(envelope.message)
        return envelope

    def clear(self) -> None:
        super().clear()
        self.bytes = 0


class PriorityReady:
    """A priority queue's ready messages: a deque per priority, highest served first, each in
    the queue's order. Offers the part of `deque`'s interface the engine uses."""

    __slots__ = ("_highest", "_levels", "_size")

    def __init__(self, highest: int, envelopes: Iterable[Envelope] = (), *, sized: bool = False) -> None:
        self._highest = highest
        self._levels: list[deque[Envelope]] = [SizedReady() if sized else deque() for _ in range(highest + 1)]
        self._size = 0
        for envelope in envelopes:
            self.append(envelope)

    def _level(self, envelope: Envelope) -> deque[Envelope]:
        return self._levels[priority_of(envelope.message.headers, self._highest)]

    def append(self, envelope: Envelope) -> None:
        self._level(envelope).append(envelope)
        self._size += 1

    def popleft(self) -> Envelope:
        for level in reversed(self._levels):
            if level:
                self._size -= 1
                return level.popleft()
        raise IndexError("pop from an empty queue")

    def __getitem__(self, index: int) -> Envelope:
        if index != 0:
            raise IndexError("only the head")
        for level in reversed(self._levels):
            if level:
                return level[0]
        raise IndexError("an empty queue has no head")

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __iter__(self) -> Iterator[Envelope]:
        for level in reversed(self._levels):
            yield from level

    def clear(self) -> None:
        for level in self._levels:
            level.clear()
        self._size = 0

    @property
    def bytes(self) -> int:
        return sum(level.bytes for level in self._levels if isinstance(level, SizedReady))

    def requeue(self, envelopes: list[Envelope]) -> None:
        """Back to the head of their priorities, each in the queue's original order."""
        self._size += len(envelopes)
        by_level: dict[int, list[Envelope]] = {}
        for envelope in envelopes:
            by_level.setdefault(priority_of(envelope.message.headers, self._highest), []).append(envelope)
        for index, returned in by_level.items():
            _merge_at_head(self._levels[index], returned)


class DueReady:
    """A delayed exchange's waiting messages (its holding queue's `ready`), soonest due first:
    each envelope's `expires_at` is when it is due. Offers `deque`'s interface as used."""

    __slots__ = ("_heap",)

    def __init__(self, envelopes: Iterable[Envelope] = ()) -> None:
        self._heap: list[tuple[float, int, Envelope]] = []
        for envelope in envelopes:
            self.append(envelope)

    def append(self, envelope: Envelope) -> None:
        heapq.heappush(self._heap, (envelope.expires_at or 0.0, envelope.seq, envelope))

    def popleft(self) -> Envelope:
        return heapq.heappop(self._heap)[2]

    def __getitem__(self, index: int) -> Envelope:
        if index != 0 or not self._heap:
            raise IndexError("only the head of a queue that has one")
        return self._heap[0][2]

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __iter__(self) -> Iterator[Envelope]:
        return (item[2] for item in sorted(self._heap, key=lambda item: item[:2]))

    def clear(self) -> None:
        self._heap.clear()

    def requeue(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            self.append(envelope)


Ready = deque[Envelope] | PriorityReady | DueReady


def _merge_at_head(ready: deque[Envelope], envelopes: list[Envelope]) -> None:
    """Put `envelopes` (sorted by seq) back at the head of `ready`, merged with the ones
    requeued earlier that sit there, so that the head keeps the queue's original order."""
    last = envelopes[-1].seq
    head: list[Envelope] = []
    while ready and ready[0].seq < last:
        head.append(ready.popleft())
    ready.extendleft(reversed(list(heapq.merge(head, envelopes, key=_queue_order))))


class QueueState:
    __slots__ = (
        "acknowledged",
        "args",
        "backlog",
        "consumers",
        "dead_lettered",
        "delivered",
        "dropped",
        "enqueued",
        "epoch",
        "had_consumer",
        "highest_stored",
        "holding",
        "rows_deleted",
        "in_doubt",
        "last_used",
        "nacked",
        "next_consumer",
        "ready",
        "redelivered",
        "refused",
        "spec",
        "unacked",
    )

    def __init__(self, spec: QueueSpec, now: float, epoch: int = 0) -> None:
        self.spec = spec
        self.args = parse_queue_arguments(spec.arguments)
        # A delayed exchange's holding queue (names.py): its `ready` is ordered by when each
        # message is due, and it is neither consumed, bound nor read by `get`.
        self.holding = held_for(spec.name) is not None
        # The head of the queue, in memory; a durable queue's other messages may wait
        # in the database, in its backlog (backlog.py), None while it has none.
        self.ready: Ready = self._new_ready(())
        self.backlog: Backlog | None = None
        self.epoch = epoch  # tells this queue's backlog reads from an earlier one's
        # The highest store id of a copy that entered `ready`: a backlog starts above it, so
        # that no read brings back a copy in memory (an outbox's copy, whose id was given
        # out when it was planned, can come after copies with higher ids).
        self.highest_stored = 0
        # The store ids (after, below) of this queue's rows the last purge or deletion of its
        # backlog deleted: an outbox copy planned before it, with its id in there, has no row.
        self.rows_deleted: tuple[int, int] = (0, 0)
        self.consumers: list[Consumer] = []
        self.next_consumer = 0  # round-robin position
        self.unacked = 0
        # Copies a transaction-ack consumer held when it went away, by store id, until the
        # shell has looked for their rows (Broker.settle_in_doubt); counted in `unacked`.
        self.in_doubt: dict[int, Envelope] = {}
        self.had_consumer = False
        self.last_used = now
        # Running totals for rates and metrics: copies enqueued, messages delivered (to
        # subscribers or by get) and of those the redeliveries, acknowledged, rejected by a
        # consumer (nack, requeued or not), dead-lettered to the queue's dead-letter exchange,
        # dropped without one (expired, over max-length, rejected), and publishes refused
        # by a full `reject-publish` queue.
        self.enqueued = 0
        self.delivered = 0
        self.redelivered = 0
        self.acknowledged = 0
        self.nacked = 0
        self.dead_lettered = 0
        self.dropped = 0
        self.refused = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def depth(self) -> int:
        """Messages ready: in memory and in the backlog."""
        backlog = self.backlog
        return len(self.ready) if backlog is None else len(self.ready) + backlog.size

    def stores(self, persistent: bool) -> bool:
        """Does a copy of a message with this flag go to the database?"""
        return persistent and self.spec.durable and self.spec.exclusive_to is None

    def requeue(self, envelopes: list[Envelope]) -> None:
        """Back to the head, in their original order (docs/protocol.md, "Delivery")."""
        if not envelopes:
            return
        for envelope in envelopes:
            envelope.redelivered = True
        envelopes.sort(key=_queue_order)
        # Messages requeued earlier (by another consumer) may sit at the head: merge, so
        # the head stays in the queue's original order whatever order consumers left in.
        if isinstance(self.ready, (PriorityReady, DueReady)):
            self.ready.requeue(envelopes)
        else:
            _merge_at_head(self.ready, envelopes)

    def keep_ready(self, keep: Callable[[Envelope], bool]) -> None:
        """Only the ready messages `keep` says (the message browser's removals)."""
        self.ready = self._new_ready([envelope for envelope in self.ready if keep(envelope)])

    def _new_ready(self, envelopes: Iterable[Envelope]) -> Ready:
        if self.holding:
            return DueReady(envelopes)
        highest, sized = self.args.max_priority, self.args.max_length_bytes is not None
        if highest is not None:
            return PriorityReady(highest, envelopes, sized=sized)
        return SizedReady(envelopes) if sized else deque(envelopes)

    @property
    def whole_in_memory(self) -> bool:
        """Does this queue keep every message in memory (its order or its limit needs them all)?"""
        return (
            self.args.max_priority is not None
            or self.args.max_length_bytes is not None
            or self.holding
        )

    def ready_bytes(self) -> int:
        """The body bytes of its ready messages (counted for a queue with `x-max-length-bytes`)."""
        ready = self.ready
        return ready.bytes if isinstance(ready, (SizedReady, PriorityReady)) else 0

    def pick_consumer(self) -> Consumer | None:
        """The next consumer in round-robin order with room under its prefetch; with a single
        active consumer, the oldest subscription or none (the next takes over when it leaves)."""
        consumers = self.consumers
        if self.args.single_active_consumer:
            return consumers[0] if consumers and consumers[0].has_room() else None
        count = len(consumers)
        for step in range(count):
            index = (self.next_consumer + step) % count
            consumer = consumers[index]
            if consumer.has_room():
                self.next_consumer = (index + 1) % count
                return consumer
        return None


def _queue_order(envelope: Envelope) -> int:
    return envelope.seq


@dataclass(slots=True, eq=False)
class Unacked:
    consumer: Consumer
    envelope: Envelope

    def settle(self) -> QueueState:
        """No longer unacknowledged; returns its queue."""
        self.consumer.unacked -= 1
        queue = self.consumer.queue
        queue.unacked -= 1
        return queue


class Connection:
    """A client connection: its subscriptions and its unacknowledged deliveries.

    `credit`: the bytes (`delivery_cost`) it may still be handed before its transport
    has written what it holds. Its subscriptions to named queues get nothing while it is
    not above 0, and the transport gives it back as it writes (`Broker.written`): what a
    client does not read stays in its queue, not in the process's memory."""

    __slots__ = ("consumers", "credit", "exclusive_queues", "first_tag", "id", "next_tag", "turn", "unacked")

    def __init__(self, connection_id: int, first_tag: int = 1, credit: int = 0) -> None:
        self.id = connection_id
        self.credit = credit
        self.turn = 0  # which of its held-back subscriptions credit given back goes to first
        # A connection resumed on a new router starts above the tags its client
        # already holds; those name messages the new router redelivers under new tags.
        self.first_tag = first_tag
        self.next_tag = first_tag
        # delivery_tag -> delivery, in delivery order (dicts keep insertion order)
        self.unacked: dict[int, Unacked] = {}
        self.consumers: dict[str, Consumer] = {}
        self.exclusive_queues: set[str] = set()

    def select_tags(self, delivery_tag: object, multiple: bool) -> list[int]:
        """The unacknowledged tags an ack or nack of `delivery_tag` names. A tag below
        `first_tag` (a previous router's) names none; an unknown one is refused."""
        tag = integer_field("delivery_tag", delivery_tag)
        if multiple:
            tags = [held for held in self.unacked if held <= tag]
        else:
            tags = [tag] if tag in self.unacked else []
        if not tags and not 0 < tag < self.first_tag:
            raise PreconditionFailed(f"unknown delivery tag {tag}")
        return tags
