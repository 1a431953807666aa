"""App configuration of `exchanges`."""

from __future__ import annotations

from django.apps import AppConfig


class ExchangesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "exchanges"
    verbose_name = "Exchanges"

