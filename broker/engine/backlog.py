"""A durable queue's backlog: its messages that are in the database only.

A durable queue keeps a window of its messages in memory, the head (its
`ready` deque), and leaves the rest in the database: the backlog. The engine
counts the backlog's rows and asks the shell to read the next ones (a
`LoadRequest`) when the window runs low; what the shell read comes back to
`Broker.load_window`. Pure: no I/O.

Order: every stored copy in the backlog has a store id above `after` (the last
one read into memory), and rows are read back in store-id order. A copy that
cannot wait in the database (a non-persistent message, or a copy whose id is
not above `after`) waits in `held`, in memory, marked with the first store id
given out after it arrived: it goes before every row whose id is at least
that mark.
"""

from __future__ import annotations

from collections import deque

from .messages import Envelope


class Backlog:
    __slots__ = ("after", "below", "count", "held", "later", "loading", "owed", "skip")

    def __init__(self, after: int, count: int = 0) -> None:
        self.after = after
        self.count = count  # rows in the database only
        self.held: deque[tuple[int, Envelope]] = deque()  # (mark, copy): see the module's docstring
        self.owed = 0  # messages max-length dropped while the head was in the database
        self.loading = 0  # rows asked for and not yet read; 0 when no read is under way
        # The read under way takes ids below `below`; `later` counts the rows put behind
        # since it was asked with ids from `below` on, which it cannot return: when it
        # comes back short, they are all that is left.
        self.below = 0
        self.later = 0
        # Rows taken out by the message browser (deleted, moved) whose deletes are not
        # committed yet: a read that still finds them passes over them.
        self.skip: set[int] = set()

    @property
    def size(self) -> int:
        """Messages waiting behind the window."""
        return self.count + len(self.held) - self.owed

    def holds_head(self) -> bool:
        """Does the first held copy come before every row not yet read?"""
        return bool(self.held) and self.held[0][0] <= self.after + 1

    def empty(self) -> bool:
        return self.count == 0 and not self.held
