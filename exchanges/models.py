"""The Exchange model: the durable definition the router loads at start."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from broker.engine.exchanges import (
    DELAYED_TYPE,
    check_delayed_name,
    parse_exchange_type,
    routing_kind_of,
)
from broker.engine.names import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS, RESERVED_PREFIX
from broker.engine.rules import alternate_exchange_field, check_name, is_name, object_field
from common.validators import collect, refuse_json_input, validate_broker_name


class ExchangeType(models.TextChoices):
    DIRECT = "direct", "direct"
    FANOUT = "fanout", "fanout"
    TOPIC = "topic", "topic"
    HEADERS = "headers", "headers"
    DELAYED = "x-delayed-message", "x-delayed-message (routes as its x-delayed-type, after each message's x-delay)"


class Exchange(models.Model):
    name = models.CharField(max_length=255, unique=True, validators=[validate_broker_name])
    type = models.CharField(max_length=32, choices=ExchangeType.choices)
    durable = models.BooleanField(default=True)
    auto_delete = models.BooleanField(default=False)
    arguments = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"

    @property
    def belongs_to_broker(self) -> bool:
        """One of the broker's own exchanges (`amq.*`, the default one): never deleted, as
        exchange_delete says, since nothing may declare them again."""
        return self.name in (DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS) or self.name.startswith(RESERVED_PREFIX)

    def clean(self) -> None:
        """The API's rules for the admin's forms (docs/protocol.md: `amq.` names are the broker's)."""
        errors: dict[str, list[str]] = {}
        if self.arguments is None:  # the form's emptied box, or `null`: none, as the API's None
            self.arguments = {}
        # Only new rows: the built-in `amq.*` exchanges are rows and stay editable.
        if self._state.adding and is_name(self.name):
            collect(errors, "name", lambda: check_name("exchange", self.name))
        if not self._state.adding:
            self._refuse_another_routing(errors)
        if not refuse_json_input(errors, "arguments", self.arguments):  # else they cannot be read
            collect(errors, "arguments", lambda: object_field("arguments", self.arguments))
        if not errors and isinstance(self.arguments, dict):
            # What the router needs to load it: a delayed exchange's type, an alternate's name.
            collect(errors, "arguments", lambda: alternate_exchange_field(self.arguments))
            if self.type in ExchangeType.values:
                collect(errors, "arguments", lambda: routing_kind_of(self.type, self.arguments))
                collect(errors, "name", lambda: check_delayed_name(parse_exchange_type(self.type), self.name))
        if errors:
            raise ValidationError(errors)

    def _refuse_another_routing(self, errors: dict[str, list[str]]) -> None:
        """As a redeclaration's `precondition_failed`: the router keeps the type it has, and a
        delayed exchange's `x-delayed-type` (it refused the change, the row kept it: the router
        and the database then disagreed until the next start)."""
        stored = Exchange.objects.filter(pk=self.pk).values("type", "arguments").first()
        if stored is None:
            return
        if stored["type"] != self.type:
            errors["type"] = [f"exchange {self.name!r} is of type {stored['type']}: delete it and declare it anew"]
        elif self.type == ExchangeType.DELAYED:
            routes_as = (stored["arguments"] or {}).get(DELAYED_TYPE)
            wanted = self.arguments.get(DELAYED_TYPE) if isinstance(self.arguments, dict) else None
            if wanted != routes_as:
                errors["arguments"] = [
                    f"exchange {self.name!r} routes as {DELAYED_TYPE} {routes_as!r}: delete it and declare it anew"
                ]
