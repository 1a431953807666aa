"""Behaviour shared by the admins of exchanges, queues and bindings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest

from common.json_input import TOO_DEEP, json_input_problem


class NameFixedOnceSaved:
    """The name is read-only on a saved object.

    A name is the object's identity for clients and for the router; renaming a
    saved one would leave the router routing under the old name. Delete and
    create instead, as the API does.
    """

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return ["name", *fields] if obj is not None else fields


class CheckedJSONField(forms.JSONField):
    """A JSON box that refuses, as its field's error, what the API's parser refuses
    (common/parsers.py), and shows such input again as typed.

    Django's own box let an integer past 64 bits through (stored, it broke the router's
    statistics frame), and answered 500 for input nested past Python's decoder's limit
    (RecursionError) and for a lone surrogate (`"\\ud800"`: the page showing the form
    again could not be encoded)."""

    def to_python(self, value: Any) -> Any:
        try:
            converted = super().to_python(value)
        except RecursionError:
            raise ValidationError(TOO_DEEP, code="invalid") from None
        problem = json_input_problem(converted)
        if problem is not None:
            raise ValidationError(problem, code="invalid")
        return converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            value = super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)
        if not isinstance(value, InvalidJSONInput) and json_input_problem(value) is not None:
            return InvalidJSONInput(data)
        return value


# A model admin's `formfield_overrides`: its JSON fields (arguments) as CheckedJSONField.
CHECKED_JSON_FIELDS: Final[Mapping[type[models.Field[Any, Any]], Mapping[str, Any]]] = {
    models.JSONField: {"form_class": CheckedJSONField},
}
