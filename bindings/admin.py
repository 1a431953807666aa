"""Admin of bindings: add and delete; a binding has no editable state."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from bindings.models import Binding


@admin.register(Binding)
class BindingAdmin(admin.ModelAdmin[Binding]):
    list_display = ["exchange", "queue", "destination_exchange", "binding_key", "arguments"]
    list_filter = ["exchange"]
    list_select_related = ["exchange", "queue", "destination_exchange"]
    search_fields = ["exchange__name", "queue__name", "destination_exchange__name", "binding_key"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Changing a binding in place would reroute messages; delete and add
        # instead, which is what the API offers too.
        return False
