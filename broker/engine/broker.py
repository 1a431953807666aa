"""The broker's state and every operation on it.

Each public method validates first and changes nothing when it raises; then it
changes the state and returns the effects for the shell to carry out
. One owner calls it: the
runtime's event loop. Pure: no I/O, no clock, no Django.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from .errors import (
    BrokerError,
    Conflict,
    Forbidden,
    LimitExceeded,
    NotFound,
    PreconditionFailed,
)
from .exchanges import Exchange, ExchangeSpec, ExchangeType, parse_headers_match
from .jsoncodec import canonical
from .messages import (
    Cancelled,
    Delivery,
    Effects,
    EffectsBuilder,
    Envelope,
    Message,
    StoredCopy,
    make_message,
)
from .names import DEFAULT_EXCHANGE, RESERVED_PREFIX
from .queues import (
    MAX_PREFETCH,
    AckMode,
    Connection,
    Consumer,
    Overflow,
    QueueSpec,
    QueueState,
    Unacked,
)

# A dead-lettered message republished this many times in one call is dropped:
# a guard against topologies that feed dead letters back in a loop.
MAX_DEAD_LETTER_DEPTH: Final = 16

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


@dataclass(slots=True)  # made per message: not frozen, whose __init__ costs 4x (object.__setattr__ per field); never mutated
class Published:
    routed: int
    effects: Effects


@dataclass(frozen=True, slots=True)
class QueueCounts:
    messages_ready: int
    messages_unacknowledged: int
    consumers: int


class Broker:
    def __init__(self) -> None:
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, QueueState] = {}
        self.bindings: dict[BindingKey, BindingSpec] = {}
        self.connections: dict[int, Connection] = {}
        self._bindings_of_queue: dict[str, set[BindingKey]] = {}
        self._bindings_of_exchange: dict[str, set[BindingKey]] = {}
        self._next_connection = 1
        self.next_store_id = 1
        self._next_seq = 0
        self.published = 0  # messages published, a running total for rates
        # Queues with a message TTL or `expires`: the only ones `tick` looks at, so its
        # cost follows them, not the number of queues.
        self._timed: set[str] = set()
        # MAX_QUEUES and MAX_BINDINGS (README, "Limits") for what the router makes itself,
        # a subscription's private queue; None: no limit. The stored topology is checked
        # by the services before it is written, and always loads.
        self.max_queues: int | None = None
        self.max_bindings: int | None = None

    # -- topology ------------------------------------------------------

    def declare_exchange(self, spec: ExchangeSpec, *, reserved_ok: bool = False) -> bool:
        """True when created; False when an identical one exists."""
        self._check_not_reserved("exchange", spec.name, reserved_ok)
        existing = self.exchanges.get(spec.name)
        if existing is not None:
            if not existing.spec.same_as(spec):
                raise PreconditionFailed(f"exchange {spec.name!r} exists with other properties")
            return False
        self.exchanges[spec.name] = Exchange(spec)
        self._bindings_of_exchange[spec.name] = set()
        return True

    def sync_exchange(self, spec: ExchangeSpec) -> None:
        """Make the exchange match its stored definition (admin or ORM edits)."""
        existing = self.exchanges.get(spec.name)
        if existing is None:
            self.declare_exchange(spec, reserved_ok=True)
        elif not existing.spec.same_as(spec):
            replacement = Exchange(spec)
            for key in self._bindings_of_exchange[spec.name]:
                self._add_route(replacement, self.bindings[key])
            replacement.binding_count = existing.binding_count
            self.exchanges[spec.name] = replacement

    def delete_exchange(self, name: str, *, reserved_ok: bool = False) -> None:
        if name == DEFAULT_EXCHANGE:
            raise Forbidden("the default exchange cannot be deleted")
        self._check_not_reserved("exchange", name, reserved_ok)
        self._exchange(name)
        for key in list(self._bindings_of_exchange[name]):
            self._remove_binding(key)
        del self.exchanges[name]
        del self._bindings_of_exchange[name]

    def declare_queue(self, spec: QueueSpec, *, now: float, reserved_ok: bool = False) -> bool:
        """True when created; False when an identical one exists (which counts as a use)."""
        self._check_not_reserved("queue", spec.name, reserved_ok)
        existing = self.queues.get(spec.name)
        if existing is not None:
            if not existing.spec.same_as(spec):
                raise PreconditionFailed(f"queue {spec.name!r} exists with other properties")
            existing.last_used = now
            return False
        if spec.exclusive_to is not None and spec.exclusive_to not in self.connections:
            raise NotFound(f"connection {spec.exclusive_to} does not exist")
        self.queues[spec.name] = QueueState(spec, now)  # parses the arguments first
        self._bindings_of_queue[spec.name] = set()
        self._track_timers(self.queues[spec.name])
        if spec.exclusive_to is not None:
            self.connections[spec.exclusive_to].exclusive_queues.add(spec.name)
        return True

    def sync_queue(self, spec: QueueSpec, *, now: float) -> Effects:
        """Make the queue match its stored definition, keeping its messages."""
        existing = self.queues.get(spec.name)
        if existing is None:
            self.declare_queue(spec, now=now, reserved_ok=True)
            return Effects()
        if not existing.spec.same_as(spec):
            existing.args = QueueState(spec, now).args  # parsed before anything changes
        existing.spec = spec  # the stored row may be a new one with the same properties
        self._track_timers(existing)
        fx = EffectsBuilder()
        self._enforce_length(existing, fx, now)
        return fx.build()

    def delete_queue(self, name: str, *, row_id: int | None = None) -> Effects:
        """Delete a queue; with `row_id`, only the one stored in that row (a later
        declaration of the same name is another queue)."""
        queue = self._queue(name)
        if row_id is not None and queue.spec.row_id not in (None, row_id):
            return Effects()
        fx = EffectsBuilder()
        self._delete_queue(queue, fx, reason=f"queue {name!r} was deleted")
        return fx.build()

    def bind(self, spec: BindingSpec) -> bool:
        """True when created; False when an identical binding exists."""
        if spec.exchange == DEFAULT_EXCHANGE:
            raise Forbidden("the default exchange binds every queue by its name; it takes no other bindings")
        exchange = self._exchange(spec.exchange)
        self._queue(spec.queue)
        arguments = spec.arguments or {}
        if not isinstance(arguments, Mapping):
            raise BrokerError("binding arguments must be an object", fields={"arguments": ["must be an object"]})
        if exchange.spec.type is ExchangeType.HEADERS:
            parse_headers_match(arguments)
        key = spec.key
        if key in self.bindings:
            return False
        self.bindings[key] = spec
        self._bindings_of_exchange[spec.exchange].add(key)
        self._bindings_of_queue[spec.queue].add(key)
        self._add_route(exchange, spec)
        exchange.binding_count += 1
        return True

    def unbind(self, spec: BindingSpec) -> bool:
        """True when a binding was removed; False when there was none."""
        key = spec.key
        if key not in self.bindings:
            return False
        self._remove_binding(key)
        return True

    # -- publishing ----------------------------------------------------

    def publish(self, message: Message, *, now: float) -> Published:
        if message.exchange != DEFAULT_EXCHANGE:
            self._exchange(message.exchange)
        fx = EffectsBuilder()
        self.published += 1
        routed = self._route_and_enqueue(message, fx, now, depth=0)
        return Published(routed, fx.build())

    def _route(self, message: Message) -> Iterable[str]:
        if message.exchange == DEFAULT_EXCHANGE:
            return (message.routing_key,) if message.routing_key in self.queues else ()
        exchange = self.exchanges.get(message.exchange)
        if exchange is None:  # a dead-letter exchange deleted since its queue was declared
            return ()
        return exchange.routes.route(message.routing_key, message.headers)

    def _route_and_enqueue(self, message: Message, fx: EffectsBuilder, now: float, depth: int) -> int:
        routed = 0
        for name in self._route(message):
            queue = self.queues[name]
            limit = queue.args.max_length
            if (
                limit is not None
                and queue.args.overflow is Overflow.REJECT_PUBLISH
                and len(queue.ready) >= limit
                and not self._has_room(queue)
            ):
                continue
            store_id = None
            if queue.stores(message.persistent):
                store_id = self.next_store_id
                self.next_store_id += 1
                fx.to_persist.append(StoredCopy(store_id, name, message))
            ttl = queue.args.message_ttl
            expires_at = None if ttl is None else now + ttl / 1000
            self._next_seq += 1
            queue.ready.append(Envelope(message, store_id, False, expires_at, self._next_seq))
            routed += 1
            queue.enqueued += 1
            self._drain(queue, fx, now, depth)
            self._enforce_length(queue, fx, now, depth)
        return routed

    # -- consuming -----------------------------------------------------

    def open_connection(self, *, first_tag: int = 1) -> int:
        """A new connection; its first delivery gets `first_tag`, and acks of lower tags
        (a previous router's, whose messages come back redelivered) are ignored."""
        connection_id = self._next_connection
        self._next_connection += 1
        self.connections[connection_id] = Connection(connection_id, first_tag)
        return connection_id

    def close_connection(self, connection_id: int, *, now: float) -> Effects:
        connection = self.connections.get(connection_id)
        fx = EffectsBuilder()
        if connection is None:
            return fx.build()
        # Take back every unacknowledged message and detach every subscription before
        # draining: a message given back must not go to another subscription of this
        # closing connection, and it returns in delivery order (docs/protocol.md, "Delivery").
        returned: dict[str, tuple[QueueState, list[Envelope]]] = {}
        for pending in connection.unacked.values():  # tag order is delivery order
            state = self._settle(pending)
            returned.setdefault(state.name, (state, []))[1].append(pending.envelope)
        connection.unacked.clear()
        consumers = list(connection.consumers.values())
        for consumer in consumers:
            self._detach_consumer(consumer, now)
        for state, envelopes in returned.values():
            self._requeue(state, envelopes)
        for state in {consumer.queue.name: consumer.queue for consumer in consumers}.values():
            self._release(state, fx, now)
        for name in list(connection.exclusive_queues):
            exclusive = self.queues.get(name)
            if exclusive is not None:
                self._delete_queue(exclusive, fx, reason="its connection closed")
        del self.connections[connection_id]
        return fx.build()

    def consume(
        self,
        connection_id: int,
        *,
        subscription: str,
        subscription_json: str,
        queue: str,
        ack_mode: AckMode,
        prefetch: int,
        now: float,
    ) -> Effects:
        connection = self._connection(connection_id)
        self._check_subscription(connection, subscription, prefetch)
        state = self._queue(queue)
        owner = state.spec.exclusive_to
        if owner is not None and owner != connection_id:
            raise Forbidden(f"queue {queue!r} is exclusive to another connection")
        return self._add_consumer(connection, subscription, subscription_json, state, ack_mode, prefetch, now)

    def consume_exchange(
        self,
        connection_id: int,
        *,
        subscription: str,
        subscription_json: str,
        exchange: str,
        binding_key: str,
        arguments: Mapping[str, Any] | None,
        queue: str,
        ack_mode: AckMode,
        prefetch: int,
        now: float,
    ) -> Effects:
        """Subscribe through a private queue: exclusive, auto-delete, bound to `exchange`."""
        connection = self._connection(connection_id)
        self._check_subscription(connection, subscription, prefetch)
        if exchange == DEFAULT_EXCHANGE:
            raise Forbidden("subscribe to a queue to consume from the default exchange")
        target = self._exchange(exchange)
        if arguments is not None and not isinstance(arguments, Mapping):  # checked before the queue exists
            raise BrokerError("binding arguments must be an object", fields={"arguments": ["must be an object"]})
        if target.spec.type is ExchangeType.HEADERS:
            parse_headers_match(arguments or {})
        if queue in self.queues:
            raise Conflict(f"queue {queue!r} already exists")
        self._check_room()
        spec = QueueSpec(name=queue, durable=False, auto_delete=True, exclusive_to=connection_id)
        self.declare_queue(spec, now=now, reserved_ok=True)
        self.bind(BindingSpec(exchange, queue, binding_key, arguments))
        state = self.queues[queue]
        return self._add_consumer(connection, subscription, subscription_json, state, ack_mode, prefetch, now)

    def _check_room(self) -> None:
        """Refuse a private queue and its binding past MAX_QUEUES or MAX_BINDINGS."""
        if self.max_queues is not None and len(self.queues) >= self.max_queues:
            raise LimitExceeded(f"the broker holds {len(self.queues)} queues, its limit (MAX_QUEUES)")
        if self.max_bindings is not None and len(self.bindings) >= self.max_bindings:
            raise LimitExceeded(f"the broker holds {len(self.bindings)} bindings, its limit (MAX_BINDINGS)")

    def cancel(self, connection_id: int, subscription: str, *, now: float) -> tuple[str, Effects]:
        """End a subscription; returns its queue's name and the effects."""
        connection = self._connection(connection_id)
        consumer = connection.consumers.get(subscription)
        if consumer is None:
            raise NotFound(f"subscription {subscription!r} does not exist")
        fx = EffectsBuilder()
        self._remove_consumer(consumer, fx, now)
        return consumer.queue.name, fx.build()

    def ack(self, connection_id: int, delivery_tag: int, *, multiple: bool, now: float) -> Effects:
        connection = self._connection(connection_id)
        tags = self._select_tags(connection, delivery_tag, multiple)
        fx = EffectsBuilder()
        touched: dict[str, QueueState] = {}
        for tag in tags:
            pending = connection.unacked.pop(tag)
            queue = self._settle(pending)
            queue.acknowledged += 1
            self._forget(pending.envelope, fx)
            touched[queue.name] = queue
        for queue in touched.values():
            self._drain(queue, fx, now)
        return fx.build()

    def nack(self, connection_id: int, delivery_tag: int, *, multiple: bool, requeue: bool, now: float) -> Effects:
        connection = self._connection(connection_id)
        tags = self._select_tags(connection, delivery_tag, multiple)
        fx = EffectsBuilder()
        to_requeue: dict[str, tuple[QueueState, list[Envelope]]] = {}
        for tag in tags:
            pending = connection.unacked.pop(tag)
            queue = self._settle(pending)
            if requeue:
                to_requeue.setdefault(queue.name, (queue, []))[1].append(pending.envelope)
            else:
                self._dead_letter(queue, pending.envelope, "rejected", fx, now, depth=0)
                to_requeue.setdefault(queue.name, (queue, []))
        for queue, envelopes in to_requeue.values():
            self._requeue(queue, envelopes)
            self._drain(queue, fx, now)
        return fx.build()

    # -- polling and maintenance ---------------------------------------

    def get(self, queue: str, *, count: int, ack: bool, now: float) -> tuple[list[tuple[Message, bool]], Effects]:
        """Take up to `count` ready messages (docs/protocol.md, POST /api/queues/{name}/get/)."""
        state = self._queue(queue)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise BrokerError("count must be a positive integer", fields={"count": ["must be a positive integer"]})
        fx = EffectsBuilder()
        state.last_used = now
        self._expire_head(state, fx, now)
        taken: list[tuple[Message, bool]] = []
        if ack:
            while state.ready and len(taken) < count:
                envelope = state.ready.popleft()
                taken.append((envelope.message, envelope.redelivered))
                self._forget(envelope, fx)
            state.acknowledged += len(taken)
        else:
            for envelope in list(state.ready)[:count]:
                taken.append((envelope.message, envelope.redelivered))
                envelope.redelivered = True  # they stay at the head and come out next as redeliveries
        state.delivered += len(taken)
        return taken, fx.build()

    def purge(self, queue: str) -> tuple[int, Effects]:
        state = self._queue(queue)
        fx = EffectsBuilder()
        purged = len(state.ready)
        for envelope in state.ready:
            self._forget(envelope, fx)
        state.ready.clear()
        return purged, fx.build()

    def tick(self, *, now: float) -> Effects:
        """Expire messages past their TTL and queues unused past `expires`."""
        fx = EffectsBuilder()
        for name in list(self._timed):
            queue = self.queues.get(name)
            if queue is None:
                continue
            if queue.args.message_ttl is not None:
                self._expire_head(queue, fx, now)
            expires = queue.args.expires
            if expires is not None and not queue.consumers and now - queue.last_used >= expires / 1000:
                self._delete_queue(queue, fx, reason=f"queue {queue.name!r} expired")
        return fx.build()

    def load_message(self, queue: str, message: Message, store_id: int, *, now: float) -> None:
        """Put back a stored message at start-up, behind those loaded before it."""
        self._queue(queue)
        self.load_messages([(store_id, queue, message)], now=now)

    def load_messages(
        self, rows: Iterable[tuple[int, str, Message]], *, now: float, wall_now: float | None = None
    ) -> int:
        """Put back stored messages at start-up, each behind those loaded before it in its
        queue; rows of queues that do not exist are skipped. Returns how many were loaded.
        One call for them all: a million-message start-up spends its time here.

        With `wall_now` (seconds since the epoch), a message's TTL counts from when it
        was published, not from the restart."""
        queues, seq, top, loaded = self.queues, self._next_seq, self.next_store_id - 1, 0
        state: QueueState | None = None
        for store_id, name, message in rows:
            if state is None or state.name != name:
                state = queues.get(name)
                if state is None:
                    continue
                ttl = state.args.message_ttl
                append = state.ready.append
            expires_at = None
            if ttl is not None:
                expires_at = now + ttl / 1000 - _age(message.published_at, wall_now)
            seq += 1
            # It may have been delivered before the restart: say so (at-least-once).
            append(Envelope(message, store_id, True, expires_at, seq))
            top = max(top, store_id)
            loaded += 1
        self._next_seq, self.next_store_id = seq, top + 1
        return loaded

    def queue_counts(self, name: str) -> QueueCounts | None:
        queue = self.queues.get(name)
        if queue is None:
            return None
        return QueueCounts(len(queue.ready), queue.unacked, len(queue.consumers))

    def has_exchange(self, name: str) -> bool:
        return name == DEFAULT_EXCHANGE or name in self.exchanges

    # -- internals -----------------------------------------------------

    def _track_timers(self, queue: QueueState) -> None:
        if queue.args.message_ttl is not None or queue.args.expires is not None:
            self._timed.add(queue.name)
        else:
            self._timed.discard(queue.name)

    @staticmethod
    def _check_not_reserved(kind: str, name: str, reserved_ok: bool) -> None:
        if not reserved_ok and name.startswith(RESERVED_PREFIX):
            raise Forbidden(f"{kind} name {name!r} is reserved: names starting with 'amq.' belong to the broker")

    def _exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"exchange {name!r} does not exist")
        return exchange

    def _queue(self, name: str) -> QueueState:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"queue {name!r} does not exist")
        return queue

    def _connection(self, connection_id: int) -> Connection:
        connection = self.connections.get(connection_id)
        if connection is None:
            raise NotFound(f"connection {connection_id} does not exist")
        return connection

    @staticmethod
    def _check_subscription(connection: Connection, subscription: str, prefetch: int) -> None:
        if subscription in connection.consumers:
            raise Conflict(f"subscription {subscription!r} already exists on this connection")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= MAX_PREFETCH:
            raise BrokerError(
                f"prefetch must be an integer from 0 to {MAX_PREFETCH}",
                fields={"prefetch": [f"must be an integer from 0 to {MAX_PREFETCH}"]},
            )

    @staticmethod
    def _add_route(exchange: Exchange, spec: BindingSpec) -> None:
        exchange.routes.add(spec.queue, spec.binding_key, spec.arguments or {})

    def _remove_binding(self, key: BindingKey) -> None:
        spec = self.bindings.pop(key)
        exchange = self.exchanges[spec.exchange]
        exchange.routes.remove(spec.queue, spec.binding_key, spec.arguments or {})
        exchange.binding_count -= 1
        self._bindings_of_exchange[spec.exchange].discard(key)
        self._bindings_of_queue[spec.queue].discard(key)

    def _add_consumer(
        self,
        connection: Connection,
        subscription: str,
        subscription_json: str,
        queue: QueueState,
        ack_mode: AckMode,
        prefetch: int,
        now: float,
    ) -> Effects:
        consumer = Consumer(connection, subscription, subscription_json, queue, ack_mode, prefetch)
        connection.consumers[subscription] = consumer
        queue.consumers.append(consumer)
        queue.had_consumer = True
        queue.last_used = now
        fx = EffectsBuilder()
        self._drain(queue, fx, now)
        return fx.build()

    def _remove_consumer(self, consumer: Consumer, fx: EffectsBuilder, now: float) -> None:
        self._requeue(consumer.queue, self._detach_consumer(consumer, now))
        self._release(consumer.queue, fx, now)

    def _detach_consumer(self, consumer: Consumer, now: float) -> list[Envelope]:
        """Take a subscription off its connection and queue; returns its unacknowledged messages."""
        connection, queue = consumer.connection, consumer.queue
        del connection.consumers[consumer.subscription]
        index = queue.consumers.index(consumer)
        queue.consumers.pop(index)
        if index < queue.next_consumer:
            queue.next_consumer -= 1
        if queue.consumers:
            queue.next_consumer %= len(queue.consumers)
        else:
            queue.next_consumer = 0
        queue.last_used = now
        returned: list[Envelope] = []
        for tag in [t for t, pending in connection.unacked.items() if pending.consumer is consumer]:
            returned.append(connection.unacked.pop(tag).envelope)
        consumer.unacked = 0
        queue.unacked -= len(returned)
        return returned

    def _release(self, queue: QueueState, fx: EffectsBuilder, now: float) -> None:
        """After a subscription left: delete an auto-delete queue left without any, else drain."""
        if queue.spec.auto_delete and not queue.consumers and queue.name in self.queues:
            self._delete_queue(queue, fx, reason=f"queue {queue.name!r} lost its last consumer")
        else:
            self._drain(queue, fx, now)

    def _delete_queue(self, queue: QueueState, fx: EffectsBuilder, *, reason: str) -> None:
        name = queue.name
        for consumer in list(queue.consumers):
            connection = consumer.connection
            del connection.consumers[consumer.subscription]
            for tag in [t for t, pending in connection.unacked.items() if pending.consumer is consumer]:
                self._forget(connection.unacked.pop(tag).envelope, fx)
            fx.cancelled.append(Cancelled(connection.id, consumer.subscription, reason))
        queue.consumers.clear()
        for key in list(self._bindings_of_queue[name]):
            self._remove_binding(key)
        for envelope in queue.ready:
            self._forget(envelope, fx)
        queue.ready.clear()
        owner = queue.spec.exclusive_to
        if owner is not None and owner in self.connections:
            self.connections[owner].exclusive_queues.discard(name)
        del self.queues[name]
        del self._bindings_of_queue[name]
        self._timed.discard(name)
        if owner is None:  # private queues were never stored
            fx.deleted_queues.append(name)
        if queue.spec.row_id is not None:
            fx.deleted_rows.append(queue.spec.row_id)

    @staticmethod
    def _select_tags(connection: Connection, delivery_tag: int, multiple: bool) -> list[int]:
        if isinstance(delivery_tag, bool) or not isinstance(delivery_tag, int):
            raise BrokerError("delivery_tag must be an integer", fields={"delivery_tag": ["must be an integer"]})
        if multiple:
            tags = [tag for tag in connection.unacked if tag <= delivery_tag]
        else:
            tags = [delivery_tag] if delivery_tag in connection.unacked else []
        if not tags and not 0 < delivery_tag < connection.first_tag:
            raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
        return tags

    @staticmethod
    def _settle(pending: Unacked) -> QueueState:
        pending.consumer.unacked -= 1
        queue = pending.consumer.queue
        queue.unacked -= 1
        return queue

    @staticmethod
    def _requeue(queue: QueueState, envelopes: list[Envelope]) -> None:
        """Back to the head of the queue, in their original order (docs/protocol.md, "Delivery")."""
        if not envelopes:
            return
        for envelope in envelopes:
            envelope.redelivered = True
        envelopes.sort(key=_queue_order)
        # Messages requeued earlier (by another consumer) may sit at the head: merge, so
        # the head stays in the queue's original order whatever order consumers left in.
        ready, last = queue.ready, envelopes[-1].seq
        head: list[Envelope] = []
        while ready and ready[0].seq < last:
            head.append(ready.popleft())
        ready.extendleft(reversed(list(heapq.merge(head, envelopes, key=_queue_order))))

    @staticmethod
    def _has_room(queue: QueueState) -> bool:
        return any(consumer.has_room() for consumer in queue.consumers)

    @staticmethod
    def _forget(envelope: Envelope, fx: EffectsBuilder) -> None:
        if envelope.store_id is not None:
            fx.to_delete.append(envelope.store_id)

    def _deliver(self, consumer: Consumer, envelope: Envelope, fx: EffectsBuilder) -> None:
        connection = consumer.connection
        tag = connection.next_tag
        connection.next_tag += 1
        queue = consumer.queue
        queue.delivered += 1
        if consumer.ack_mode == AckMode.CLIENT:
            connection.unacked[tag] = Unacked(consumer, envelope)
            consumer.unacked += 1
            queue.unacked += 1
        else:
            queue.acknowledged += 1
            self._forget(envelope, fx)
        fx.deliveries.append(
            Delivery(connection.id, consumer.subscription_json, tag, envelope.message, envelope.redelivered)
        )

    def _drain(self, queue: QueueState, fx: EffectsBuilder, now: float, depth: int = 0) -> None:
        ready = queue.ready
        while ready and queue.consumers:
            consumer = queue.pick_consumer()
            if consumer is None:
                return
            envelope = ready.popleft()
            # Strictly past: a message whose TTL is 0 still goes to a consumer with room
            # when it arrives (as RabbitMQ); it expires once time has moved on.
            if envelope.expires_at is not None and envelope.expires_at < now:
                self._dead_letter(queue, envelope, "expired", fx, now, depth)
                continue
            self._deliver(consumer, envelope, fx)

    def _expire_head(self, queue: QueueState, fx: EffectsBuilder, now: float) -> None:
        ready = queue.ready
        while ready and ready[0].expires_at is not None and ready[0].expires_at <= now:
            self._dead_letter(queue, ready.popleft(), "expired", fx, now, 0)

    def _enforce_length(self, queue: QueueState, fx: EffectsBuilder, now: float, depth: int = 0) -> None:
        limit = queue.args.max_length
        if limit is None:
            return
        while len(queue.ready) > limit:
            self._dead_letter(queue, queue.ready.popleft(), "maxlen", fx, now, depth)

    def _dead_letter(
        self, queue: QueueState, envelope: Envelope, reason: str, fx: EffectsBuilder, now: float, depth: int
    ) -> None:
        """Drop a message, or republish it to the queue's dead-letter exchange."""
        self._forget(envelope, fx)
        target = queue.args.dead_letter_exchange
        if target is None or depth >= MAX_DEAD_LETTER_DEPTH or not self.has_exchange(target):
            return
        message = envelope.message
        # `x-death` comes from publishers too: read it defensively.
        deaths = message.headers.get("x-death")
        history = [d for d in deaths if isinstance(d, dict)] if isinstance(deaths, list) else []
        if reason != "rejected" and _cycle_without_rejection(history, queue.name):
            return  # back in this queue with no client rejecting it on the way: a loop (as RabbitMQ)
        same = [d for d in history if d.get("queue") == queue.name and d.get("reason") == reason]
        previous = same[0].get("count") if same else 0
        count = (previous if isinstance(previous, int) and not isinstance(previous, bool) else 0) + 1
        entry = {
            "queue": queue.name,
            "reason": reason,
            "exchange": message.exchange,
            "routing-keys": [message.routing_key],
            "count": count,
        }
        headers = dict(message.headers)
        headers["x-death"] = [entry, *(d for d in history if d not in same)]
        headers.setdefault("x-first-death-queue", queue.name)
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-exchange", message.exchange)
        routing_key = queue.args.dead_letter_routing_key
        republished = make_message(
            message_id=message.message_id,
            exchange=target,
            routing_key=message.routing_key if routing_key is None else routing_key,
            body_json=message.body_json,
            headers=headers,
            persistent=message.persistent,
            published_at=message.published_at,
        )
        self._route_and_enqueue(republished, fx, now, depth + 1)


def _queue_order(envelope: Envelope) -> int:
    return envelope.seq


def _cycle_without_rejection(history: list[dict[str, Any]], queue: str) -> bool:
    """Has the message come back to `queue` with no `rejected` death since it was last here?
    `x-death` lists the newest death first."""
    for death in history:
        if death.get("reason") == "rejected":
            return False
        if death.get("queue") == queue:
            return True
    return False


def _age(published_at: str, wall_now: float | None) -> float:
    """Seconds since `published_at` (docs/protocol.md's ISO form), 0 when unknown."""
    if wall_now is None:
        return 0.0
    try:
        published = datetime.fromisoformat(published_at).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, wall_now - published)
