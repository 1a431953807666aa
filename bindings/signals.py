"""Bindings saved or deleted anywhere reach the router (broker_project/sync.py)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from bindings.models import Binding
from broker_project.sync import notify
from broker_project.topology import BindingDeleted, BindingSaved
from queues.store import binding_spec


def _spec(instance: Binding) -> Any:
    # Read the names now: after a cascade the related rows are gone.
    return binding_spec(instance, exchange=instance.exchange.name, queue=instance.queue.name)


@receiver(post_save, sender=Binding, dispatch_uid="binding_saved")
def binding_saved(sender: type[Binding], instance: Binding, **kwargs: Any) -> None:
    notify(BindingSaved(_spec(instance)))


@receiver(post_delete, sender=Binding, dispatch_uid="binding_deleted")
def binding_deleted(sender: type[Binding], instance: Binding, **kwargs: Any) -> None:
    notify(BindingDeleted(_spec(instance)))
