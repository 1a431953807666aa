"""Admin of exchanges: the console's view of the routing topology."""

from __future__ import annotations

from django.contrib import admin

from common.admin_mixins import NameFixedOnceSaved
from exchanges.models import Exchange


@admin.register(Exchange)
class ExchangeAdmin(NameFixedOnceSaved, admin.ModelAdmin[Exchange]):
    list_display = ["name", "type", "durable", "auto_delete"]
    list_filter = ["type", "durable", "auto_delete"]
    search_fields = ["name"]
    readonly_fields = ["created_at"]
