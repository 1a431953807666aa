"""The API's JSON parser: DRF's, refusing JSON nested too deeply for the decoder as a 400.

Python's decoder gives up on deep nesting (some thousand levels) with a
RecursionError, which DRF's parser does not catch: it became a 500.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the value is nested too deeply") from None
