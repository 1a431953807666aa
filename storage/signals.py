"""Exchange, queue and binding rows saved or deleted anywhere reach the router (storage/sync.py)."""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver

from bindings.models import Binding
from broker.engine.names import holding_queue
from broker.protocol.topology import (
    BindingDeleted,
    BindingSaved,
    ExchangeDeleted,
    ExchangeSaved,
    QueueDeleted,
    QueueSaved,
)
from exchanges.models import Exchange, ExchangeType
from queues.models import Queue
from storage.store import binding_spec, exchange_spec, queue_spec
from storage.sync import notify


@receiver(post_save, sender=Exchange, dispatch_uid="exchange_saved")
def exchange_saved(sender: type[Exchange], instance: Exchange, **kwargs: Any) -> None:
    notify(ExchangeSaved(exchange_spec(instance)))
    if instance.type == ExchangeType.DELAYED:
        # Its messages wait, stored, in a queue of its own (made here, so that one declared
        # in the admin or with the ORM has it too): after the exchange, as the router needs.
        Queue.objects.get_or_create(name=holding_queue(instance.name), defaults={"durable": True})


@receiver(post_delete, sender=Exchange, dispatch_uid="exchange_deleted")
def exchange_deleted(sender: type[Exchange], instance: Exchange, **kwargs: Any) -> None:
    notify(ExchangeDeleted(instance.name))
    if instance.type == ExchangeType.DELAYED:
        for holding in Queue.objects.filter(name=holding_queue(instance.name)):
            holding.delete()  # with the messages still waiting, as RabbitMQ's plugin


@receiver(post_save, sender=Queue, dispatch_uid="queue_saved")
def queue_saved(sender: type[Queue], instance: Queue, **kwargs: Any) -> None:
    notify(QueueSaved(queue_spec(instance)))


@receiver(pre_delete, sender=Queue, dispatch_uid="queue_locked")
def queue_locked(sender: type[Queue], instance: Queue, using: str, **kwargs: Any) -> None:
    """PostgreSQL: lock the queue's row in every deletion through Django (the API, the admin,
    a delayed exchange's holding queue), before Django deletes the queue's messages (in one
    statement, after pre_delete) and the row itself; several queues in id order (Django sorts
    them), as the router's writer locks them (storage/store.py, `_queue_ids`).

    The foreign key to the queue is checked only at COMMIT: without the lock, copies the
    writer committed meanwhile were left behind and the deletion failed, or the deletion
    committed first and the writer's commit failed, again at every retry. With it, each waits
    for the other: the writer then leaves the deleted queue's copies out, or the deletion takes
    the copies committed before it."""
    if connections[using].vendor == "postgresql":
        list(Queue.objects.using(using).select_for_update().filter(pk=instance.pk).order_by().values_list("pk"))


@receiver(post_delete, sender=Queue, dispatch_uid="queue_deleted")
def queue_deleted(sender: type[Queue], instance: Queue, **kwargs: Any) -> None:
    notify(QueueDeleted(instance.name, instance.pk))


@receiver(post_save, sender=Binding, dispatch_uid="binding_saved")
def binding_saved(sender: type[Binding], instance: Binding, **kwargs: Any) -> None:
    notify(BindingSaved(binding_spec(instance)))


# Before the delete, not after: a binding's destination is a nullable key, which Django's
# cascade does not order, so its queue or exchange may be gone by post_delete. What is
# notified is sent only if the delete commits.
@receiver(pre_delete, sender=Binding, dispatch_uid="binding_deleted")
def binding_deleted(sender: type[Binding], instance: Binding, **kwargs: Any) -> None:
    notify(BindingDeleted(binding_spec(instance)))
