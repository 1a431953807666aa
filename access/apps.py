"""App configuration of `access`: API tokens and broker permissions."""

from __future__ import annotations

from django.apps import AppConfig


class AccessConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "access"
    verbose_name = "Access"

    def ready(self) -> None:
        from access import openapi  # noqa: F401  # registers the Bearer scheme with drf-spectacular
