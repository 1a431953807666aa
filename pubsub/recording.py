"""What the test kit records (pubsub/testing.py): every accepted publish, in order.

Kept apart from the kit so that publishing imports no test code: it only calls
`record`, which does nothing unless a recorder is active.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.engine.jsoncodec import loads
from broker.protocol.publish import PublishRequest


@dataclass(frozen=True, slots=True)
class Published:
    """A message as Django code published it."""

    exchange: str
    routing_key: str
    body: Any
    headers: dict[str, Any]
    persistent: bool
    message_id: str
    using: str = "default"


@dataclass(slots=True, eq=False)  # by identity: stopping one never removes another with the same messages
class Recorder:
    messages: list[Published] = field(default_factory=list)


_recorders: list[Recorder] = []


def start() -> Recorder:
    recorder = Recorder()
    _recorders.append(recorder)
    return recorder


def stop(recorder: Recorder) -> None:
    _recorders.remove(recorder)


def record(requests: Sequence[PublishRequest], ids: Sequence[str], *, using: str) -> None:
    if not _recorders:
        return
    published = [
        Published(r.exchange, r.routing_key, loads(r.body_json), dict(r.headers), r.persistent, message_id, using)
        for r, message_id in zip(requests, ids, strict=True)
    ]
    for recorder in _recorders:
        recorder.messages.extend(published)
