"""The broker's rights in the admin (access/rules.py): adding, changing or deleting an
exchange, a queue, a binding or a model change stream there needs what the API asks for the
same change, as the message browser does.

Django's model permissions let a staff user into those pages; the broker's rights say what
they may do to which name. Without them a user the API refuses could purge a queue (an
`x-max-length` of 0) or bind an exchange into a queue in the admin. A refusal is the form's
error, or on delete the page's message, and nothing is changed. Superusers may do
everything, as in the API.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from access.rules import Permissions
from access.selectors import user_permissions
from broker.engine.errors import BrokerError

_M = TypeVar("_M", bound=Model)

Action = Callable[[Any, HttpRequest, Any], HttpResponse | None]


def refusal(error: BrokerError) -> str:
    """What the admin shows for a refused change: the code the API answers, and its sentence."""
    return f"{error.code}: {error.message}"


class BrokerRightsRequired(admin.ModelAdmin[_M]):
    """A model admin whose saves and deletes need the user's broker rights, as the API's."""

    def require_rights_to_save(self, permissions: Permissions, values: Mapping[str, Any], stored: _M | None) -> None:
        """Raise `forbidden` unless `permissions` allow saving the form's `values` (its cleaned
        data: a field with an error of its own is missing) over `stored` (None when adding)."""
        raise NotImplementedError

    def require_rights_to_delete(self, permissions: Permissions, obj: _M) -> None:
        """Raise `forbidden` unless `permissions` allow deleting `obj`."""
        raise NotImplementedError

    def get_form(self, request: HttpRequest, obj: _M | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return _rights_checked(form, lambda values: self.require_rights_to_save(user_permissions(request.user), values, obj))

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> Any:
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and self.has_delete_permission(request, obj):
            refused = self._refusal_to_delete(request, [obj])
            if refused is not None:
                self.message_user(request, refused, messages.ERROR)
                return HttpResponseRedirect(self._back_to(request, obj))
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        """Django's "delete selected" deletes nothing when the user may not delete one of them.
        Django 6.1 asks by `action_location` and holds each action in an `Action` (a tuple
        before): both are taken, so that neither version warns."""
        if action_location is None:
            actions: dict[str, Any] = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[call-arg]
        entry = actions.get("delete_selected")
        if isinstance(entry, tuple):
            action, name, description = entry
            actions["delete_selected"] = (self._checked(action), name, description)
        elif entry is not None:
            actions["delete_selected"] = dataclasses.replace(entry, func=self._checked(entry.func))
        return actions

    def _checked(self, action: Action) -> Action:
        def delete_selected(modeladmin: Any, request: HttpRequest, queryset: QuerySet[_M]) -> HttpResponse | None:
            refused = self._refusal_to_delete(request, queryset)
            if refused is not None:
                self.message_user(request, refused, messages.ERROR)
                return None  # the list again, with the message
            return action(modeladmin, request, queryset)

        return delete_selected

    def _refusal_to_delete(self, request: HttpRequest, objs: Iterable[_M]) -> str | None:
        permissions = user_permissions(request.user)
        for obj in objs:
            try:
                self.require_rights_to_delete(permissions, obj)
            except BrokerError as error:
                return refusal(error)
        return None

    def _back_to(self, request: HttpRequest, obj: _M) -> str:
        site, opts = self.admin_site.name, self.opts
        if self.has_view_or_change_permission(request, obj):
            return reverse(f"{site}:{opts.app_label}_{opts.model_name}_change", args=[quote(obj.pk)], current_app=site)
        return reverse(f"{site}:index", current_app=site)


def _rights_checked(form: type[ModelForm[Any]], require: Callable[[Mapping[str, Any]], None]) -> type[ModelForm[Any]]:
    """`form`, whose clean() also asks `require` about its cleaned values: a refusal is the
    form's error, before the model's clean() and before anything is saved."""

    class RightsChecked(form):  # type: ignore[valid-type, misc]
        def clean(self) -> dict[str, Any]:
            cleaned: dict[str, Any] = super().clean()
            try:
                require(cleaned)
            except BrokerError as error:
                raise ValidationError(refusal(error), code=error.code) from None
            return cleaned

    RightsChecked.__name__ = RightsChecked.__qualname__ = form.__name__
    return RightsChecked
