"""HTTP shapes of exchanges (docs/protocol.md, HTTP API): translation only, no rules.

Names, types and arguments are checked by the services, which give the
stable error codes (403 for a reserved name, 400 for a bad one).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from broker.engine.exchanges import ExchangeType
from common.fields import FormBooleanField, StrictBooleanField, StrictCharField


class ExchangeSerializer(serializers.Serializer[Any]):
    name = StrictCharField(trim_whitespace=False, help_text="1 to 255 of A-Z a-z 0-9 _ . : -")
    type = serializers.ChoiceField(choices=[kind.value for kind in ExchangeType])
    durable = FormBooleanField(default=True)
    auto_delete = StrictBooleanField(default=False)
    arguments = serializers.DictField(default=dict)


class ExchangeBindingSerializer(serializers.Serializer[Any]):
    """A binding, as an exchange's detail lists it and as /api/bindings/ shows it
    (bindings.serializers.BindingSerializer is this shape)."""

    id = serializers.IntegerField(read_only=True)
    exchange = serializers.CharField(source="exchange.name", read_only=True)
    queue = serializers.CharField(
        source="queue.name", read_only=True, allow_null=True, help_text="null when the binding is to an exchange"
    )
    destination_exchange = serializers.CharField(
        source="destination_exchange.name", read_only=True, allow_null=True,
        help_text="the exchange it routes on to; null when the binding is to a queue",
    )
    binding_key = serializers.CharField(read_only=True)
    arguments = serializers.DictField(read_only=True)


class ExchangeDetailSerializer(ExchangeSerializer):
    bindings = ExchangeBindingSerializer(many=True, read_only=True)


class PublishSerializer(serializers.Serializer[Any]):
    routing_key = serializers.CharField(default="", allow_blank=True, trim_whitespace=False)
    body = serializers.JSONField(help_text="any JSON value (required)")
    headers = serializers.DictField(default=dict, help_text="string keys, JSON values")
    persistent = serializers.BooleanField(default=True)
    message_id = serializers.CharField(required=False, help_text="set by the broker unless given")


class PublishedSerializer(serializers.Serializer[Any]):
    message_id = serializers.CharField()
    routed = serializers.IntegerField(help_text="the number of queues the message reached")
