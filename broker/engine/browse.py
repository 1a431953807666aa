"""The message browser's part of the engine: which messages a queue holds, in its order,
without taking them, and a filter over them. Pure: no I/O.

A queue's messages, in order: the unacknowledged ones (delivered, in delivery order,
read-only here), then the ready ones in memory (its window), then the backlog's: the
rows in the database above `after` and the copies `held` in memory, merged by their
place (backlog.py). The engine lists what is in memory and says where the backlog's rows
are; the shell reads those rows and merges them (`merge_backlog`).

Each message has a key that names it while it stays in its queue: `s<store id>` for a
stored copy, `m<seq>` for one in memory only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

from .errors import BrokerError
from .jsoncodec import dumps, loads
from .messages import Envelope, Message
from .queues import QueueState
from .rules import invalid, mapping_field

_ABSENT: Final = object()
MAX_PATH_DEPTH: Final = 32


def key_of(envelope: Envelope) -> str:
    return f"s{envelope.store_id}" if envelope.store_id is not None else f"m{envelope.seq}"


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Which messages an action or a page takes: every given part must match."""

    routing_key: str | None = None
    header: tuple[str, str] | None = None  # a header's name and its value as text
    path: tuple[str, ...] | None = None  # a path into a JSON body (object keys, list indexes)
    value: Any = _ABSENT  # the JSON value found there

    @property
    def empty(self) -> bool:
        return self.routing_key is None and self.header is None and self.path is None

    def matches(self, message: Message) -> bool:
        if self.routing_key is not None and message.routing_key != self.routing_key:
            return False
        if self.header is not None:
            name, wanted = self.header
            found = message.headers.get(name, _ABSENT)
            if found is _ABSENT or _as_text(found) != wanted:
                return False
        if self.path is not None:
            try:
                body = loads(message.body_json)
            except ValueError:
                return False
            found = _at(body, self.path)
            if found is _ABSENT or (self.value is not _ABSENT and not _same_json(found, self.value)):
                return False
        return True


def parse_filter(raw: Mapping[str, Any] | None) -> MessageFilter:
    """`{"routing_key": "...", "header": {"name": ..., "value": ...}, "path": "order.country",
    "value": <JSON>}`, every part optional (docs/protocol.md, "Message browser")."""
    checked = mapping_field("filter", raw)
    unknown = sorted(set(checked) - {"routing_key", "header", "path", "value"})
    if unknown:
        raise invalid("filter", f"unknown part {unknown[0]!r} (routing_key, header, path, value)")
    routing_key = checked.get("routing_key")
    if routing_key is not None and not isinstance(routing_key, str):
        raise invalid("filter", "routing_key must be a string")
    header = None
    if checked.get("header") is not None:
        raw_header = mapping_field("filter.header", checked["header"])
        name, value = raw_header.get("name"), raw_header.get("value")
        if not isinstance(name, str) or not name:
            raise invalid("filter", "header.name must be a header's name")
        header = (name, _as_text(value))
    path = None
    if checked.get("path") is not None:
        text = checked["path"]
        # An empty key ("a..b", "a.") is a typo far more often than a body's "" key: it
        # matched nothing, and an action on "all that match" took nothing, without a word.
        if not isinstance(text, str) or text.count(".") >= MAX_PATH_DEPTH or "" in text.split("."):
            raise invalid("filter", f"path must be keys joined by dots (at most {MAX_PATH_DEPTH}, none empty), "
                                    "e.g. order.country")
        path = tuple(text.split("."))
    elif "value" in checked:
        raise invalid("filter", "value needs a path")
    return MessageFilter(routing_key, header, path, checked.get("value", _ABSENT))


@dataclass(frozen=True, slots=True)
class Listed:
    key: str
    message: Message
    redelivered: bool
    unacked: bool = False


@dataclass(frozen=True, slots=True)
class BacklogSpan:
    """Where a queue's backlog rows are: ids above `after` and below `below`, except `skip`
    (removed, their deletes not yet committed); `held` are its copies in memory, each with
    its place. The first `owed` messages are gone already: a max-length dropped them while
    they were in the database, and they are dead-lettered as they are read."""

    epoch: int
    after: int
    below: int
    skip: frozenset[int]
    held: tuple[tuple[int, Listed], ...]
    owed: int = 0


def unacked_of(queue: QueueState) -> list[Listed]:
    """Its unacknowledged messages: each subscriber's, in the order they were delivered."""
    listed: list[Listed] = []
    connections = {id(consumer.connection): consumer.connection for consumer in queue.consumers}
    for connection in connections.values():
        for pending in connection.unacked.values():
            if pending.consumer.queue is queue:
                envelope = pending.envelope
                listed.append(Listed(key_of(envelope), envelope.message, envelope.redelivered, unacked=True))
    return listed


def ready_of(queue: QueueState) -> list[Listed]:
    return [Listed(key_of(e), e.message, e.redelivered) for e in queue.ready]


def backlog_of(queue: QueueState, next_store_id: int) -> BacklogSpan | None:
    backlog = queue.backlog
    if backlog is None:
        return None
    held = tuple((mark, Listed(key_of(e), e.message, e.redelivered)) for mark, e in backlog.held)
    return BacklogSpan(queue.epoch, backlog.after, next_store_id, frozenset(backlog.skip), held, backlog.owed)


def merge_backlog(span: BacklogSpan, rows: Iterable[tuple[int, Message]]) -> Iterator[Listed]:
    """The backlog's messages in order: rows read from the database (in store-id order,
    above `span.after`), with the held copies in their places; not the `owed` first."""
    return islice(_merged(span, rows), span.owed, None)


def _merged(span: BacklogSpan, rows: Iterable[tuple[int, Message]]) -> Iterator[Listed]:
    held = list(span.held)
    index = 0
    for store_id, message in rows:
        if store_id in span.skip:
            continue
        while index < len(held) and held[index][0] <= store_id:
            yield held[index][1]
            index += 1
        yield Listed(f"s{store_id}", message, False)
    for _, item in held[index:]:
        yield item


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return dumps(value)


def _at(body: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if isinstance(body, dict):
            body = body.get(part, _ABSENT)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return _ABSENT
        if body is _ABSENT:
            return _ABSENT
    return body


def _same_json(a: Any, b: Any) -> bool:
    # JSON's equality: 1 and true differ, 1 and 1.0 do not.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def refuse_unknown_keys(keys: Iterable[object]) -> list[str]:
    """The keys of an action's `ids`: strings as the browser gives them."""
    checked: list[str] = []
    for key in keys:
        if not isinstance(key, str) or len(key) < 2 or key[0] not in "sm" or not key[1:].isdigit():
            raise BrokerError(f"ids: {key!r} is not a message's id as the browser lists it (s123, m45)",
                              fields={"ids": ["each id is a string as listed, e.g. s123"]})
        checked.append(key)
    return checked
