"""Serializer fields the apps' APIs share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from rest_framework import serializers
from rest_framework.utils import html

# Every form the browsable API renders carries Django's CSRF token; a client that
# posts form data of its own does not.
BROWSABLE_FORM_MARK: Final = "csrfmiddlewaretoken"


def is_form_input(field: serializers.Field[Any, Any, Any, Any]) -> bool:
    """Whether the request's data is form data (the browsable API's forms, `curl -d`), where
    every value is text; JSON carries its values' types."""
    return html.is_html_input(getattr(field.root, "initial_data", None))


class StrictBooleanField(serializers.BooleanField):
    """JSON's true or false, nothing else: DRF's BooleanField takes "no", "off", 0 or 1 and
    quietly turns them into a boolean, where docs/protocol.md promises `invalid` for a wrong
    field (as the WebSocket's and the legacy endpoints' checks give). Form data is all text:
    its "true", "on" or "false" are read as DRF reads them."""

    default_error_messages = {"invalid": "must be true or false"}

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        if is_form_input(self):
            return bool(super().to_internal_value(data))
        self.fail("invalid")


class StrictCharField(serializers.CharField):
    """A string, nothing else: DRF's CharField takes a number and turns it into its text (a
    queue named 123 for `"name": 123`). Form data is text already."""

    default_error_messages = {"invalid": "must be a string"}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, nothing else: DRF's IntegerField takes "5", 5.0 and true and turns them
    into 5 and 1, where docs/protocol.md promises `invalid` for a wrong field. Form data is
    all text: its digits are read as DRF reads them."""

    default_error_messages = {"invalid": "must be an integer"}

    def to_internal_value(self, data: Any) -> int:
        if not is_form_input(self) and (isinstance(data, bool) or not isinstance(data, int)):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class FormBooleanField(StrictBooleanField):
    """A boolean with a default that the browsable API's HTML form can still set to false.

    A form leaves an unticked checkbox out of its data, and DRF gives a field missing
    from form data its default: with `default=True` the browsable API's form could
    only send true. In a form the browsable API rendered (it carries the CSRF token)
    a missing box is false, as HTML means it, and the box starts ticked when the
    default is true. Any other request that leaves the field out, JSON or form data,
    gets the default (docs/protocol.md, "HTTP API").
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("initial", kwargs.get("default", False))
        super().__init__(**kwargs)

    def get_value(self, dictionary: Mapping[Any, Any]) -> Any:
        if html.is_html_input(dictionary) and self.field_name not in dictionary and BROWSABLE_FORM_MARK in dictionary:
            return False
        return super().get_value(dictionary)
