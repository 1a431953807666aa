"""Admin of the outbox (what waits for the router), of model change streams, and of the
handlers: their processes with their counts, and the messages waiting for a retry."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from .models import ChangeStream, HandlerAttempt, HandlerStatus, OutboxRow

# A handler process that has not reported for longer is shown as not running.
ALIVE_SECONDS = 10.0


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


class _ReadOnly:
    """Rows the handler processes write; the admin shows them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(HandlerStatus)
class HandlerStatusAdmin(_ReadOnly, admin.ModelAdmin[HandlerStatus]):
    list_display = [
        "handler", "queue", "process", "alive", "concurrency", "running", "handled_rate", "handled", "failed",
        "retried", "dead_lettered", "already_handled", "seen_at",
    ]
    list_filter = ["queue", "hostname"]
    search_fields = ["handler", "queue", "process"]

    @admin.display(boolean=True, description="running")
    def alive(self, obj: HandlerStatus) -> bool:
        return (timezone.now() - obj.seen_at).total_seconds() < ALIVE_SECONDS


@admin.register(HandlerAttempt)
class HandlerAttemptAdmin(_ReadOnly, admin.ModelAdmin[HandlerAttempt]):
    """Stored messages a handler failed on and will try again."""

    list_display = ["message_id", "queue", "handler", "attempts", "last_error", "updated_at"]
    list_filter = ["queue", "handler"]
    search_fields = ["message_id", "last_error"]
