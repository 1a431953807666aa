"""Queue services: declare, delete, purge and poll queues.

Declare and delete are ORM work on the definitions, which reach the running
router after commit (storage/sync.py); a declaration that finds its queue
stored asks the router whether that row is still a queue. Purge and get act on the
router's state through broker/router/calls.py, here or on another node. Every input is validated before
anything is written (docs/protocol.md, "Errors"). No HTTP here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from broker.engine.errors import BrokerError, Forbidden, NotFound, PreconditionFailed, Unavailable
from broker.engine.jsoncodec import canonical
from broker.engine.names import generated_queue_name, held_for
from broker.engine.queues import parse_queue_arguments, refuse_two_spellings
from broker.engine.rules import bool_field, check_name, integer_field, object_field
from broker.protocol.server_frames import MessageObject
from broker.router import calls as router
from broker.transport.authorization import Permissions
from common.declare import lock_or_create
from common.limits import ensure_room
from queues.models import Queue


@dataclass(frozen=True, slots=True)
class QueueDeclared:
    queue: Queue
    created: bool


def queue_declare(
    *,
    name: str = "",
    durable: bool = True,
    auto_delete: bool = False,
    arguments: Mapping[str, Any] | None = None,
    permissions: Permissions | None = None,
    settled: bool = False,
) -> QueueDeclared:
    """Create a queue, or find an identical one (docs/protocol.md, POST /api/queues/).

    An empty name gets a generated `amq.gen-...` one. `permissions` (the caller's; None for
    the project's own code) are checked on the final name before anything is written:
    configure on the queue, and for a dead-letter exchange what RabbitMQ asks. `settled`:
    the caller has called `settle_dropped_queue` for this name already.
    """
    if name == "":
        name = generated_queue_name()
        check_name("queue", name, reserved_ok=True)
    else:
        check_name("queue", name)
    if permissions is not None:
        permissions.require("configure", "queue", name)
    wanted: dict[str, Any] = {
        "durable": bool_field("durable", durable),
        "auto_delete": bool_field("auto_delete", auto_delete),
        "arguments": object_field("arguments", arguments),
    }
    # Checked here, before the row exists: the router would refuse it only after commit.
    try:
        refuse_two_spellings(wanted["arguments"])
    except BrokerError:  # the stored queue's own arguments, declared so before: taken again
        stored = Queue.objects.filter(name=name).values_list("arguments", flat=True).first()
        if stored is None or canonical(stored) != canonical(wanted["arguments"]):
            raise
    parsed = parse_queue_arguments(wanted["arguments"])
    if permissions is not None:
        require_queue_rights(permissions, name=name, dead_letter_exchange=parsed.dead_letter_exchange)
    if not settled:
        settle_dropped_queue(name)
    with transaction.atomic():
        if not Queue.objects.filter(name=name).exists():
            ensure_room(Queue, setting="MAX_QUEUES", kind="queues")
        existing, created = lock_or_create(Queue, name=name, values=wanted)
        if created:
            return QueueDeclared(existing, True)
        if not (
            existing.durable == wanted["durable"]
            and existing.auto_delete == wanted["auto_delete"]
            and canonical(existing.arguments or {}) == canonical(wanted["arguments"])
        ):
            raise PreconditionFailed(
                f"queue {name!r} exists with other properties "
                f"(durable {existing.durable}, auto_delete {existing.auto_delete}, arguments {existing.arguments})"
            )
        return QueueDeclared(existing, False)


def require_queue_rights(permissions: Permissions, *, name: str, dead_letter_exchange: str | None = None) -> None:
    """Raise `forbidden` unless `permissions` may declare, change or delete queue `name`
    (with `dead_letter_exchange`, if it has one): the API's rule, and the admin's."""
    permissions.require("configure", "queue", name)
    if dead_letter_exchange is not None:
        # As RabbitMQ: the queue publishes its dead letters there, so a user who may not
        # write to that exchange could reach its queues through a TTL of 0.
        permissions.require("read", "queue", name)
        permissions.require("write", "exchange", dead_letter_exchange)


def settle_dropped_queue(name: str) -> None:
    """Before a declaration of `name` looks for its row, outside any transaction of its own.

    The router deletes an auto-delete queue that lost its last subscriber, or one unused
    past its `expires`, at once, and leaves its row to its writer, which deletes it a
    moment later, leaving out the copies still on their way to that queue. Such a row is
    no queue: a declaration that took it for one answered for a queue that was gone. So the
    router is asked about the row found: if it is such a row, the call returns once the
    writer's commit has deleted it, and the declaration finds none and makes the queue
    anew; otherwise the declaration counts as a use of the queue (`expires`).

    Outside a transaction: on SQLite one holds the write lock, which that commit needs.
    Inside one (a caller's), on SQLite, the router is not asked.
    """
    if transaction.get_connection().in_atomic_block and transaction.get_connection().vendor == "sqlite":
        return
    row_id = Queue.objects.filter(name=name).values_list("pk", flat=True).first()
    if row_id is None or not router.router_reachable():
        return  # without a router there is nothing it has deleted
    with contextlib.suppress(Unavailable):  # a router failing over: the next one loads the row as a queue
        router.queue_redeclared(name, row_id)


def queue_ensure(
    *,
    name: str,
    durable: bool = True,
    auto_delete: bool = False,
    arguments: Mapping[str, Any] | None = None,
    given: bool = False,
    permissions: Permissions | None = None,
    settled: bool = False,
) -> None:
    """A queue that a STOMP `/queue/NAME` destination names (docs/protocol.md, "STOMP"):
    declared when missing. An existing one is used as it is, unless the frame `given`
    properties of its own, which must then be the queue's (`precondition_failed`).
    `settled`: as `queue_declare`'s."""
    if not settled:
        settle_dropped_queue(name)
    if not given and Queue.objects.filter(name=name).exists():
        return
    queue_declare(
        name=name, durable=durable, auto_delete=auto_delete, arguments=arguments, permissions=permissions, settled=True
    )


def refuse_private_queue(name: str) -> None:
    """A live WebSocket subscription's private queue is not the API's to change."""
    if router.router_reachable() and router.queue_is_private(name):
        raise Forbidden(f"queue {name!r} is exclusive to a WebSocket connection")


def queue_delete(*, name: str) -> None:
    """Delete a queue, its bindings and its messages. A delayed exchange's holding queue goes
    with its exchange only: deleted alone, it lost the waiting messages, and the exchange
    routed every later one at once, without its delay, until declared anew."""
    if held_for(name) is not None:
        message = f"queue {name!r} holds a delayed exchange's messages: it is deleted with its exchange"
        raise Forbidden(message)
    with transaction.atomic():
        deleted, _ = Queue.objects.filter(name=name).delete()
    if not deleted:
        refuse_private_queue(name)
        raise NotFound(f"queue {name!r} does not exist")


def require_router(name: str) -> None:
    if not router.router_reachable():
        # A missing queue is a 404 even without a router; an existing one needs the router.
        if not Queue.objects.filter(name=name).exists():
            raise NotFound(f"queue {name!r} does not exist")
        raise Unavailable("the broker's router is not running")


def queue_purge(*, name: str) -> int:
    """Drop the queue's ready messages (not the unacknowledged ones); returns how many."""
    require_router(name)
    return router.queue_purge(name)


def queue_get(*, name: str, count: int = 1, ack: bool = True) -> list[MessageObject]:
    """Take up to `count` ready messages (docs/protocol.md, POST /api/queues/{name}/get/).

    With `ack` false they stay at the head of the queue and come out next as redeliveries.
    """
    integer_field("count", count, low=1)
    bool_field("ack", ack)
    require_router(name)
    return router.queue_get(name, count=count, ack=ack)
