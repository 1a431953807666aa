"""Exchange definitions saved or deleted anywhere reach the router (broker_project/sync.py)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from broker_project.sync import notify
from broker_project.topology import ExchangeDeleted, ExchangeSaved
from exchanges.models import Exchange
from queues.store import exchange_spec


@receiver(post_save, sender=Exchange, dispatch_uid="exchange_saved")
def exchange_saved(sender: type[Exchange], instance: Exchange, **kwargs: Any) -> None:
    notify(ExchangeSaved(exchange_spec(instance)))


@receiver(post_delete, sender=Exchange, dispatch_uid="exchange_deleted")
def exchange_deleted(sender: type[Exchange], instance: Exchange, **kwargs: Any) -> None:
    notify(ExchangeDeleted(instance.name))
