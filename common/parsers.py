"""The API's JSON parser: DRF's, refusing JSON nested more than MAX_JSON_DEPTH levels, and
numbers the broker cannot keep, as a 400 (common/json_input.py).

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

from common.json_input import TOO_DEEP, json_input_problem

_TOO_DEEP: Final = f"JSON parse error - {TOO_DEEP}"


# Python reads `1e400` as infinity, and integers of any size; the broker's JSON (orjson),
# SQLite's and PostgreSQL's take neither past 64 bits or a double's range: a declare that
# stored one answered 500, or broke every connection's statistics frame.


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            value = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_TOO_DEEP) from None
        problem = json_input_problem(value)
        if problem is not None:
            raise ParseError(f"JSON parse error - {problem}")
        return value
