"""Admin of the outbox (what waits for the router) and of model change streams."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from .models import ChangeStream, OutboxRow


@admin.register(OutboxRow)
class OutboxRowAdmin(admin.ModelAdmin[OutboxRow]):
    """Rows wait here only until the router routes them: normally for milliseconds."""

    list_display = ["id", "message_id", "exchange", "routing_key", "persistent", "created_at", "waiting"]
    search_fields = ["message_id", "exchange", "routing_key"]

    @admin.display(description="waiting")
    def waiting(self, obj: OutboxRow) -> str:
        return f"{(timezone.now() - obj.created_at).total_seconds():.1f} s"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # published with pubsub.publish, never typed in

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ChangeStream)
class ChangeStreamAdmin(admin.ModelAdmin[ChangeStream]):
    list_display = ["content_type", "exchange", "fields", "enabled"]
    list_filter = ["enabled"]
