"""The broker's state and every operation on it: queues, consumers, connections.

Each public method validates first and changes nothing when it raises; then it
changes the state and returns the effects for the shell to carry out. One
owner calls it: the runtime's event loop. Exchanges and bindings are the
`Routing`'s (routing.py); dead-letter copies are made by deadletter.py.
Pure: no I/O, no clock, no Django.

Over 400 lines on purpose: publishing drains a queue to its consumers and an
ack or a close drains it again, so queues, consumers and connections share one
state and one order of effects, and are changed in one class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .deadletter import MAX_DEAD_LETTER_DEPTH, dead_letter_copy
from .errors import Conflict, Forbidden, LimitExceeded, NotFound, PreconditionFailed
from .exchanges import ExchangeSpec
from .messages import Cancelled, Delivery, Effects, EffectsBuilder, Envelope, Message, StoredCopy
from .names import DEFAULT_EXCHANGE
from .queues import AckMode, Connection, Consumer, Overflow, QueueSpec, QueueState, Unacked, check_prefetch
from .routing import BindingSpec, Routing
from .rules import binding_arguments, check_not_reserved, integer_field


@dataclass(slots=True)  # made per message: not frozen, whose __init__ costs 4x (object.__setattr__ per field); never mutated
class Published:
    routed: int
    effects: Effects


@dataclass(slots=True)
class Planned:
    """A message routed but not enqueued: its targets (queue, store id or None) and the
    copies to commit before it is enqueued."""

    message: Message
    targets: list[tuple[str, int | None]]
    copies: list[StoredCopy]


@dataclass(frozen=True, slots=True)
class QueueCounts:
    messages_ready: int
    messages_unacknowledged: int
    consumers: int


class Broker:
    def __init__(self) -> None:
        self.routing = Routing()
        self.exchanges = self.routing.exchanges  # the same dicts, for readers
        self.bindings = self.routing.bindings
        self.queues: dict[str, QueueState] = {}
        self.connections: dict[int, Connection] = {}
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
        return self.routing.declare_exchange(spec, reserved_ok=reserved_ok)

    def sync_exchange(self, spec: ExchangeSpec) -> None:
        """Make the exchange match its stored definition (admin or ORM edits)."""
        self.routing.sync_exchange(spec)

    def delete_exchange(self, name: str, *, reserved_ok: bool = False) -> None:
        self.routing.delete_exchange(name, reserved_ok=reserved_ok)

    def declare_queue(self, spec: QueueSpec, *, now: float, reserved_ok: bool = False) -> bool:
        """True when created; False when an identical one exists (which counts as a use)."""
        check_not_reserved("queue", spec.name, reserved_ok=reserved_ok)
        existing = self.queues.get(spec.name)
        if existing is not None:
            if not existing.spec.same_as(spec):
                raise PreconditionFailed(f"queue {spec.name!r} exists with other properties")
            existing.last_used = now
            return False
        if spec.exclusive_to is not None and spec.exclusive_to not in self.connections:
            raise NotFound(f"connection {spec.exclusive_to} does not exist")
        self.queues[spec.name] = QueueState(spec, now)  # parses the arguments first
        self.routing.add_queue(spec.name)
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
        return self.routing.bind(spec, queues=self.queues)

    def unbind(self, spec: BindingSpec) -> bool:
        """True when a binding was removed; False when there was none."""
        return self.routing.unbind(spec)

    # -- publishing ----------------------------------------------------

    def publish(self, message: Message, *, now: float) -> Published:
        if message.exchange != DEFAULT_EXCHANGE:
            self.routing.exchange(message.exchange)
        fx = EffectsBuilder()
        self.published += 1
        routed = self._route_and_enqueue(message, fx, now, depth=0)
        return Published(routed, fx.build())

    def _route_and_enqueue(self, message: Message, fx: EffectsBuilder, now: float, depth: int) -> int:
        routed = 0
        queues = self.queues
        for name in self.routing.route(message.exchange, message.routing_key, message.headers, queues):
            queue = queues[name]
            if self._rejects(queue):
                continue
            store_id = None
            if queue.stores(message.persistent):
                store_id = self.next_store_id
                self.next_store_id += 1
                fx.to_persist.append(StoredCopy(store_id, name, message))
            self._enqueue(queue, message, store_id, fx, now, depth)
            routed += 1
        return routed

    def plan(self, message: Message) -> Planned:
        """Where a message goes, and its copies to store, without enqueuing it yet: the
        outbox's messages are stored (and their outbox rows removed) in one commit
        first, then `publish_planned` enqueues them. An exchange gone since the
        message was accepted routes it nowhere."""
        targets: list[tuple[str, int | None]] = []
        copies: list[StoredCopy] = []
        for name in self.routing.route(message.exchange, message.routing_key, message.headers, self.queues):
            store_id = None
            if self.queues[name].stores(message.persistent):
                store_id = self.next_store_id
                self.next_store_id += 1
                copies.append(StoredCopy(store_id, name, message))
            targets.append((name, store_id))
        return Planned(message, targets, copies)

    def publish_planned(self, planned: Planned, *, now: float) -> Published:
        """Enqueue a planned message, its copies now stored. A queue deleted meanwhile, or
        full with `reject-publish`, does not take it: its stored copy is deleted."""
        fx = EffectsBuilder()
        self.published += 1
        routed = 0
        for name, store_id in planned.targets:
            queue = self.queues.get(name)
            if queue is None or self._rejects(queue):
                if store_id is not None:
                    fx.to_delete.append(store_id)
                continue
            self._enqueue(queue, planned.message, store_id, fx, now, 0)
            routed += 1
        return Published(routed, fx.build())

    @staticmethod
    def _rejects(queue: QueueState) -> bool:
        """A queue full with `reject-publish` takes no more (unless a consumer has room)."""
        limit = queue.args.max_length
        return (
            limit is not None
            and queue.args.overflow is Overflow.REJECT_PUBLISH
            and len(queue.ready) >= limit
            and not queue.has_room()
        )

    def _enqueue(
        self, queue: QueueState, message: Message, store_id: int | None, fx: EffectsBuilder, now: float, depth: int
    ) -> None:
        ttl = queue.args.message_ttl
        expires_at = None if ttl is None else now + ttl / 1000
        self._next_seq += 1
        queue.ready.append(Envelope(message, store_id, False, expires_at, self._next_seq))
        queue.enqueued += 1
        self._drain(queue, fx, now, depth)
        self._enforce_length(queue, fx, now, depth)

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
            state = pending.settle()
            returned.setdefault(state.name, (state, []))[1].append(pending.envelope)
        connection.unacked.clear()
        consumers = list(connection.consumers.values())
        for consumer in consumers:
            self._detach_consumer(consumer, now)
        for state, envelopes in returned.values():
            state.requeue(envelopes)
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
        binding_arguments(self.routing.exchange(exchange).spec.type, arguments)  # before the queue exists
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
        tags = connection.select_tags(delivery_tag, multiple)
        fx = EffectsBuilder()
        touched: dict[str, QueueState] = {}
        for tag in tags:
            pending = connection.unacked.pop(tag)
            queue = pending.settle()
            queue.acknowledged += 1
            self._forget(pending.envelope, fx)
            touched[queue.name] = queue
        for queue in touched.values():
            self._drain(queue, fx, now)
        return fx.build()

    def nack(self, connection_id: int, delivery_tag: int, *, multiple: bool, requeue: bool, now: float) -> Effects:
        connection = self._connection(connection_id)
        tags = connection.select_tags(delivery_tag, multiple)
        fx = EffectsBuilder()
        to_requeue: dict[str, tuple[QueueState, list[Envelope]]] = {}
        for tag in tags:
            pending = connection.unacked.pop(tag)
            queue = pending.settle()
            if requeue:
                to_requeue.setdefault(queue.name, (queue, []))[1].append(pending.envelope)
            else:
                self._dead_letter(queue, pending.envelope, "rejected", fx, now, depth=0)
                to_requeue.setdefault(queue.name, (queue, []))
        for queue, envelopes in to_requeue.values():
            queue.requeue(envelopes)
            self._drain(queue, fx, now)
        return fx.build()

    # -- polling and maintenance ---------------------------------------

    def get(self, queue: str, *, count: int, ack: bool, now: float) -> tuple[list[tuple[Message, bool]], Effects]:
        """Take up to `count` ready messages (docs/protocol.md, POST /api/queues/{name}/get/)."""
        state = self._queue(queue)
        integer_field("count", count, low=1)
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
        return self.routing.has_exchange(name)

    # -- internals -----------------------------------------------------

    def _track_timers(self, queue: QueueState) -> None:
        if queue.args.message_ttl is not None or queue.args.expires is not None:
            self._timed.add(queue.name)
        else:
            self._timed.discard(queue.name)

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
        check_prefetch(prefetch)

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
        consumer.queue.requeue(self._detach_consumer(consumer, now))
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
        self.routing.remove_queue(name)
        for envelope in queue.ready:
            self._forget(envelope, fx)
        queue.ready.clear()
        owner = queue.spec.exclusive_to
        if owner is not None and owner in self.connections:
            self.connections[owner].exclusive_queues.discard(name)
        del self.queues[name]
        self._timed.discard(name)
        if owner is None:  # private queues were never stored
            fx.deleted_queues.append(name)
        if queue.spec.row_id is not None:
            fx.deleted_rows.append(queue.spec.row_id)

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
        if consumer.ack_mode == AckMode.AUTO:
            queue.acknowledged += 1
            self._forget(envelope, fx)
        else:
            connection.unacked[tag] = Unacked(consumer, envelope)
            consumer.unacked += 1
            queue.unacked += 1
        if consumer.ack_mode == AckMode.TRANSACTION:
            fx.deliveries.append(
                Delivery(
                    connection.id, consumer.subscription_json, tag, envelope.message, envelope.redelivered,
                    transaction=True, store_id=envelope.store_id,
                )
            )
        else:
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
        copy = dead_letter_copy(
            envelope.message,
            queue=queue.name,
            reason=reason,
            exchange=target,
            routing_key=queue.args.dead_letter_routing_key,
        )
        if copy is not None:
            self._route_and_enqueue(copy, fx, now, depth + 1)


def _age(published_at: str, wall_now: float | None) -> float:
    """Seconds since `published_at` (docs/protocol.md's ISO form), 0 when unknown."""
    if wall_now is None:
        return 0.0
    try:
        published = datetime.fromisoformat(published_at).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, wall_now - published)
