"""The copy of a message that dead-lettering republishes, with RabbitMQ's `x-death` headers.

A message leaves a queue dead (rejected without requeue, expired, or pushed
out by `max_length`); a queue with a dead-letter exchange republishes it
there, its headers telling where and why it died (docs/protocol.md,
"Dead-lettering"). The broker routes the copy; this module only makes it.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from .messages import EXPIRATION, Message, make_message

# A dead-lettered message republished this many times in one call is dropped:
# a guard against topologies that feed dead letters back in a loop.
MAX_DEAD_LETTER_DEPTH: Final = 16
# Deaths a client caused: a cycle through one of them is a retry loop, not a loop of
# expiries. Only a rejection, as in RabbitMQ: a delivery limit reached by a client's returns
# breaks no cycle, so a queue dead-lettering to itself drops its poison message.
CLIENT_REASONS: Final = ("rejected",)


def death_time(seconds: float) -> str:
    """An `x-death` entry's `time`: seconds since the epoch in `published_at`'s form
    (docs/protocol.md), `2026-11-28T12:00:00.000000Z`, where RabbitMQ has an AMQP timestamp."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dead_letter_copy(
    message: Message, *, queue: str, reason: str, exchange: str, routing_key: str | None, died_at: float
) -> Message:
    """The copy to publish to `exchange`, its death recorded first in `x-death`: a death in
    the same queue for the same reason as before counts again (`count`), moved to the front,
    keeping the exchange, routing keys, `time` and `original-expiration` of the first (as
    RabbitMQ 3.10). `died_at`: the wall clock's time now, seconds since the epoch, the
    entry's `time`. The copy's `origin` is where the message was when it died this time, as
    the broker saw it: never read from `x-death`, which a publisher may have written."""
    # `x-death` comes from publishers too: read it defensively.
    deaths = message.headers.get("x-death")
    history = [d for d in deaths if isinstance(d, dict)] if isinstance(deaths, list) else []
    same = [d for d in history if d.get("queue") == queue and d.get("reason") == reason]
    headers = dict(message.headers)
    # As RabbitMQ: the copy does not expire again by the message's own TTL; a new entry says
    # what it was.
    expiration = headers.pop(EXPIRATION, None)
    if same:
        previous = same[0].get("count")
        count = (previous if isinstance(previous, int) and not isinstance(previous, bool) else 0) + 1
        entry = {**same[0], "count": count}
        entry.setdefault("time", death_time(died_at))  # one a publisher wrote without it
    else:
        entry = {
            "queue": queue,
            "reason": reason,
            "time": death_time(died_at),
            "exchange": message.exchange,
            "routing-keys": [message.routing_key],
            "count": 1,
        }
        if expiration is not None:
            entry["original-expiration"] = expiration
    headers["x-death"] = [entry, *(d for d in history if d not in same)]
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-exchange", message.exchange)
    return make_message(
        message_id=message.message_id,
        exchange=exchange,
        routing_key=message.routing_key if routing_key is None else routing_key,
        body_json=message.body_json,
        headers=headers,
        persistent=message.persistent,
        published_at=message.published_at,
        origin=(message.exchange, message.routing_key),
    )


def is_death_cycle(headers: Mapping[str, Any], queue: str) -> bool:
    """Would a dead letter (its death recorded) go round a loop into `queue`? It would when
    it died in `queue` before with no rejection since, that one included
    (RabbitMQ's rule, per queue reached: another queue on the way still gets it).
    `x-death` lists the newest death first."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return False
    for death in deaths:
        if not isinstance(death, dict):
            continue
        if death.get("reason") in CLIENT_REASONS:
            return False
        if death.get("queue") == queue:
            return True
    return False
