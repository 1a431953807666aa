"""Who may do what to which exchange or queue: RabbitMQ's configure/write/read rules.

A `Permissions` is what one client may do, built once per HTTP request or
WebSocket connection (access/selectors.py loads it) and then asked per name.
Each of `configure`, `write` and `read` is a tuple of regular expressions, one
per permission row that applies (the user's own and its groups'); a name is
allowed when any of them matches the whole name (`re.fullmatch`, as RabbitMQ's
`^...$`). An empty pattern allows nothing. Answers are cached per name, so a
WebSocket publishing to one exchange pays one dict lookup per frame.

The rules (README, "Authentication and permissions"):

- configure on the name: declare or delete an exchange or a queue, purge a queue;
- write on the exchange: publish to it (the default exchange `""` is matched as
  `amq.default`);
- a binding, made or removed, needs write on its destination (queue or exchange) and
  read on its exchange, as RabbitMQ's queue.bind and exchange.bind: whoever may read
  from an exchange and bind it to a destination publishes into that destination;
- read on the queue: subscribe to it or get from it; read on the exchange:
  subscribe to it through a private queue.

Pure: stdlib and the engine's errors and names only (no Django), so it is
tested without a database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Final, Literal

from broker.engine.errors import Forbidden
from broker.engine.names import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS

Kind = Literal["exchange", "queue"]
Right = Literal["configure", "write", "read"]
RIGHTS: Final[tuple[Right, ...]] = ("configure", "write", "read")

# A client using many names must not grow its cache without bound: past this
# many names it is cleared (cheap: recomputing is one fullmatch per pattern).
MAX_CACHED_NAMES: Final = 1024


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> re.Pattern[str] | None:
    """The compiled pattern, or None for "" (nothing); raises re.error when invalid.

    Cached: every connection of a user shares its compiled patterns."""
    return re.compile(pattern) if pattern else None


def check_pattern(pattern: str) -> None:
    """Raise ValueError naming the problem when `pattern` is not a regular expression."""
    try:
        compile_pattern(pattern)
    except re.error as error:
        raise ValueError(f"{pattern!r} is not a regular expression: {error}") from None


def object_name(kind: Kind, name: str) -> str:
    """The name patterns see: the default exchange is `amq.default` (docs/protocol.md, names)."""
    if kind == "exchange" and name == DEFAULT_EXCHANGE:
        return DEFAULT_EXCHANGE_ALIAS
    return name


class _Right:
    """One right: its patterns and the answers given so far, per name."""

    __slots__ = ("answers", "patterns")

    def __init__(self, patterns: str | Iterable[str]) -> None:
        if isinstance(patterns, str):
            patterns = (patterns,)  # one row's pattern, not its characters
        compiled = (compile_pattern(pattern) for pattern in patterns)
        self.patterns: tuple[re.Pattern[str], ...] = tuple(p for p in compiled if p is not None)
        self.answers: dict[str, bool] = {}

    def allows(self, name: str) -> bool:
        answer = self.answers.get(name)
        if answer is None:
            answer = any(pattern.fullmatch(name) is not None for pattern in self.patterns)
            if len(self.answers) >= MAX_CACHED_NAMES:
                self.answers.clear()
            self.answers[name] = answer
        return answer


class Permissions:
    """What one client may do. `everything` for superusers and allowed anonymous clients."""

    __slots__ = ("_rights", "everything", "who")

    def __init__(
        self,
        who: str,
        *,
        everything: bool = False,
        configure: str | Iterable[str] = (),
        write: str | Iterable[str] = (),
        read: str | Iterable[str] = (),
    ) -> None:
        self.who = who  # "user 'alice'", for refusals
        self.everything = everything
        self._rights: dict[str, _Right] = {
            "configure": _Right(configure),
            "write": _Right(write),
            "read": _Right(read),
        }

    @classmethod
    def all(cls, who: str) -> Permissions:
        return cls(who, everything=True)

    def can(self, right: Right, kind: Kind, name: str) -> bool:
        return self.everything or self._rights[right].allows(object_name(kind, name))

    def can_configure(self, kind: Kind, name: str) -> bool:
        return self.can("configure", kind, name)

    def can_write(self, kind: Kind, name: str) -> bool:
        return self.can("write", kind, name)

    def can_read(self, kind: Kind, name: str) -> bool:
        return self.can("read", kind, name)

    def require(self, right: Right, kind: Kind, name: str) -> None:
        """Raise `forbidden` naming the object and the missing right unless allowed."""
        if not self.can(right, kind, name):
            shown = object_name(kind, name)
            raise Forbidden(f"{self.who} has no {right} permission on {kind} {shown!r}")

    def __repr__(self) -> str:
        if self.everything:
            return f"Permissions({self.who!r}, everything=True)"
        patterns = {right: [p.pattern for p in self._rights[right].patterns] for right in RIGHTS}
        return f"Permissions({self.who!r}, {patterns})"


# Anonymous clients where BROKER_ALLOW_ANONYMOUS is on: one shared object, so
# an anonymous connection costs no memory for its permissions.
ANONYMOUS_ALL: Final = Permissions.all("anonymous")
# Before a connection has authenticated: nothing is allowed.
NOBODY: Final = Permissions("nobody")
