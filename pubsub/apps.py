"""App configuration of `pubsub`: the outbox that Django code publishes through."""

from __future__ import annotations

from django.apps import AppConfig


class PubsubConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "pubsub"
    verbose_name = "Publishing from Django code"

    def ready(self) -> None:
        from django.db import transaction
        from django.db.models.signals import post_delete, post_save

        from . import streams
        from .models import ChangeStream

        def saved(instance: ChangeStream, **kwargs: object) -> None:
            model = instance.content_type.model_class()
            streams.forget_admin_streams(model)
            # Again at its commit: a read by another thread before it would not see the row.
            transaction.on_commit(lambda: streams.forget_admin_streams(model))

        streams.connect()
        post_save.connect(saved, sender=ChangeStream, weak=False, dispatch_uid="pubsub.changestream.saved")
        post_delete.connect(
            lambda **kwargs: streams.forget_admin_streams(), sender=ChangeStream, weak=False,
            dispatch_uid="pubsub.changestream.deleted",
        )
