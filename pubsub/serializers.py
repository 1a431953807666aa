"""HTTP shapes of the outbox (docs/protocol.md, HTTP API)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class OutboxStateSerializer(serializers.Serializer[Any]):
    depth = serializers.IntegerField(help_text="messages published from Django code, not yet routed")
    oldest_age_seconds = serializers.FloatField(
        allow_null=True, help_text="how long the oldest of them has waited; null when none waits"
    )
