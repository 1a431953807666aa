"""Admin of exchanges: the console's view of the routing topology."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from common.admin_mixins import NameFixedOnceSaved
from exchanges.models import Exchange


@admin.register(Exchange)
class ExchangeAdmin(NameFixedOnceSaved, admin.ModelAdmin[Exchange]):
    list_display = ["name", "type", "durable", "auto_delete"]
    list_filter = ["type", "durable", "auto_delete"]
    search_fields = ["name"]
    readonly_fields = ["created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """A saved exchange's type is fixed, as in the API (a redeclaration with another type
        is `precondition_failed`): the router cannot re-route its bindings under another
        type, and a delayed exchange's holding queue would be left behind."""
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "type"] if obj is not None else fields

    def has_delete_permission(self, request: HttpRequest, obj: Exchange | None = None) -> bool:
        """The broker's own exchanges (`amq.*`) stay, as the API's delete says: no one can
        make them again, the admin and the API refuse their names."""
        if obj is not None and obj.belongs_to_broker:
            return False
        return super().has_delete_permission(request, obj)
