"""Pages of the HTTP API's lists, as RabbitMQ's management API pages them.

A list asked for without any of `page`, `page_size`, `name` or `use_regex` is
the whole list, a JSON array, as it always was. With any of them it is one
page in an envelope: `{"items": [...], "page", "page_size", "page_count",
"item_count", "filtered_count", "total_count"}` (docs/protocol.md, "HTTP
API"). `name` keeps the items whose name contains it, ignoring case; with
`use_regex=true` it is a regular expression searched in the name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from broker.engine.errors import BrokerError

DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 500
MAX_PATTERN_LENGTH: Final = 256
PARAMETERS: Final = ("page", "page_size", "name", "use_regex")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    page: int
    page_size: int
    name: str
    use_regex: bool

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    def name_matches(self) -> Callable[[str], bool]:
        """Is a name kept by the `name` filter (every name when there is none)?"""
        if not self.name:
            return lambda _: True
        if self.use_regex:
            return re.compile(self.name).search  # type: ignore[return-value]
        wanted = self.name.casefold()
        return lambda name: wanted in name.casefold()


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: its items, and the counts the envelope reports."""

    request: PageRequest
    items: list[T]
    filtered_count: int  # items the filter kept, over every page
    total_count: int  # items before the filter

    def envelope(self, items: Any) -> dict[str, Any]:
        """The answer's body, around the page's items as serialized."""
        size = self.request.page_size
        return {
            "items": items,
            "page": self.request.page,
            "page_size": size,
            "page_count": -(-self.filtered_count // size),
            "item_count": len(items),
            "filtered_count": self.filtered_count,
            "total_count": self.total_count,
        }


def page_request(query: Mapping[str, str], *, by_name: bool = True) -> PageRequest | None:
    """The page asked for in a list's query string; None for the whole list. `invalid`
    for a bad value, and for a name filter where the items have no name (`by_name`)."""
    if not any(parameter in query for parameter in PARAMETERS):
        return None
    name = query.get("name", "")
    use_regex = _flag(query.get("use_regex"), "use_regex")
    if not by_name and ("name" in query or "use_regex" in query):
        raise BrokerError("these items have no name to filter by",
                          fields={"name": ["not a filter of this list"]})
    if use_regex:
        if len(name) > MAX_PATTERN_LENGTH:
            raise BrokerError(f"name: at most {MAX_PATTERN_LENGTH} characters as a regular expression",
                              fields={"name": [f"at most {MAX_PATTERN_LENGTH} characters"]})
        try:
            re.compile(name)
        except re.error as error:
            raise BrokerError(f"name: not a regular expression ({error})",
                              fields={"name": [f"not a regular expression: {error}"]}) from None
    return PageRequest(
        page=_whole(query.get("page"), "page", default=1, most=None),
        page_size=_whole(query.get("page_size"), "page_size", default=DEFAULT_PAGE_SIZE, most=MAX_PAGE_SIZE),
        name=name,
        use_regex=use_regex,
    )


def page_of(request: PageRequest, keys: Sequence[T], name_of: Callable[[T], str] | None = None) -> Page[T]:
    """The page of `keys` (the whole list, in its order) that `request` asks for: those the
    name filter keeps (`name_of` gives a key's name; None: keys are names)."""
    if request.name:
        matches = request.name_matches()
        kept = [key for key in keys if matches(name_of(key) if name_of else key)]  # type: ignore[arg-type]
    else:
        kept = list(keys)
    start = request.offset
    return Page(request, kept[start:start + request.page_size], len(kept), len(keys))


def _whole(value: str | None, field: str, *, default: int, most: int | None) -> int:
    if value is None or value == "":
        return default
    number = int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else 0
    if number < 1 or (most is not None and number > most):
        bound = f"from 1 to {most if most is not None else 999_999_999}"
        raise BrokerError(f"{field}: must be a whole number {bound}", fields={field: [f"a whole number {bound}"]})
    return number


def _flag(value: str | None, field: str) -> bool:
    if value is None or value == "" or value.lower() == "false":
        return False
    if value.lower() == "true":
        return True
    raise BrokerError(f"{field}: must be true or false", fields={field: ["true or false"]})
