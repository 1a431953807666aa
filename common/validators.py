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
