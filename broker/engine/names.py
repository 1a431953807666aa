"""Names of exchanges and queues (docs/protocol.md, "Names"); rules.py checks them.

Pure: the standard library only.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,255}")
RESERVED_PREFIX: Final = "amq."
DEFAULT_EXCHANGE: Final = ""
# The default exchange has no name on the wire; URLs and lists call it this.
DEFAULT_EXCHANGE_ALIAS: Final = "amq.default"


def generated_queue_name() -> str:
    """A name for a queue declared without one: reserved (`amq.`), so no client's clashes."""
    return f"{RESERVED_PREFIX}gen-{uuid.uuid4().hex}"
