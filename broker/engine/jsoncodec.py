"""JSON encoding shared by the engine and the shell.

One encoder, so a message is serialised once and every copy of it reuses the
text: orjson, several times faster than the standard library's; canonical
(key-sorted) text for identities comes from the standard library. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

import orjson


def dumps(value: Any) -> str:
    """Compact JSON text; raises TypeError/ValueError for what JSON cannot hold."""
    return orjson.dumps(value).decode()


def loads(text: str | bytes) -> Any:
    """The value of JSON text; raises ValueError (orjson.JSONDecodeError) when it is not JSON."""
    return orjson.loads(text)


# U+0000 as both encoders write it, `\u0000`, unless that backslash is itself escaped
# (`\\u0000` is a backslash followed by the letters `u0000`).
_ESCAPED_NUL: Final = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def holds_nul(text: str) -> bool:
    """True when a string holds U+0000, which PostgreSQL keeps neither in text nor in
    jsonb columns: the broker refuses it as input (`invalid`) on every database alike."""
    return "\x00" in text


def json_holds_nul(text: str) -> bool:
    """`holds_nul` for any string (object keys too) of a JSON value, given its encoded text."""
    return "\\u0000" in text and _ESCAPED_NUL.search(text) is not None


def canonical(value: Any) -> str:
    """Key-sorted JSON: equal JSON objects give equal text (binding identity)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: `1` is not `"1"` and `true` is not `1`, but `1 == 1.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def utf8_size(text: str) -> int:
    """The text's size in UTF-8. `isascii` is O(1): an ASCII text's size is its length, with
    no copy made."""
    return len(text) if text.isascii() else len(text.encode())


# What orjson writes: signed and unsigned 64-bit integers.
_LOWEST: Final = -(2**63)
_HIGHEST: Final = 2**64 - 1


# What a refusal of such a number says, on every path that takes JSON input.
NUMBER_OUT_OF_RANGE: Final = "a number is out of range (integers from -2**63 to 2**64-1; finite numbers)"
LONE_SURROGATE: Final = "a string holds a lone surrogate (\\ud800 to \\udfff not in a pair): not Unicode text"


def json_value_problem(value: Any) -> str | None:
    """What in a value Python's decoder read makes it one the broker cannot carry, or None:
    an integer orjson cannot write (below -2**63 or above 2**64-1) or a number that is not
    finite (Python's decoder reads `1e400` as infinity, and keeps integers of any size;
    orjson writes a number that is not finite as null), or a string (or key) holding a lone
    surrogate, which Python's decoder reads from `"\\ud800"` and which no UTF-8 text,
    database or cluster link can hold."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in node:
                if isinstance(key, str) and _holds_surrogate(key):
                    return LONE_SURROGATE
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if not _LOWEST <= node <= _HIGHEST:
                return NUMBER_OUT_OF_RANGE
        elif isinstance(node, float):
            if not math.isfinite(node):
                return NUMBER_OUT_OF_RANGE
        elif isinstance(node, str) and _holds_surrogate(node):
            return LONE_SURROGATE
    return None


def _holds_surrogate(text: str) -> bool:
    if text.isascii():  # O(1)
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# An integer orjson cannot keep has at least 20 digits, or 19 after a minus sign; a
# match (also inside a string or a fraction) only sends the text to the exact look.
_WIDE_DIGITS: Final = re.compile(r"\d{20}|-\d{19}")
_WIDE_DIGITS_BYTES: Final = re.compile(rb"\d{20}|-\d{19}")


class NumberOutOfRange(ValueError):
    """JSON text holds an integer orjson would read as a float, changing it."""

    def __init__(self) -> None:
        super().__init__(NUMBER_OUT_OF_RANGE)


def loads_exact(text: str | bytes) -> Any:
    """`loads`, but raises NumberOutOfRange for a text `holds_wide_integer` finds."""
    value = orjson.loads(text)
    if holds_wide_integer(text):
        raise NumberOutOfRange
    return value


def holds_wide_integer(text: str | bytes) -> bool:
    """Does JSON text (that orjson reads) hold an integer past 64 bits? orjson reads one as a
    float, a value the publisher did not send. The common case costs one regex search of the
    text; only a text with a long run of digits is decoded again, by Python's decoder, which
    keeps integers of any size."""
    wide = _WIDE_DIGITS_BYTES.search(text) if isinstance(text, bytes) else _WIDE_DIGITS.search(text)
    if wide is None:
        return False
    try:
        return json_value_problem(json.loads(text)) is not None
    except RecursionError:  # deeper than Python's decoder goes (orjson's limit is lower)
        return False


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
