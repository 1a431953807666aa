"""The Binding model: routes an exchange's messages to a queue."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from broker.engine.exchanges import routing_kind_of
from broker.engine.jsoncodec import canonical
from broker.engine.rules import binding_arguments, key_field, object_field, refuse_default_exchange
from common.validators import collect
from exchanges.models import Exchange
from queues.models import Queue


class Binding(models.Model):
    exchange = models.ForeignKey(Exchange, on_delete=models.CASCADE, related_name="bindings")
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="bindings")
    binding_key = models.CharField(max_length=255, blank=True)
    arguments = models.JSONField(default=dict, blank=True)
    # Bindings that differ only in `arguments` are distinct (docs/protocol.md), but a
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

    def clean(self) -> None:
        """The API's rules for the admin's forms: a refused row never reaches the router."""
        errors: dict[str, list[str]] = {}
        collect(errors, "binding_key", lambda: key_field("binding_key", self.binding_key))
        collect(errors, "arguments", lambda: object_field("arguments", self.arguments))
        if self.exchange_id is not None and not errors:  # else the form reports the missing exchange
            exchange = self.exchange
            collect(errors, "exchange", lambda: refuse_default_exchange(exchange.name))
            collect(errors, "arguments",
                    lambda: binding_arguments(routing_kind_of(exchange.type, exchange.arguments), self.arguments))
        if errors:
            raise ValidationError(errors)
        # `arguments_key` is not on the form, so Django's own constraint check skips
        # the unique constraint: a duplicate would fail on save with a 500.
        duplicate = Binding.objects.filter(
            exchange_id=self.exchange_id,
            queue_id=self.queue_id,
            binding_key=self.binding_key,
            arguments_key=canonical(self.arguments),
        ).exclude(pk=self.pk)
        if self.queue_id is not None and duplicate.exists():
            raise ValidationError("an identical binding exists")

    def __str__(self) -> str:
        key = f" [{self.binding_key}]" if self.binding_key else ""
        return f"{self.exchange.name} -> {self.queue.name}{key}"
