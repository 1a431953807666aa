"""The values of a model change stream's messages (pubsub/streams.py): a field's value as
the database keeps it, and as JSON. Imports no model of the project."""

from __future__ import annotations

import base64
import datetime
import json
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.fields.files import FieldFile
from django.utils import timezone


def as_json(value: Any) -> Any:
    """`value` as its message's JSON has it: dates, decimals and UUIDs as Django's JSON
    encoder writes them; files by their name, bytes in base64; a number that is not finite
    (a float field's, a JSON field's) as null, which JSON has in its place."""
    return json.loads(json.dumps(value, cls=_StreamEncoder), parse_constant=_no_number)


def _no_number(constant: str) -> None:
    """`NaN`, `Infinity` and `-Infinity`, which Python's encoder writes and JSON has not."""
    return None


def as_stored(field: Any, value: Any) -> Any:
    """A field's value as the database keeps it, as a loaded row has it: what the code
    assigned may be a string for a number (`"42"`), a decimal of other places (`9.9` for
    `9.90`), a naive datetime. The field's own `to_python`, cheap for a value of its type;
    a value it refuses is left as it is (the database took it)."""
    if value is None or isinstance(field, _AS_ASSIGNED):
        return value
    try:
        value = field.to_python(value)
    except ValidationError:
        return value
    if isinstance(value, Decimal) and isinstance(field, models.DecimalField) and value.is_finite():
        try:
            return value.quantize(Decimal(1).scaleb(-field.decimal_places))
        except InvalidOperation:  # more digits than the context holds
            return value
    if isinstance(value, datetime.datetime) and settings.USE_TZ:
        if timezone.is_naive(value):  # as Django makes it aware when it saves it
            value = timezone.make_aware(value, timezone.get_default_timezone())
        return value.astimezone(datetime.UTC)  # as a loaded row's: one instant, one spelling
    return value


# Fields whose value is written as it is: bytes (whose `to_python` reads a string as
# base64), files (by their name) and JSON (the value itself).
_AS_ASSIGNED: Final = (models.BinaryField, models.FileField, models.JSONField)


class _StreamEncoder(DjangoJSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, FieldFile):
            return o.name or None
        if isinstance(o, (bytes, memoryview)):
            return base64.b64encode(bytes(o)).decode()
        return super().default(o)
