"""Admin of the outbox (what waits for the router), of model change streams, and of the
handlers: their processes with their counts, and the messages waiting for a retry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.contrib.contenttypes.models import ContentType
from django.db.models import ForeignKey
from django.forms import ModelChoiceField
from django.http import HttpRequest
from django.utils import timezone

from access.admin_rights import BrokerRightsRequired
from access.rules import Permissions

from .models import ChangeStream, HandlerAttempt, HandlerStatus, OutboxRow
from .streamable import check_streamable

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
class ChangeStreamAdmin(BrokerRightsRequired[ChangeStream]):
    list_display = ["content_type", "exchange", "fields", "enabled"]
    list_filter = ["enabled"]

    def require_rights_to_save(
        self, permissions: Permissions, values: Mapping[str, Any], stored: ChangeStream | None
    ) -> None:
        """A stream publishes to its exchange: write on it, as a publish needs, and on the
        exchange it published to until now, whose messages the change stops or alters."""
        for exchange in sorted({values.get("exchange") or "", stored.exchange if stored is not None else ""} - {""}):
            permissions.require("write", "exchange", exchange)

    def require_rights_to_delete(self, permissions: Permissions, obj: ChangeStream) -> None:
        permissions.require("write", "exchange", obj.exchange)

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        """Only models the admin user may view: a stream publishes every change of its model,
        so adding one must not show a staff user rows the admin hides from them."""
        if db_field.name == "content_type":
            kwargs["queryset"] = ContentType.objects.filter(pk__in=_streamable_for(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


def _streamable_for(request: HttpRequest) -> list[int]:
    """The content types of the models `request.user` may view and a stream may publish."""
    allowed: list[int] = []
    for content_type in ContentType.objects.all():
        model = content_type.model_class()
        if model is None:
            continue
        try:
            check_streamable(model)
        except ValueError:
            continue
        opts = model._meta
        if any(request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
               for action in ("view", "change")):
            allowed.append(content_type.pk)
    return allowed


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
