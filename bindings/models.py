"""The Binding model: routes an exchange's messages to a queue."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from broker.engine.errors import BrokerError
from broker.engine.exchanges import ExchangeType, parse_headers_match
from broker.engine.jsoncodec import canonical
from broker.engine.names import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS
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
        if not isinstance(self.arguments, dict):
            raise ValidationError({"arguments": ["must be an object"]})
        if self.exchange_id is None:
            return  # the form reports the missing exchange itself
        exchange = self.exchange
        if exchange.name in (DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS):
            raise ValidationError(
                {"exchange": ["the default exchange binds every queue by its name; it takes no other bindings"]}
            )
        if exchange.type == ExchangeType.HEADERS:
            try:
                parse_headers_match(self.arguments)
            except BrokerError as error:
                raise ValidationError({"arguments": (error.fields or {}).get("arguments") or [error.message]}) from None
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
