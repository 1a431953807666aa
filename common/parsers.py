"""The API's JSON parser: DRF's, refusing JSON nested more than MAX_JSON_DEPTH levels as a 400.

Python's decoder gives up on deep nesting with a RecursionError, which DRF's
parser does not catch (it became a 500), and where it gives up depends on the
Python version (about 1,000 levels on 3.11, tens of thousands on 3.13). What
it accepted, SQLite's JSON functions could still refuse (past 1,000 levels)
when the value was stored: a 500 again. So the limit is the broker's own.
"""

from __future__ import annotations

from typing import Any, Final

from rest_framework import parsers
from rest_framework.exceptions import ParseError

# Deeper than any real document, well under every decoder's and database's limit.
MAX_JSON_DEPTH: Final = 512
_TOO_DEEP: Final = f"JSON parse error - the value is nested more than {MAX_JSON_DEPTH} levels deep"


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            value = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_TOO_DEEP) from None
        if nested_deeper_than(value, MAX_JSON_DEPTH):
            raise ParseError(_TOO_DEEP)
        return value


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Do arrays and objects nest more than `limit` levels deep in `value` (a decoded JSON value)?"""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
