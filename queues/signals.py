"""Queue definitions saved or deleted anywhere reach the router (broker_project/sync.py)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from broker_project.sync import notify
from broker_project.topology import QueueDeleted, QueueSaved
from queues.models import Queue
from queues.store import queue_spec


@receiver(post_save, sender=Queue, dispatch_uid="queue_saved")
def queue_saved(sender: type[Queue], instance: Queue, **kwargs: Any) -> None:
    notify(QueueSaved(queue_spec(instance)))


@receiver(post_delete, sender=Queue, dispatch_uid="queue_deleted")
def queue_deleted(sender: type[Queue], instance: Queue, **kwargs: Any) -> None:
    notify(QueueDeleted(instance.name, instance.pk))
