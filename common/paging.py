"""Pages of the HTTP API's lists, as RabbitMQ's management API pages them.

A list asked for without any of `page`, `page_size`, `name` or `use_regex` is
the whole list, a JSON array, as it always was. With any of them it is one
page in an envelope: `{"items": [...], "page", "page_size", "page_count",
"item_count", "filtered_count", "total_count"}` (docs/protocol.md, "HTTP
API"). `name` keeps the items whose name contains it, ignoring case.

`use_regex=true` is refused: a regular expression that backtracks without end,
run over the names in a process that also routes messages, would stall the
broker (Python's `re` holds the GIL for the whole match). `use_regex=false` is
taken, as RabbitMQ's clients send it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from broker.engine.errors import BrokerError

DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 500
MAX_PAGE: Final = 999_999_999
PARAMETERS: Final = ("page", "page_size", "name", "use_regex")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    page: int
    page_size: int
    name: str  # "": no filter

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    def name_matches(self) -> Callable[[str], bool]:
        """Is a name kept by the `name` filter (every name when there is none)?"""
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


def page_request(query: Mapping[str, str], *, by_name: bool = True, filters: tuple[str, ...] = ()) -> PageRequest | None:
    """The page asked for in a list's query string; None for the whole list. `invalid`
    for a bad value, and for a name filter where the items have no name (`by_name`).
    `filters`: the list's own filters, which ask for a page too."""
    if not any(parameter in query for parameter in (*PARAMETERS, *filters)):
        return None
    if not by_name:
        for parameter in ("name", "use_regex"):
            if parameter in query:
                raise BrokerError(f"{parameter}: these items have no name to filter by",
                                  fields={parameter: ["not a filter of this list"]})
    if flag(query, "use_regex"):
        raise BrokerError("use_regex: regular expressions are not taken; name is a part of the name, any case",
                          fields={"use_regex": ["only false: name is a part of the name, any case"]})
    return PageRequest(
        page=_whole(query.get("page"), "page", default=1, most=MAX_PAGE),
        page_size=_whole(query.get("page_size"), "page_size", default=DEFAULT_PAGE_SIZE, most=MAX_PAGE_SIZE),
        name=query.get("name", ""),
    )


def flag(query: Mapping[str, str], field: str) -> bool | None:
    """A `true`/`false` query parameter; None when absent, `invalid` when neither."""
    value = query.get(field)
    if value is None:
        return None
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BrokerError(f"{field}: must be true or false", fields={field: ["true or false"]})


def page_of(request: PageRequest, names: Sequence[str]) -> Page[str]:
    """The page of `names` (the whole list, in its order) that `request` asks for, of those
    the name filter keeps."""
    matches = request.name_matches()
    kept = [name for name in names if matches(name)] if request.name else list(names)
    start = request.offset
    return Page(request, kept[start:start + request.page_size], len(kept), len(names))


def _whole(value: str | None, field: str, *, default: int, most: int) -> int:
    if value is None or value == "":
        return default
    digits = value.lstrip("0")
    number = int(digits or "0") if value.isascii() and value.isdigit() and len(digits) <= 9 else 0
    if not 1 <= number <= most:
        raise BrokerError(f"{field}: must be a whole number from 1 to {most}",
                          fields={field: [f"a whole number from 1 to {most}"]})
    return number
