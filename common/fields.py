"""Serializer fields the apps' APIs share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from rest_framework import serializers
from rest_framework.utils import html

# Every form the browsable API renders carries Django's CSRF token; a client that
# posts form data of its own does not.
BROWSABLE_FORM_MARK: Final = "csrfmiddlewaretoken"


class FormBooleanField(serializers.BooleanField):
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
