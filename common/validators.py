"""The broker's input rules (broker/engine/rules.py) in the forms Django's models take.

The admin's forms and `full_clean()` then refuse what the API refuses, with the
same sentence, before a row reaches the router.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError

from broker.engine.errors import BrokerError
from broker.engine.rules import NAME_PROBLEM, is_name
from common.json_input import json_input_problem


def validate_broker_name(value: Any) -> None:
    """A field validator: 1 to 255 characters of `A-Z a-z 0-9 _ . : -`."""
    if not is_name(value):
        raise ValidationError(f"must be {NAME_PROBLEM}", code="invalid")


def collect(errors: dict[str, list[str]], field: str, check: Callable[[], object]) -> None:
    """Run one of the broker's checks; what it refuses goes into `errors`, per field
    (its own fields where it names them, else `field`)."""
    try:
        check()
    except BrokerError as error:
        for name, problems in (error.fields or {field: [error.message]}).items():
            errors.setdefault(name, []).extend(problems)


def refuse_json_input(errors: dict[str, list[str]], field: str, value: Any) -> bool:
    """Put into `errors` what the API's parser would refuse in `value` (common/parsers.py:
    nested too deep, an integer past 64 bits, a number that is not finite, a lone surrogate),
    and say whether it did: the field's other checks cannot read such a value. Stored, it
    failed the database's JSON check or its encoding (a 500), or it broke the router's
    statistics frame for every console until removed."""
    problem = json_input_problem(value)
    if problem is None:
        return False
    errors.setdefault(field, []).append(problem)
    return True
