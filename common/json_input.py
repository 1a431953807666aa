"""What the broker refuses in a decoded JSON value it is given: the rules of the API's parser
(common/parsers.py), and of the admin's JSON boxes and the models' clean(). No DRF here:
the models import it."""

from __future__ import annotations

from typing import Any, Final

from broker.engine.jsoncodec import json_value_problem, nested_deeper_than

# Deeper than any real document, well under every decoder's and database's limit.
MAX_JSON_DEPTH: Final = 512
TOO_DEEP: Final = f"the value is nested more than {MAX_JSON_DEPTH} levels deep"


def json_input_problem(value: Any) -> str | None:
    """Why the broker refuses a decoded JSON value, or None: nested too deep, or holding a
    number or a string the broker cannot keep (broker/engine/jsoncodec.py)."""
    if nested_deeper_than(value, MAX_JSON_DEPTH):
        return TOO_DEEP
    return json_value_problem(value)
