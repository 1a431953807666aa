"""Admin of exchanges: the console's view of the routing topology."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from access.admin_rights import BrokerRightsRequired
from access.rules import Permissions
from broker.engine.errors import BrokerError
from broker.engine.exchanges import alternate_exchange
from broker.engine.rules import object_field
from common.admin_mixins import CHECKED_JSON_FIELDS, NameFixedOnceSaved
from exchanges.models import Exchange
from exchanges.services import require_exchange_rights


@admin.register(Exchange)
class ExchangeAdmin(NameFixedOnceSaved, BrokerRightsRequired[Exchange]):
    formfield_overrides = CHECKED_JSON_FIELDS  # what the API's parser refuses, refused
    list_display = ["name", "type", "durable", "auto_delete"]
    list_filter = ["type", "durable", "auto_delete"]
    search_fields = ["name"]
    readonly_fields = ["created_at"]

    def require_rights_to_save(
        self, permissions: Permissions, values: Mapping[str, Any], stored: Exchange | None
    ) -> None:
        """As exchange_declare: configure on the exchange, and for an alternate exchange read
        on the exchange and write on the alternate."""
        name = stored.name if stored is not None else values.get("name")
        if name:  # else the name's own error
            require_exchange_rights(permissions, name=name, alternate=_alternate(values))

    def require_rights_to_delete(self, permissions: Permissions, obj: Exchange) -> None:
        require_exchange_rights(permissions, name=obj.name)

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


def _alternate(values: Mapping[str, Any]) -> str | None:
    """The alternate exchange the form's arguments name, if they are valid (if not, the
    exchange's clean() says why, and nothing is saved)."""
    try:
        return alternate_exchange(object_field("arguments", values.get("arguments")))
    except BrokerError:
        return None
