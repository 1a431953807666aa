"""Names of exchanges and queues (docs/protocol.md, "Names"); rules.py checks them.

Pure: the standard library only.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

MAX_NAME_LENGTH: Final = 255
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,255}")
RESERVED_PREFIX: Final = "amq."
DEFAULT_EXCHANGE: Final = ""
# The default exchange has no name on the wire; URLs and lists call it this.
DEFAULT_EXCHANGE_ALIAS: Final = "amq.default"


def generated_queue_name() -> str:
    """A name for a queue declared without one: reserved (`amq.`), so no client's clashes."""
    return f"{RESERVED_PREFIX}gen-{uuid.uuid4().hex}"


# A delayed exchange's messages wait in a queue of its own, this prefix and its name: stored
# like any durable queue's, listed and browsable, but neither consumed nor bound.
HOLDING_PREFIX: Final = f"{RESERVED_PREFIX}delayed."


def holding_queue(exchange: str) -> str:
    return HOLDING_PREFIX + exchange


def held_for(queue: str) -> str | None:
    """The delayed exchange whose messages wait in `queue`, if it is such a queue."""
    return queue[len(HOLDING_PREFIX) :] if queue.startswith(HOLDING_PREFIX) else None
