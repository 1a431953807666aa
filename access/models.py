"""API tokens and broker permissions (README, "Authentication and permissions").

A token is shown once when it is created and only its SHA-256 is stored, so a
copy of the database gives nobody a working token. A permission row gives a
user or a group three regular expressions over exchange and queue names, as
RabbitMQ's `set_permissions` does; the rules themselves live in access/rules.py.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Final

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models

from access.rules import RIGHTS, check_pattern

# 32 random bytes: as strong as the SHA-256 that stores them.
TOKEN_BYTES: Final = 32
# Shown in lists to tell tokens apart; too short to help a guess.
PREFIX_LENGTH: Final = 8
MAX_PATTERN: Final = 1024


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="what the token is for")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=PREFIX_LENGTH, editable=False, help_text="the token's first characters")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user", "name", "id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name or 'token'} {self.prefix}… of {self.user}"

    @classmethod
    def issue(cls, *, user: Any, name: str = "") -> tuple[ApiToken, str]:
        """A new token for `user`: (its row, the token itself, never stored)."""
        row = cls(user=user, name=name)
        token = row.set_token()
        row.save()
        return row, token

    def set_token(self) -> str:
        token = new_token()
        self.key_hash = hash_token(token)
        self.prefix = token[:PREFIX_LENGTH]
        return token


def _validate_pattern(value: str) -> None:
    try:
        check_pattern(value)
    except ValueError as error:
        raise ValidationError(str(error)) from None


class BrokerPermission(models.Model):
    """Configure, write and read patterns of a user or a group (exactly one of them)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="broker_permissions"
    )
    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.CASCADE, related_name="broker_permissions"
    )
    configure = models.CharField(
        max_length=MAX_PATTERN,
        blank=True,
        validators=[_validate_pattern],
        help_text="names that may be declared, deleted, purged, and bound to (queues); '' = none, '.*' = all",
    )
    write = models.CharField(
        max_length=MAX_PATTERN,
        blank=True,
        validators=[_validate_pattern],
        help_text="exchanges that may be published to (the default exchange is amq.default)",
    )
    read = models.CharField(
        max_length=MAX_PATTERN,
        blank=True,
        validators=[_validate_pattern],
        help_text="queues that may be consumed or got from; exchanges that may be subscribed to or bound from",
    )

    class Meta:
        verbose_name = "broker permission"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False),
                name="broker_permission_user_xor_group",
            )
        ]

    def __str__(self) -> str:
        who = f"user {self.user}" if self.user_id is not None else f"group {self.group}"
        return f"{who}: configure {self.configure!r}, write {self.write!r}, read {self.read!r}"

    def clean(self) -> None:
        if (self.user_id is None) == (self.group_id is None):
            raise ValidationError("give either a user or a group, not both")

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Saved from code as well as from the admin's form: a bad pattern never reaches a client.
        errors: dict[str, list[str]] = {}
        for right in RIGHTS:
            try:
                check_pattern(getattr(self, right))
            except ValueError as error:
                errors[right] = [str(error)]
        if errors:
            raise ValidationError(errors)
        super().save(*args, **kwargs)
