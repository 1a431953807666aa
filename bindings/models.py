"""The Binding model: routes an exchange's messages to a queue."""

from __future__ import annotations

from typing import Any

from django.db import models

from broker_project.engine.jsoncodec import canonical
from exchanges.models import Exchange
from queues.models import Queue


class Binding(models.Model):
    exchange = models.ForeignKey(Exchange, on_delete=models.CASCADE, related_name="bindings")
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="bindings")
    binding_key = models.CharField(max_length=255, blank=True)
    arguments = models.JSONField(default=dict, blank=True)
    # Bindings that differ only in `arguments` are distinct (PROTOCOL.md), but a
    # JSON column cannot be part of a unique constraint on every database:
    # compare its canonical text instead.
    arguments_key = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]  # creation order; no joins when the router loads them all
        constraints = [
            models.UniqueConstraint(
                fields=["exchange", "queue", "binding_key", "arguments_key"],
                name="binding_unique",
            )
        ]

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.arguments_key = canonical(self.arguments)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "arguments" in update_fields:
            kwargs["update_fields"] = {*update_fields, "arguments_key"}
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        key = f" [{self.binding_key}]" if self.binding_key else ""
        return f"{self.exchange.name} -> {self.queue.name}{key}"
