"""Name rules for exchanges and queues (docs/protocol.md, "Names").

Pure: imports nothing outside the engine and the standard library.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from .errors import BrokerError, Forbidden

NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,255}")
RESERVED_PREFIX: Final = "amq."
DEFAULT_EXCHANGE: Final = ""
# The default exchange has no name on the wire; URLs and lists call it this.
DEFAULT_EXCHANGE_ALIAS: Final = "amq.default"


def check_name(kind: str, name: str, *, reserved_ok: bool = False) -> None:
    """Raise `invalid` for a malformed name, `forbidden` for a reserved one."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise BrokerError(
            f"{kind} name {name!r} must be 1 to 255 characters of A-Z a-z 0-9 _ . : -",
            fields={"name": ["1 to 255 characters of A-Z a-z 0-9 _ . : -"]},
        )
    if name.startswith(RESERVED_PREFIX) and not reserved_ok:
        raise Forbidden(
            f"{kind} name {name!r} is reserved: names starting with 'amq.' belong to the broker",
            fields={"name": ["names starting with 'amq.' belong to the broker"]},
        )


def generated_queue_name() -> str:
    """A name for a queue declared without one: reserved (`amq.`), so no client's clashes."""
    return f"{RESERVED_PREFIX}gen-{uuid.uuid4().hex}"
