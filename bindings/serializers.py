"""HTTP shapes of bindings (docs/protocol.md, HTTP API): translation only.

Exchanges and queues are named, not numbered; the services check that they
exist and that the binding is allowed.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.fields import StrictCharField
from exchanges.serializers import ExchangeBindingSerializer


class BindingSerializer(ExchangeBindingSerializer):
    """A binding: the shape an exchange's detail lists its bindings in."""


class BindingCreateSerializer(serializers.Serializer[Any]):
    # Blank allowed: "" (the default exchange) is refused by the service with 403, not 400.
    exchange = StrictCharField(allow_blank=True, trim_whitespace=False, help_text="the exchange's name")
    queue = StrictCharField(
        required=False, trim_whitespace=False, help_text="the queue's name (or give destination_exchange)"
    )
    destination_exchange = StrictCharField(
        required=False, allow_blank=True, trim_whitespace=False,
        help_text="instead of a queue: the exchange the matching messages are routed on to",
    )
    binding_key = StrictCharField(default="", allow_blank=True, trim_whitespace=False)
    arguments = serializers.DictField(
        default=dict, help_text="headers exchanges: the headers to match, and x-match (all, any)"
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Before the permission checks, which need to know what the destination is.
        if ("queue" in attrs) == ("destination_exchange" in attrs):
            message = "give a queue or a destination exchange, not both"
            raise serializers.ValidationError({"queue": [message], "destination_exchange": [message]})
        return attrs
