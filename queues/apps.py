"""App configuration of `queues`."""

from __future__ import annotations

from django.apps import AppConfig


class QueuesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "queues"
    verbose_name = "Queues"

