"""App configuration of `pubsub`: the outbox that Django code publishes through."""

from __future__ import annotations

from django.apps import AppConfig


class PubsubConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "pubsub"
    verbose_name = "Publishing from Django code"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from . import streams
        from .models import ChangeStream

        streams.connect()
        for signal in (post_save, post_delete):
            signal.connect(lambda **kwargs: streams.forget_admin_streams(), sender=ChangeStream, weak=False)
