"""Admin of API tokens and broker permissions.

A token is made by adding one: its value is shown once, in the page's
message, and only its hash is kept. Tokens cannot be edited, only deleted
(revoked) and made anew. A staff user who is not a superuser adds tokens
for themselves only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import ForeignKey
from django.forms import ModelChoiceField
from django.http import HttpRequest

from access.models import ApiToken, BrokerPermission


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    list_display = ["user", "name", "prefix", "created_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "name", "prefix"]
    fields = ["user", "name", "prefix", "created_at"]
    readonly_fields = ["prefix", "created_at"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a token is revoked (deleted) and issued anew, never edited

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        """A staff user who may add tokens adds them for themselves only: the page shows the
        new token, which acts with its user's rights (a superuser's, say). Superusers choose."""
        if db_field.name == "user" and not request.user.is_superuser:
            me: Any = request.user.pk  # an admin page's user is logged in: never None here
            kwargs["queryset"] = get_user_model()._default_manager.filter(pk=me)
            kwargs["initial"] = me
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        token = obj.set_token()
        super().save_model(request, obj, form, change)
        messages.warning(
            request,
            f"The new token of {obj.user} is {token} — copy it now: it is stored hashed and not shown again.",
        )


@admin.register(BrokerPermission)
class BrokerPermissionAdmin(admin.ModelAdmin[BrokerPermission]):
    list_display = ["user", "group", "configure", "write", "read"]
    list_select_related = ["user", "group"]
    list_filter = ["group"]
    search_fields = ["user__username", "group__name", "configure", "write", "read"]
