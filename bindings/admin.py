"""Admin of bindings: add and delete; a binding has no editable state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from access.admin_rights import BrokerRightsRequired
from access.rules import Permissions
from bindings.models import Binding
from bindings.services import require_binding_rights
from common.admin_mixins import CHECKED_JSON_FIELDS


@admin.register(Binding)
class BindingAdmin(BrokerRightsRequired[Binding]):
    formfield_overrides = CHECKED_JSON_FIELDS  # what the API's parser refuses, refused
    list_display = ["exchange", "queue", "destination_exchange", "binding_key", "arguments"]
    list_filter = ["exchange"]
    list_select_related = ["exchange", "queue", "destination_exchange"]
    search_fields = ["exchange__name", "queue__name", "destination_exchange__name", "binding_key"]

    def require_rights_to_save(
        self, permissions: Permissions, values: Mapping[str, Any], stored: Binding | None
    ) -> None:
        """As the API: write on the destination and read on the exchange."""
        exchange, queue, destination = (values.get(field) for field in ("exchange", "queue", "destination_exchange"))
        if exchange is not None:  # else the exchange's own error
            require_binding_rights(
                permissions, exchange=exchange.name, queue=queue.name if queue is not None else None,
                destination_exchange=destination.name if destination is not None else None,
            )

    def require_rights_to_delete(self, permissions: Permissions, obj: Binding) -> None:
        require_binding_rights(
            permissions, exchange=obj.exchange.name, queue=obj.queue.name if obj.queue is not None else None,
            destination_exchange=obj.destination_exchange.name if obj.destination_exchange is not None else None,
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Changing a binding in place would reroute messages; delete and add
        # instead, which is what the API offers too.
        return False
