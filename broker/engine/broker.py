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

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import chain
from typing import Any

from .backlog import Backlog
from .browse import key_of
from .deadletter import MAX_DEAD_LETTER_DEPTH, dead_letter_copy, is_death_cycle
from .errors import Conflict, Forbidden, LimitExceeded, NotFound, PreconditionFailed
from .exchanges import Exchange, ExchangeSpec, delay_of
from .jsoncodec import utf8_size
from .messages import (
    NO_EFFECTS,
    BacklogRows,
    Cancelled,
    Delivery,
    Effects,
    EffectsBuilder,
    Envelope,
    InDoubt,
    LoadRequest,
    Message,
    StoredCopy,
    delivery_headers,
    expiration_of,
    make_message,
)
from .names import DEFAULT_EXCHANGE, held_for, holding_queue
from .queues import (
    AckMode,
    Connection,
    Consumer,
    Overflow,
    QueueSpec,
    QueueState,
    Unacked,
    check_prefetch,
    delivery_cost,
    message_bytes,
)
from .routing import BindingSpec, Routing
from .rules import binding_arguments, check_not_reserved, integer_field, refuse_holding_queue


@dataclass(slots=True)  # made per message: not frozen, whose __init__ costs 4x (object.__setattr__ per field); never mutated
class Published:
    routed: int
    effects: Effects
    # A queue it routed to that refused it, full with `reject-publish(-dlx)`: the publisher
    # is told (RabbitMQ's nack), though the other queues took it.
    refused_by: str | None = None


@dataclass(slots=True)
class Planned:
    """A message routed but not enqueued: its targets (queue, store id or None) and the
    copies to commit before it is enqueued."""

    message: Message
    targets: list[tuple[str, int | None]]
    copies: list[StoredCopy]


@dataclass(frozen=True, slots=True)
class Relocated:
    """What a browser action did: messages taken (deleted, moved or copied), those left as
    they were (`skipped`), the queues the copies reached, and the effects."""

    taken: int
    skipped: int
    routed: int
    effects: Effects


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
        self._refused_by: str | None = None  # the publish under way: a full queue that refused it
        self.default_published = 0  # of those, to the default exchange (the others count on theirs)
        self.default_unroutable = 0
        # Queues with a message TTL or `expires`: the only ones `tick` looks at, so its
        # cost follows them, not the number of queues. `_expiring`: queues given a message
        # with a TTL of its own (`expiration`), looked at until they are empty.
        self._timed: set[str] = set()
        self._expiring: set[str] = set()
        self._holding: set[str] = set()  # delayed exchanges' holding queues with messages waiting
        # MAX_QUEUES and MAX_BINDINGS (README, "Limits") for what the router makes itself,
        # a subscription's private queue; None: no limit. The stored topology is checked
        # by the services before it is written, and always loads.
        self.max_queues: int | None = None
        self.max_bindings: int | None = None
        # MAX_PRIVATE_QUEUES_PER_CONNECTION: the private queues one connection may hold, so
        # that no client alone can fill MAX_QUEUES and refuse everyone's declarations; None:
        # no limit.
        self.max_private_queues: int | None = None
        # Messages of a durable queue kept in memory, its window (backlog.py); None: all.
        self.window: int | None = None
        # Bytes (`delivery_cost`) a connection may have delivered and not yet written to its
        # socket, for subscriptions to a named queue; None: no flow control (queues.py, `Connection`).
        self.credit: int | None = None
        # Stored copies with a lower id were stored before this start, and may have been
        # delivered before it: they come back redelivered (at-least-once).
        self.restored_below = 0
        self._epochs = 0
        # `now` plus this is the wall clock's time, seconds since the epoch: the time of a
        # death in `x-death`. The shell, whose `now` is a monotonic clock, keeps it up to date;
        # 0.0: `now` is the wall clock's time already.
        self.wall_offset = 0.0

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
        self._epochs += 1
        self.queues[spec.name] = QueueState(spec, now, self._epochs)  # parses the arguments first
        self._expiring.discard(spec.name)  # a queue of that name deleted earlier
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
            existing.keep_ready(lambda envelope: True)  # the container its arguments need (priorities, bytes)
        existing.spec = spec  # the stored row may be a new one with the same properties
        self._track_timers(existing)
        fx = EffectsBuilder()
        self._enforce_length(existing, fx, now)
        self._drain(existing, fx, now)  # new arguments may give a consumer room (no single active one now)
        return fx.build()

    def redeclare_queue(self, name: str, row_id: int, *, now: float) -> None:
        """A declaration found the queue stored in that row: a use of it (its `expires`
        starts again), as `declare_queue` counts one of an identical queue."""
        queue = self.queues.get(name)
        if queue is not None and queue.spec.row_id == row_id:
            queue.last_used = now

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
        if not spec.to_exchange:
            refuse_holding_queue(spec.destination)
        return self.routing.bind(spec, queues=self.queues)

    def unbind(self, spec: BindingSpec) -> bool:
        """True when a binding was removed; False when there was none."""
        return self.routing.unbind(spec)

    # -- publishing ----------------------------------------------------

    def publish(self, message: Message, *, now: float) -> Published:
        exchange = None if message.exchange == DEFAULT_EXCHANGE else self.routing.exchange(message.exchange)
        fx = EffectsBuilder()
        self._refused_by = None
        routed = self._hold_or_route(exchange, message, fx, now, depth=0)
        self._count_publish(exchange, routed)
        return Published(routed, fx.build(), self._refused_by)

    def _hold_or_route(
        self, exchange: Exchange | None, message: Message, fx: EffectsBuilder, now: float, depth: int,
        *, dead_letter: bool = False,
    ) -> int:
        """A message to a delayed exchange with an `x-delay` waits in its holding queue (routed
        later, `release_due`); any other is routed and enqueued now. How many queues took it."""
        holding = self._holding_queue(exchange, message)
        if holding is None:
            return self._route_and_enqueue(message, fx, now, depth, dead_letter=dead_letter)
        self._enqueue(holding, message, self._store_copy(holding, message, fx.to_persist), fx, now, depth, None)
        return 1

    def _holding_queue(self, exchange: Exchange | None, message: Message) -> QueueState | None:
        """Where a message to a delayed exchange with a positive `x-delay` waits; None when it
        goes at once (no delay, or an exchange declared without its holding queue)."""
        if exchange is None or not exchange.delayed or not message.headers or delay_of(message.headers) <= 0:
            return None
        return self.queues.get(holding_queue(exchange.spec.name))

    def _store_copy(self, queue: QueueState, message: Message, to_persist: list[StoredCopy]) -> int | None:
        if not queue.stores(message.persistent):
            return None
        store_id = self.next_store_id
        self.next_store_id += 1
        to_persist.append(StoredCopy(store_id, queue.name, message))
        return store_id

    @property
    def has_delays(self) -> bool:
        """Do delayed messages wait (for their exchange's holding queue)?"""
        return bool(self._holding)

    def next_due(self) -> float | None:
        """When the soonest delayed message is due (loop time), if any waits."""
        due: float | None = None
        for name in list(self._holding):
            queue = self.queues.get(name)
            if queue is None or not queue.ready:
                self._holding.discard(name)
                continue
            head = queue.ready[0].expires_at or 0.0
            due = head if due is None else min(due, head)
        return due

    def release_due(self, *, now: float) -> Effects:
        """Route the delayed messages whose time has come, through their exchange's bindings;
        each one's row in its holding queue is deleted in the same commit as its copies."""
        fx = EffectsBuilder()
        for name in list(self._holding):
            queue = self.queues.get(name)
            if queue is None:
                continue
            ready = queue.ready
            while ready and (ready[0].expires_at or 0.0) <= now:
                envelope = ready.popleft()
                self._forget(envelope, fx)
                queue.delivered += 1
                queue.acknowledged += 1
                # From the exchange that held it: the one published to, or one that an
                # exchange-to-exchange binding reached.
                exchange = held_for(name)
                if exchange is not None and self.has_exchange(exchange):
                    self._route_and_enqueue(envelope.message, fx, now, depth=0, via=exchange)
        return fx.build()

    def _count_publish_to(self, exchange: str, routed: int) -> None:
        """`_count_publish` for an exchange named (one deleted meanwhile counts nowhere)."""
        self._count_publish(None if exchange == DEFAULT_EXCHANGE else self.routing.exchanges.get(exchange), routed)

    def _count_publish(self, exchange: Exchange | None, routed: int) -> None:
        self.published += 1
        if exchange is None:  # the default exchange
            self.default_published += 1
            if not routed:
                self.default_unroutable += 1
        else:
            exchange.published += 1
            if not routed:
                exchange.unroutable += 1

    def _route_and_enqueue(
        self, message: Message, fx: EffectsBuilder, now: float, depth: int, via: str | None = None,
        *, dead_letter: bool = False,
    ) -> int:
        """Route `message` from its exchange (or from `via`) and enqueue its copies; a dead
        letter skips each queue it would reach in a loop of deaths with no rejection in it."""
        routed = 0
        queues = self.queues
        own_ttl = expiration_of(message.headers)  # once, not per queue
        exchange = message.exchange if via is None else via
        for name in self.routing.route(exchange, message.routing_key, message.headers, queues):
            if dead_letter and is_death_cycle(message.headers, name):
                continue
            queue = queues[name]
            if self._rejects(queue, message):
                self._refuse(queue, message, fx, now, depth)
                continue
            store_id = None
            if queue.stores(message.persistent):  # `_store_copy`, inlined: once per queue reached
                store_id = self.next_store_id
                self.next_store_id += 1
                fx.to_persist.append(StoredCopy(store_id, name, message))
            self._enqueue(queue, message, store_id, fx, now, depth, own_ttl)
            routed += 1
        return routed

    def plan(self, message: Message) -> Planned:
        """Where a message goes, and its copies to store, without enqueuing it yet: the
        outbox's messages are stored (and their outbox rows removed) in one commit
        first, then `publish_planned` enqueues them. An exchange gone since the
        message was accepted routes it nowhere."""
        targets: list[tuple[str, int | None]] = []
        copies: list[StoredCopy] = []
        exchange = self.routing.exchanges.get(message.exchange)
        holding = self._holding_queue(exchange, message)
        if holding is not None:
            return Planned(message, [(holding.name, self._store_copy(holding, message, copies))], copies)
        for name in self.routing.route(message.exchange, message.routing_key, message.headers, self.queues):
            targets.append((name, self._store_copy(self.queues[name], message, copies)))
        return Planned(message, targets, copies)

    def publish_planned(self, planned: Planned, *, now: float) -> Published:
        """Enqueue a planned message, its copies now stored. A queue deleted meanwhile, or
        full with `reject-publish`, does not take it: its stored copy is deleted."""
        fx = EffectsBuilder()
        routed = 0
        for name, store_id in planned.targets:
            queue = self.queues.get(name)
            if queue is not None and store_id is not None and queue.rows_deleted[0] < store_id < queue.rows_deleted[1]:
                # Purged while its copy was being committed: the purge's delete of the backlog's
                # rows takes its row too, so it is purged with them (deleted again in case the
                # purge's delete came first).
                fx.to_delete.append(store_id)
                continue
            if queue is None or self._rejects(queue, planned.message):
                if queue is not None:  # nobody to tell: the outbox's publisher has committed
                    self._refuse(queue, planned.message, fx, now, 1)
                if store_id is not None:
                    fx.to_delete.append(store_id)
                continue
            self._enqueue(queue, planned.message, store_id, fx, now, 0, expiration_of(planned.message.headers))
            routed += 1
        self._count_publish_to(planned.message.exchange, routed)
        return Published(routed, fx.build())

    @staticmethod
    def _rejects(queue: QueueState, message: Message) -> bool:
        """A queue with `reject-publish(-dlx)` takes no message that would put it over
        `x-max-length` messages or `x-max-length-bytes`, even one a consumer has room for:
        RabbitMQ checks the limit before it tries to deliver. (`drop-head` takes it: a
        consumer with room gets it, else the head is dropped.)"""
        args = queue.args
        if args.overflow is Overflow.DROP_HEAD:
            return False
        limit, byte_limit = args.max_length, args.max_length_bytes
        return (limit is not None and queue.depth >= limit) or (
            byte_limit is not None and queue.ready_bytes() + message_bytes(message) > byte_limit
        )

    def _refuse(self, queue: QueueState, message: Message, fx: EffectsBuilder, now: float, depth: int) -> None:
        """A full queue refuses a message; with `reject-publish-dlx` it is dead-lettered too."""
        queue.refused += 1
        if depth == 0 and self._refused_by is None:
            self._refused_by = queue.name
        if queue.args.overflow is Overflow.REJECT_PUBLISH_DLX:
            self._dead_letter(queue, Envelope(message, None), "maxlen", fx, now, depth)

    def _enqueue(
        self,
        queue: QueueState,
        message: Message,
        store_id: int | None,
        fx: EffectsBuilder,
        now: float,
        depth: int,
        own_ttl: int | None,
    ) -> None:
        """`own_ttl`: the message's own TTL (`expiration`), if it has one."""
        ttl = queue.args.message_ttl
        if queue.holding:  # a delayed exchange's holding queue: when it is due
            ttl = delay_of(message.headers)  # `expires_at` says when it is due there, not when it expires
            self._holding.add(queue.name)
        elif own_ttl is not None:
            ttl = _shorter(ttl, own_ttl)
            self._expiring.add(queue.name)
        expires_at = None if ttl is None else now + ttl / 1000
        self._next_seq += 1
        envelope = Envelope(message, store_id, False, expires_at, self._next_seq)
        queue.enqueued += 1
        window = self.window
        # A queue with a message TTL stays whole in memory: its copies' expiry counts from
        # their enqueueing, which their rows do not keep (a restart counts from publication).
        # A backlog starts above every copy in memory: an outbox's copy, whose id was given out
        # when it was planned, may come after copies with higher ids, and a backlog starting
        # below them would bring them back with its reads. It joins the window instead.
        if queue.backlog is not None or (
            store_id is not None
            and store_id > queue.highest_stored
            and window is not None
            and len(queue.ready) >= window
            and ttl is None
            and not queue.whole_in_memory  # a priority queue's order, a byte limit: every message counts
        ):
            self._put_behind(queue, envelope)
        else:
            queue.ready.append(envelope)
            if store_id is not None and store_id > queue.highest_stored:
                queue.highest_stored = store_id
            self._drain(queue, fx, now, depth)
        self._enforce_length(queue, fx, now, depth)

    def _put_behind(self, queue: QueueState, envelope: Envelope) -> None:
        """Into the backlog: a stored copy is left to its row, any other waits in memory."""
        backlog = queue.backlog
        store_id = envelope.store_id
        if backlog is None:
            assert store_id is not None  # a backlog starts with a stored copy
            backlog = queue.backlog = Backlog(after=store_id - 1)
        if store_id is not None and store_id > backlog.after:
            backlog.count += 1
            if backlog.loading and store_id >= backlog.below:
                backlog.later += 1
        else:
            backlog.held.append((self.next_store_id, envelope))

    # -- consuming -----------------------------------------------------

    def open_connection(self, *, first_tag: int = 1) -> int:
        """A new connection; its first delivery gets `first_tag`, and acks of lower tags
        (a previous router's, whose messages come back redelivered) are ignored."""
        connection_id = self._next_connection
        self._next_connection += 1
        self.connections[connection_id] = Connection(connection_id, first_tag, self.credit or 0)
        return connection_id

    def written(self, connection_id: int, cost: int, *, now: float) -> Effects:
        """The transport has written deliveries of this `cost` to the connection's socket:
        give it back as credit, and deliver on to its subscriptions that waited for it."""
        connection = self.connections.get(connection_id)
        if connection is None or cost <= 0:
            return NO_EFFECTS
        was_blocked = connection.credit <= 0
        connection.credit += cost
        if not was_blocked or connection.credit <= 0:
            return NO_EFFECTS
        fx = EffectsBuilder()
        held = [consumer for consumer in connection.consumers.values() if consumer.flow]
        if held:
            # Each turn starts with the next subscription: the first would otherwise take
            # all the credit given back, for as long as its queue holds enough.
            start = connection.turn % len(held)
            connection.turn += 1
            for consumer in held[start:] + held[:start]:  # a deleted queue's consumers are gone
                if connection.credit <= 0:
                    break
                self._drain(consumer.queue, fx, now)
        return fx.build()

    def close_connection(self, connection_id: int, *, now: float) -> Effects:
        connection = self.connections.get(connection_id)
        fx = EffectsBuilder()
        if connection is None:
            return fx.build()
        # Take back every unacknowledged message and detach every subscription before
        # draining: a message given back must not go to another subscription of this
        # closing connection, and it returns in delivery order (docs/protocol.md, "Delivery").
        returned: dict[str, tuple[QueueState, list[Envelope]]] = {}
        doubted: dict[str, list[int]] = {}
        for pending in connection.unacked.values():  # tag order is delivery order
            state = pending.settle()
            if pending.consumer.ack_mode is AckMode.TRANSACTION and pending.envelope.store_id is not None:
                self._hold_in_doubt(state, pending.envelope, doubted)
            else:
                returned.setdefault(state.name, (state, []))[1].append(pending.envelope)
        connection.unacked.clear()
        consumers = list(connection.consumers.values())
        for consumer in consumers:
            self._detach_consumer(consumer, now)
        fx.in_doubt.extend(InDoubt(name, tuple(ids)) for name, ids in doubted.items())
        for state, envelopes in returned.values():
            self._give_back(state, envelopes, fx, now)
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
        self._check_subscription(connection, subscription, subscription_json, prefetch)
        state = self._queue(queue)
        owner = state.spec.exclusive_to
        if owner is not None and owner != connection_id:
            raise Forbidden(f"queue {queue!r} is exclusive to another connection")
        if state.holding:
            raise Forbidden(f"queue {queue!r} holds a delayed exchange's messages until they are due: not consumed")
        # Held back by the connection's credit: what waits stays in the queue, for this
        # subscription once its socket takes more, or for another one with room.
        flow = self.credit is not None and ack_mode is not AckMode.TRANSACTION
        return self._add_consumer(connection, subscription, subscription_json, state, ack_mode, prefetch, now, flow)

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
        """Subscribe through a private queue: exclusive, auto-delete, bound to `exchange`.
        The default exchange binds nothing: it reaches the queue by its name already (a
        reply queue, whose name the subscriber hands to whoever answers)."""
        connection = self._connection(connection_id)
        self._check_subscription(connection, subscription, subscription_json, prefetch)
        if exchange != DEFAULT_EXCHANGE:
            binding_arguments(self.routing.exchange(exchange).kind, arguments)  # before the queue exists
        if queue in self.queues:
            raise Conflict(f"queue {queue!r} already exists")
        self._check_room(connection)
        spec = QueueSpec(name=queue, durable=False, auto_delete=True, exclusive_to=connection_id)
        self.declare_queue(spec, now=now, reserved_ok=True)
        if exchange != DEFAULT_EXCHANGE:
            self.bind(BindingSpec(exchange, queue, binding_key, arguments))
        state = self.queues[queue]
        # Not held back by credit: its private queue would grow in memory for a subscriber
        # that stops reading, who is closed as a slow consumer instead (transport/outbox.py).
        return self._add_consumer(connection, subscription, subscription_json, state, ack_mode, prefetch, now, False)

    def _check_room(self, connection: Connection) -> None:
        """Refuse a private queue and its binding past the connection's share of private
        queues (MAX_PRIVATE_QUEUES_PER_CONNECTION), MAX_QUEUES or MAX_BINDINGS."""
        held = len(connection.exclusive_queues)
        if self.max_private_queues is not None and held >= self.max_private_queues:
            raise LimitExceeded(
                f"the connection holds {held} private queues, its limit (MAX_PRIVATE_QUEUES_PER_CONNECTION)"
            )
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
            if pending.consumer.ack_mode is not AckMode.TRANSACTION:
                self._forget(pending.envelope, fx)
            # else: its row is gone already, deleted by the consumer's own transaction
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
            queue.nacked += 1
            if requeue:
                to_requeue.setdefault(queue.name, (queue, []))[1].append(pending.envelope)
            else:
                self._dead_letter(queue, pending.envelope, "rejected", fx, now, depth=0)
                to_requeue.setdefault(queue.name, (queue, []))
        for queue, envelopes in to_requeue.values():
            self._give_back(queue, envelopes, fx, now)
            self._drain(queue, fx, now)
        return fx.build()

    # -- polling and maintenance ---------------------------------------

    def get(
        self, queue: str, *, count: int, ack: bool, now: float, holder: int | None = None
    ) -> tuple[list[tuple[Message, bool]], Effects]:
        """Take up to `count` ready messages (docs/protocol.md, POST /api/queues/{name}/get/).
        `holder`: a connection that holds the messages taken (`ack`) unacknowledged, as a
        subscriber would, until the shell acks them (the answer reached its client) or closes
        the connection (it did not: they go back to the queue, redelivered)."""
        state = self._queue(queue)
        if state.holding:
            raise Forbidden(f"queue {queue!r} holds a delayed exchange's messages until they are due: not taken by get")
        integer_field("count", count, low=1)
        fx = EffectsBuilder()
        state.last_used = now
        self._expire_head(state, fx, now)
        taken: list[tuple[Message, bool]] = []
        if ack:
            # Never among the queue's consumers: it is delivered nothing, only holds.
            held = None if holder is None else Consumer(self._connection(holder), "", "", state, AckMode.CLIENT, 0)
            while state.ready and len(taken) < count:
                envelope = state.ready.popleft()
                taken.append((_as_taken(envelope), envelope.redelivered))
                if held is None:
                    self._forget(envelope, fx)
                else:
                    self._hold(held, envelope)
                self._expire_head(state, fx, now)  # one behind it may be past its TTL (priorities, its own)
            if held is None:
                state.acknowledged += len(taken)
        else:
            for envelope in state.ready:
                if len(taken) == count:
                    break
                if envelope.expires_at is not None and envelope.expires_at <= now:
                    continue  # expired: dead-lettered once it reaches the head, never returned
                taken.append((_as_taken(envelope), envelope.redelivered))
                envelope.redelivered = True  # they stay at the head and come out next as redeliveries
        state.delivered += len(taken)
        state.redelivered += sum(1 for _, redelivered in taken if redelivered)
        self._want_load(state, fx)
        return taken, fx.build()

    def purge(self, queue: str) -> tuple[int, Effects]:
        state = self._queue(queue)
        fx = EffectsBuilder()
        purged = state.depth
        for envelope in state.ready:
            self._forget(envelope, fx)
        state.ready.clear()
        self._drop_backlog(state, fx)
        return purged, fx.build()

    def tick(self, *, now: float) -> Effects:
        """Expire messages past their TTL and queues unused past `expires` (delayed messages
        are released by `release_due`, which the shell calls when the soonest is due)."""
        fx = EffectsBuilder()
        for name in list(self._timed | self._expiring):
            queue = self.queues.get(name)
            if queue is None:
                self._expiring.discard(name)
                continue
            if queue.holding:  # its heads are due, not expired: `release_due`'s
                self._expiring.discard(name)
            elif queue.args.message_ttl is not None or name in self._expiring:
                self._expire_head(queue, fx, now)
                self._want_load(queue, fx)
                # Kept while any of its messages is out with a consumer: it may be given back.
                if not queue.ready and queue.backlog is None and not queue.unacked:
                    self._expiring.discard(name)
            expires = queue.args.expires
            if expires is not None and not queue.consumers and now - queue.last_used >= expires / 1000:
                self._delete_queue(queue, fx, reason=f"queue {queue.name!r} expired")
        return fx.build()

    def restore(self, queue: str, stored: int) -> Effects:
        """At start-up: `stored` copies of `queue` are in the database, none in memory
        yet. Returns the read of its window."""
        state = self._queue(queue)
        fx = EffectsBuilder()
        if stored > 0 and state.backlog is None:
            state.backlog = Backlog(after=0, count=stored)
            self._want_load(state, fx)
        return fx.build()

    def unstore(self, store_ids: Collection[int]) -> None:
        """The database refused these copies for good: those in memory keep no store id,
        so that no delivery names a row that never existed (a transaction-ack consumer
        takes a missing row for a message handled before) and nothing deletes one. Rare:
        a plain look through every queue and every unacknowledged delivery."""
        envelopes = chain(
            (envelope for queue in self.queues.values() for envelope in queue.ready),
            (envelope for queue in self.queues.values() if queue.backlog is not None for _, envelope in queue.backlog.held),
            (pending.envelope for connection in self.connections.values() for pending in connection.unacked.values()),
            (envelope for queue in self.queues.values() for envelope in queue.in_doubt.values()),
        )
        for envelope in envelopes:
            if envelope.store_id is not None and envelope.store_id in store_ids:
                envelope.store_id = None

    def load_window(
        self, queue: str, epoch: int, rows: Iterable[tuple[int, Message]], *, now: float, wall_now: float | None = None
    ) -> Effects:
        """The answer to a `LoadRequest`: its rows, in store-id order, go behind the
        window's messages (a short answer means that the rest are gone). With
        `wall_now` (seconds since the epoch), a message's TTL counts from when it was
        published. An answer for a queue purged or deleted since it was asked changes
        nothing."""
        state = self.queues.get(queue)
        if state is None or state.epoch != epoch or state.backlog is None or not state.backlog.loading:
            return NO_EFFECTS
        backlog = state.backlog
        asked, backlog.loading = backlog.loading, 0
        fx = EffectsBuilder()
        ttl = state.args.message_ttl
        read = 0
        for store_id, message in rows:
            read += 1
            if store_id <= backlog.after:
                continue
            if store_id in backlog.skip:  # taken out by the browser; its delete is on its way
                backlog.skip.discard(store_id)
                backlog.after = store_id
                continue
            while backlog.held and backlog.held[0][0] <= store_id:
                self._admit(state, backlog.held.popleft()[1], fx, now)
            if state.holding:  # a delayed message: due its delay after publication
                shortest: int | None = delay_of(message.headers)
                self._holding.add(queue)
            else:
                own = expiration_of(message.headers)
                if own is not None:
                    self._expiring.add(queue)
                shortest = ttl if own is None else _shorter(ttl, own)
            expires_at = None if shortest is None else now + shortest / 1000 - _age(message.published_at, wall_now)
            backlog.count -= 1
            backlog.after = store_id
            self._admit(state, Envelope(message, store_id, store_id < self.restored_below, expires_at), fx, now)
        if read < asked or backlog.count <= 0:
            # Every row below `below` is read (copies the database refused were never
            # there): what is left came in since the read was asked.
            backlog.count = backlog.later
        if backlog.skip:
            # Rows the browser took out whose deletes committed before a read came to them:
            # no read meets them again once it has read past them, and `relocate` takes no
            # row at or below `after`. (Not those a short answer leaves out above `after`:
            # skip is what keeps a browser action from an older listing taking them again.)
            after = backlog.after
            backlog.skip = {store_id for store_id in backlog.skip if store_id > after}
        while backlog.held and (backlog.count == 0 or backlog.holds_head()):
            self._admit(state, backlog.held.popleft()[1], fx, now)
        if backlog.empty():
            state.backlog = None
        if (ttl is not None or queue in self._expiring) and not state.holding:
            self._expire_head(state, fx, now)  # read past their time: gone now, not at the next tick
        self._drain(state, fx, now)
        self._want_load(state, fx)
        return fx.build()

    def relocate(
        self,
        queue: str,
        selection: Sequence[tuple[str, Message | None]],
        *,
        epoch: int | None,
        target: Callable[[Message], tuple[str, str] | None] | None,
        keep: bool = False,
        now: float,
    ) -> Relocated:
        """The message browser's actions on ready messages, named by their keys (browse.py):
        delete them (`target` None), or publish a copy of each where `target(message)` says
        (exchange, routing key) and, unless `keep`, remove the original: copies and removals
        are one set of effects, so their rows are written in one commit. A backlog row's
        message is the one the shell read (the second of its pair); `epoch`: the backlog's
        when the shell read it. A message no longer in the queue, or whose copy would reach
        no exchange or no queue, is left as it is and counted as skipped."""
        state = self._queue(queue)
        fx = EffectsBuilder()
        by_key = {key_of(envelope): envelope for envelope in state.ready}
        backlog = state.backlog
        # While a max-length owes drops from the backlog's head, which of its messages are
        # gone already hangs on their order, which only the database knows: none is taken
        # (taking one of those would leave the drop to a message that must stay).
        owing = backlog is not None and backlog.owed > 0
        held = {key_of(envelope): envelope for _, envelope in backlog.held} if backlog is not None and not owing else {}
        # First what each selected message is and where its copy goes (nothing changes yet)...
        chosen: list[tuple[str, Message, Envelope | None, tuple[str, str] | None]] = []
        seen: set[str] = set()
        skipped = 0
        for key, read in selection:
            if key in seen:
                continue
            seen.add(key)
            envelope = by_key.get(key) or held.get(key)
            message = envelope.message if envelope is not None else None
            if message is None and read is not None and key[0] == "s" and backlog is not None and not owing \
                    and epoch == state.epoch:
                store_id = int(key[1:])
                if store_id > backlog.after and store_id not in backlog.skip:
                    message = read
            if message is None:
                skipped += 1
                continue
            where = None
            if target is not None:
                where = target(message)
                if where is None or not self.routing.route(where[0], where[1], message.headers, self.queues):
                    skipped += 1  # no origin, no such exchange, or it would reach no queue: left there
                    continue
            chosen.append((key, message, envelope, where))
        # ...then the originals leave (so that a copy routed back into this queue neither
        # pushes out nor meets its own original), then the copies go.
        if not keep and chosen:
            taken = {key for key, _, _, _ in chosen}
            for key, _, envelope, _ in chosen:
                if envelope is not None:
                    self._forget(envelope, fx)
                else:
                    assert backlog is not None
                    store_id = int(key[1:])
                    backlog.count -= 1
                    backlog.skip.add(store_id)
                    fx.to_delete.append(store_id)
            state.keep_ready(lambda e: key_of(e) not in taken)
            if backlog is not None:
                backlog.held = deque(item for item in backlog.held if key_of(item[1]) not in taken)
                if backlog.count == 0 and not backlog.loading:
                    # No row left to read: what waits in memory behind them comes forward now
                    # (no read will come to admit it).
                    while backlog.held:
                        self._admit(state, backlog.held.popleft()[1], fx, now)
                if backlog.empty():
                    state.backlog = None
                    self._epochs += 1  # a read under way answers a backlog that is gone
                    state.epoch = self._epochs
        routed_total = 0
        for _, message, _, where in chosen:
            if where is None:
                continue
            exchange, routing_key = where
            copy = replace(message, exchange=exchange, routing_key=routing_key, wire=None, stomp_wire=None, cost=-1)
            routed = self._hold_or_route(self.routing.exchanges.get(exchange), copy, fx, now, depth=0)
            self._count_publish_to(exchange, routed)
            routed_total += routed
            if not routed and not keep and queue in self.queues:
                # Every queue it routed to refused it (full, reject-publish): back into its own
                # queue, at the tail, rather than lost.
                self._enqueue(state, message, self._store_copy(state, message, fx.to_persist), fx, now, 0, None)
        if not keep and chosen and queue in self.queues:
            self._drain(state, fx, now)  # what came forward from the backlog; asks for the next rows
        return Relocated(len(chosen), skipped, routed_total, fx.build())

    def queue_counts(self, name: str) -> QueueCounts | None:
        queue = self.queues.get(name)
        if queue is None:
            return None
        return QueueCounts(queue.depth, queue.unacked, len(queue.consumers))

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
    def _check_subscription(connection: Connection, subscription: str, subscription_json: str, prefetch: int) -> None:
        if subscription in connection.consumers:
            raise Conflict(f"subscription {subscription_json} already exists on this connection")
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
        flow: bool,
    ) -> Effects:
        consumer = Consumer(connection, subscription, subscription_json, queue, ack_mode, prefetch, flow)
        connection.consumers[subscription] = consumer
        queue.consumers.append(consumer)
        queue.had_consumer = True
        queue.last_used = now
        fx = EffectsBuilder()
        self._drain(queue, fx, now)
        return fx.build()

    def _remove_consumer(self, consumer: Consumer, fx: EffectsBuilder, now: float) -> None:
        returned = self._detach_consumer(consumer, now)
        if consumer.ack_mode is AckMode.TRANSACTION:
            doubted: dict[str, list[int]] = {}
            for envelope in [envelope for envelope in returned if envelope.store_id is not None]:
                self._hold_in_doubt(consumer.queue, envelope, doubted)
            returned = [envelope for envelope in returned if envelope.store_id is None]
            fx.in_doubt.extend(InDoubt(name, tuple(ids)) for name, ids in doubted.items())
        self._give_back(consumer.queue, returned, fx, now)
        self._release(consumer.queue, fx, now)

    @staticmethod
    def _hold_in_doubt(queue: QueueState, envelope: Envelope, doubted: dict[str, list[int]]) -> None:
        """A stored copy a transaction-ack consumer held when it went away: its own
        transaction may have deleted the row (handled) just before, and a copy given back
        could then be dead-lettered (TTL, delivery limit, max-length) though handled. It
        waits, counted as unacknowledged, until the shell has looked for its row."""
        assert envelope.store_id is not None
        queue.in_doubt[envelope.store_id] = envelope
        queue.unacked += 1
        doubted.setdefault(queue.name, []).append(envelope.store_id)

    def settle_in_doubt(self, queue: str, store_ids: Sequence[int], stored: Collection[int], *, now: float) -> Effects:
        """The shell looked for the rows of copies held in doubt (`Effects.in_doubt`):
        those `stored` go back to the queue, redelivered; the others were handled, their
        rows deleted by their consumer's transaction."""
        state = self.queues.get(queue)
        if state is None:
            return NO_EFFECTS  # deleted meanwhile, with its copies
        back: list[Envelope] = []
        for store_id in store_ids:
            envelope = state.in_doubt.pop(store_id, None)
            if envelope is None:
                continue  # a queue of the same name declared anew
            state.unacked -= 1
            if envelope.store_id is None or store_id in stored:  # None: the database refused it (`unstore`)
                back.append(envelope)
            else:
                state.acknowledged += 1
        fx = EffectsBuilder()
        self._give_back(state, back, fx, now)
        self._drain(state, fx, now)
        return fx.build()

    def _give_back(self, queue: QueueState, envelopes: list[Envelope], fx: EffectsBuilder, now: float) -> None:
        """Unacknowledged messages back to the head, redelivered; with `x-delivery-limit`,
        one given back more times than the limit is dead-lettered instead (RabbitMQ's
        quorum queues: a poison message does not loop for ever). A `drop-head` queue they
        put over its length drops from the head at once, as RabbitMQ does after a requeue
        (not at the next publish, with messages never given back); `reject-publish` keeps
        them, as RabbitMQ does. An auto-delete queue its last subscriber left is deleted
        next: RabbitMQ deletes it without requeueing, so nothing is dropped from it."""
        for envelope in envelopes:
            envelope.returns += 1
        limit = queue.args.delivery_limit
        spent: list[Envelope] = []
        if limit is not None:
            spent = [envelope for envelope in envelopes if envelope.returns > limit]
            envelopes = [envelope for envelope in envelopes if envelope.returns <= limit]
        # The kept ones back first: the queue is in order again before dead-lettering routes
        # anything (which enqueues and delivers in the queues it reaches).
        queue.requeue(envelopes)
        for envelope in spent:
            self._dead_letter(queue, envelope, "delivery_limit", fx, now, 0)
        auto_deleted = queue.spec.auto_delete and queue.had_consumer and not queue.consumers
        if queue.args.overflow is Overflow.DROP_HEAD and not auto_deleted:
            self._enforce_length(queue, fx, now)

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
        # What gets took into holders (`get`), which are no consumers of the queue: gone with
        # it too, not given back later into (or dead-lettered from) a queue that is no more.
        held = queue.unacked - len(queue.in_doubt) - sum(consumer.unacked for consumer in queue.consumers)
        if held > 0:
            for connection in self.connections.values():
                for tag in [t for t, pending in connection.unacked.items() if pending.consumer.queue is queue]:
                    self._forget(connection.unacked.pop(tag).envelope, fx)
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
        for envelope in queue.in_doubt.values():
            self._forget(envelope, fx)
        queue.in_doubt.clear()
        self._drop_backlog(queue, fx)
        owner = queue.spec.exclusive_to
        if owner is not None and owner in self.connections:
            self.connections[owner].exclusive_queues.discard(name)
        del self.queues[name]
        self._timed.discard(name)
        self._expiring.discard(name)
        if owner is None:  # private queues were never stored
            fx.deleted_queues.append(name)
        if queue.spec.row_id is not None:
            fx.deleted_rows.append(queue.spec.row_id)

    @staticmethod
    def _hold(consumer: Consumer, envelope: Envelope) -> None:
        connection = consumer.connection
        connection.unacked[connection.next_tag] = Unacked(consumer, envelope)
        connection.next_tag += 1
        consumer.unacked += 1
        consumer.queue.unacked += 1

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
        if envelope.redelivered:
            queue.redelivered += 1
        if consumer.ack_mode == AckMode.AUTO:
            queue.acknowledged += 1
            self._forget(envelope, fx)
        else:
            connection.unacked[tag] = Unacked(consumer, envelope)
            consumer.unacked += 1
            queue.unacked += 1
        if consumer.ack_mode == AckMode.TRANSACTION:  # never held back by credit (`consume`)
            fx.deliveries.append(
                Delivery(
                    connection.id, consumer.subscription_json, tag, envelope.message, envelope.redelivered,
                    transaction=True, store_id=envelope.store_id, returns=envelope.returns,
                )
            )
            return
        cost = 0
        if consumer.flow:
            cost = delivery_cost(envelope.message) + utf8_size(consumer.subscription_json)  # the id is the client's
            connection.credit -= cost
        fx.deliveries.append(
            Delivery(
                connection.id, consumer.subscription_json, tag, envelope.message, envelope.redelivered,
                returns=envelope.returns, cost=cost,
            )
        )

    def _drain(self, queue: QueueState, fx: EffectsBuilder, now: float, depth: int = 0) -> None:
        ready = queue.ready
        while ready and queue.consumers:
            consumer = queue.pick_consumer()
            if consumer is None:
                break
            envelope = ready.popleft()
            # Strictly past: a message whose TTL is 0 still goes to a consumer with room
            # when it arrives (as RabbitMQ); it expires once time has moved on.
            if envelope.expires_at is not None and envelope.expires_at < now:
                self._dead_letter(queue, envelope, "expired", fx, now, depth)
                continue
            self._deliver(consumer, envelope, fx)
        if queue.backlog is not None:
            self._want_load(queue, fx)

    def _want_load(self, queue: QueueState, fx: EffectsBuilder) -> None:
        """Ask for the backlog's next rows once the window is half empty."""
        backlog = queue.backlog
        if backlog is None or backlog.loading or backlog.count == 0:
            return
        window = self.window
        if window is None or queue.whole_in_memory:  # a priority queue, a byte limit: all of it
            limit = backlog.count
        elif len(queue.ready) > window // 2:
            return
        else:
            limit = window - len(queue.ready)
        backlog.loading = max(1, limit)
        backlog.below, backlog.later = self.next_store_id, 0
        fx.to_load.append(LoadRequest(queue.name, queue.epoch, backlog.after, backlog.below, backlog.loading))

    def _admit(self, queue: QueueState, envelope: Envelope, fx: EffectsBuilder, now: float) -> None:
        """A copy from the backlog to the window's tail, or dropped by a max-length it owes."""
        backlog = queue.backlog
        assert backlog is not None
        if backlog.owed:
            backlog.owed -= 1
            self._dead_letter(queue, envelope, "maxlen", fx, now, 0)
            return
        self._next_seq += 1
        envelope.seq = self._next_seq  # behind everything in the window, requeued ones too
        queue.ready.append(envelope)
        if envelope.store_id is not None and envelope.store_id > queue.highest_stored:
            queue.highest_stored = envelope.store_id

    def _drop_backlog(self, queue: QueueState, fx: EffectsBuilder) -> None:
        """Forget the backlog (a purge, a deletion); a read under way is ignored."""
        backlog = queue.backlog
        if backlog is None:
            return
        for _, envelope in backlog.held:
            self._forget(envelope, fx)
        if backlog.count:
            fx.backlog_deleted.append(BacklogRows(queue.name, backlog.after, self.next_store_id))
            queue.rows_deleted = (backlog.after, self.next_store_id)
        queue.backlog = None
        self._epochs += 1
        queue.epoch = self._epochs

    def _expire_head(self, queue: QueueState, fx: EffectsBuilder, now: float) -> None:
        ready = queue.ready
        while ready and ready[0].expires_at is not None and ready[0].expires_at <= now:
            self._dead_letter(queue, ready.popleft(), "expired", fx, now, 0)

    def _enforce_length(self, queue: QueueState, fx: EffectsBuilder, now: float, depth: int = 0) -> None:
        byte_limit = queue.args.max_length_bytes
        # With reject-publish the message that crossed the byte limit stays (as in RabbitMQ);
        # drop-head drops from the head. Such a queue is whole in memory: its head is in `ready`.
        if byte_limit is not None and queue.args.overflow is Overflow.DROP_HEAD:
            while queue.ready and queue.ready_bytes() > byte_limit:
                self._dead_letter(queue, queue.ready.popleft(), "maxlen", fx, now, depth)
        limit = queue.args.max_length
        if limit is None:
            return
        while queue.depth > limit:
            backlog = queue.backlog
            if queue.ready:
                self._dead_letter(queue, queue.ready.popleft(), "maxlen", fx, now, depth)
            elif backlog is None:
                return
            elif backlog.holds_head() or (backlog.held and backlog.count <= backlog.owed):
                self._dead_letter(queue, backlog.held.popleft()[1], "maxlen", fx, now, depth)
            elif backlog.count > backlog.owed:
                backlog.owed += 1  # the head is in the database: dropped as it is read
            else:
                break
        if queue.backlog is not None and queue.backlog.empty():
            queue.backlog = None
        if queue.backlog is not None:
            self._want_load(queue, fx)  # the window may be empty now

    def _dead_letter(
        self, queue: QueueState, envelope: Envelope, reason: str, fx: EffectsBuilder, now: float, depth: int
    ) -> None:
        """Drop a message, or republish it to the queue's dead-letter exchange."""
        self._forget(envelope, fx)
        target = queue.args.dead_letter_exchange
        if target is None or depth >= MAX_DEAD_LETTER_DEPTH or not self.has_exchange(target):
            queue.dropped += 1
            return
        copy = dead_letter_copy(
            envelope.message,
            queue=queue.name,
            reason=reason,
            exchange=target,
            routing_key=queue.args.dead_letter_routing_key,
            died_at=now + self.wall_offset,
        )
        queue.dead_lettered += 1
        # Through a delayed exchange too (a retry after a delay); a queue it reaches in a
        # loop of deaths with no rejection in it does not take it.
        self._hold_or_route(self.routing.exchanges.get(target), copy, fx, now, depth + 1, dead_letter=True)


def _shorter(queue_ttl: int | None, own_ttl: int) -> int:
    """A copy's TTL: the queue's or the message's own, whichever is shorter."""
    return own_ttl if queue_ttl is None else min(queue_ttl, own_ttl)


def _age(published_at: str, wall_now: float | None) -> float:
    """Seconds since `published_at` (docs/protocol.md's ISO form), 0 when unknown."""
    if wall_now is None:
        return 0.0
    try:
        published = datetime.fromisoformat(published_at).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, wall_now - published)


def _as_taken(envelope: Envelope) -> Message:
    """The message as `get` shows it: for a copy given back before, with how often
    (`x-delivery-count`, as deliveries show it)."""
    message = envelope.message
    if not envelope.returns:
        return message
    return make_message(
        message_id=message.message_id, exchange=message.exchange, routing_key=message.routing_key,
        body_json=message.body_json, headers=delivery_headers(message.headers, envelope.returns),
        persistent=message.persistent, published_at=message.published_at,
    )
