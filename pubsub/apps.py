"""App configuration of `pubsub`: the outbox that Django code publishes through."""

from __future__ import annotations

from django.apps import AppConfig


class PubsubConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "pubsub"
    verbose_name = "Publishing from Django code"
