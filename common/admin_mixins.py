"""Behaviour shared by the admins of exchanges and queues."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


class NameFixedOnceSaved:
    """The name is read-only on a saved object.

    A name is the object's identity for clients and for the router; renaming a
    saved one would leave the router routing under the old name. Delete and
    create instead, as the API does.
    """

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return ["name", *fields] if obj is not None else fields
