"""The Binding model: routes an exchange's messages to a queue, or to another exchange
(RabbitMQ's exchange-to-exchange bindings), which routes them on by its own bindings."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from broker.engine.errors import LimitExceeded
from broker.engine.exchanges import routing_kind_of
from broker.engine.jsoncodec import canonical
from broker.engine.routing import DestinationType
from broker.engine.rules import (
    binding_arguments,
    key_field,
    object_field,
    refuse_default_exchange,
    refuse_holding_queue,
)
from common.limits import ensure_room
from common.validators import collect, refuse_json_input
from exchanges.models import Exchange
from queues.models import Queue


class Binding(models.Model):
    exchange = models.ForeignKey(Exchange, on_delete=models.CASCADE, related_name="bindings")
    # The destination: a queue or an exchange, exactly one of the two.
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="bindings", null=True, blank=True)
    destination_exchange = models.ForeignKey(
        Exchange, on_delete=models.CASCADE, related_name="incoming_bindings", null=True, blank=True,
        help_text="instead of a queue: the exchange that routes the matching messages on",
    )
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
            # A missing destination is NULL, distinct from every other NULL: each
            # constraint holds for its own kind of binding only.
            models.UniqueConstraint(
                fields=["exchange", "queue", "binding_key", "arguments_key"],
                name="binding_unique",
            ),
            models.UniqueConstraint(
                fields=["exchange", "destination_exchange", "binding_key", "arguments_key"],
                name="binding_to_exchange_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(queue__isnull=False, destination_exchange__isnull=True)
                | models.Q(queue__isnull=True, destination_exchange__isnull=False),
                name="binding_one_destination",
            ),
        ]

    @property
    def destination_type(self) -> DestinationType:
        return DestinationType.QUEUE if self.queue_id is not None else DestinationType.EXCHANGE

    @property
    def destination_name(self) -> str:
        destination = self.queue if self.queue_id is not None else self.destination_exchange
        assert destination is not None
        return destination.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.arguments_key = canonical(self.arguments)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "arguments" in update_fields:
            kwargs["update_fields"] = {*update_fields, "arguments_key"}
        super().save(*args, **kwargs)

    def clean(self) -> None:
        """The API's rules for the admin's forms: a refused row never reaches the router."""
        errors: dict[str, list[str]] = {}
        if self.arguments is None:  # the form's emptied box, or `null`: none, as the API's None
            self.arguments = {}
        collect(errors, "binding_key", lambda: key_field("binding_key", self.binding_key))
        if not refuse_json_input(errors, "arguments", self.arguments):  # else they cannot be read
            collect(errors, "arguments", lambda: object_field("arguments", self.arguments))
        if (self.queue_id is None) == (self.destination_exchange_id is None):
            errors.setdefault("queue", []).append("give a queue or a destination exchange, not both")
        destination = self.destination_exchange if self.destination_exchange_id is not None else None
        if destination is not None:
            collect(errors, "destination_exchange",
                    lambda: refuse_default_exchange(destination.name, field="destination_exchange"))
        queue = self.queue if self.queue_id is not None else None
        if queue is not None:  # only its delayed exchange fills a holding queue, as binding_create says
            collect(errors, "queue", lambda: refuse_holding_queue(queue.name))
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
            queue=self.queue_id,
            destination_exchange=self.destination_exchange_id,
            binding_key=self.binding_key,
            arguments_key=canonical(self.arguments),
        ).exclude(pk=self.pk)
        if duplicate.exists():
            raise ValidationError("an identical binding exists")
        if self._state.adding:  # as binding_create: past MAX_BINDINGS only an identical binding is found
            try:
                ensure_room(Binding, setting="MAX_BINDINGS", kind="bindings")
            except LimitExceeded as error:
                raise ValidationError(error.message) from None

    def __str__(self) -> str:
        key = f" [{self.binding_key}]" if self.binding_key else ""
        kind = "exchange " if self.destination_type is DestinationType.EXCHANGE else ""
        return f"{self.exchange.name} -> {kind}{self.destination_name}{key}"
