"""Serializer fields the apps' APIs share."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class FormBooleanField(serializers.BooleanField):
    """A boolean with a default for JSON requests that an HTML form can still set to false.

    A form leaves an unticked checkbox out of its data, and DRF gives a field missing
    from a form its default: with `default=True` the browsable API's form could only
    send true. Here a field missing from form data is false, as HTML means it, and the
    box starts ticked when the default is true; a JSON request that leaves the field
    out still gets the default (docs/protocol.md, HTTP API).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("initial", kwargs.get("default", False))
        super().__init__(**kwargs)
        self.default_empty_html = False
