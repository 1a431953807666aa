"""HTTP shapes of queues and polled messages (docs/protocol.md, HTTP API): translation only.

Names and arguments are checked by the services (stable error codes).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.fields import FormBooleanField


class QueueDeclareSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(
        default="", allow_blank=True, trim_whitespace=False, help_text='"" = a generated amq.gen-... name'
    )
    durable = FormBooleanField(default=True)
    auto_delete = serializers.BooleanField(default=False)
    arguments = serializers.DictField(
        default=dict,
        help_text="message_ttl (ms), max_length, overflow (drop-head, reject-publish), "
        "dead_letter_exchange, dead_letter_routing_key, expires (ms)",
    )


class QueueSerializer(serializers.Serializer[Any]):
    """A queue with its live counts; the counts are null when no router runs in this process."""

    name = serializers.CharField()
    durable = serializers.BooleanField()
    auto_delete = serializers.BooleanField()
    arguments = serializers.DictField()
    exclusive = serializers.BooleanField(help_text="a WebSocket subscription's private queue (read-only)")
    messages = serializers.IntegerField(allow_null=True)
    messages_ready = serializers.IntegerField(allow_null=True)
    messages_unacknowledged = serializers.IntegerField(allow_null=True)
    consumers = serializers.IntegerField(allow_null=True)


class QueueGetSerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField(default=1, min_value=1)
    ack = FormBooleanField(default=True)


class PurgedSerializer(serializers.Serializer[Any]):
    purged = serializers.IntegerField(help_text="ready messages removed")


class MessageSerializer(serializers.Serializer[Any]):
    """docs/protocol.md, "The message object", as a poll returns it."""

    message_id = serializers.CharField()
    exchange = serializers.CharField(allow_blank=True, help_text='"" is the default exchange')
    routing_key = serializers.CharField(allow_blank=True)
    body = serializers.JSONField()
    headers = serializers.DictField()
    persistent = serializers.BooleanField()
    published_at = serializers.CharField()
    redelivered = serializers.BooleanField()
