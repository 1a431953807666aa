"""HTTP shapes of queues and polled messages (docs/protocol.md, HTTP API): translation only.

Names and arguments are checked by the services (stable error codes).
"""

from __future__ import annotations

from typing import Any, Final

from rest_framework import serializers

from common.fields import FormBooleanField, StrictBooleanField, StrictCharField, StrictIntegerField


class QueueDeclareSerializer(serializers.Serializer[Any]):
    name = StrictCharField(
        default="", allow_blank=True, trim_whitespace=False, help_text='"" = a generated amq.gen-... name'
    )
    durable = FormBooleanField(default=True)
    auto_delete = StrictBooleanField(default=False)
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


# The largest `count`, `offset` or `limit` a call takes: a 32-bit int, far past what one
# call returns, and small enough for every link and database.
MAX_QUERY_INT: Final = 2**31 - 1


class QueueGetSerializer(serializers.Serializer[Any]):
    count = StrictIntegerField(default=1, min_value=1, max_value=MAX_QUERY_INT)
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


class BrowsedMessageSerializer(MessageSerializer):
    """A message as the browser lists it: its id in the queue, and whether it is ready or
    delivered and unacknowledged."""

    id = serializers.CharField(help_text="names the message while it stays in its queue: s<store id> or m<seq>")
    state = serializers.ChoiceField(choices=["ready", "unacked"])


class MessagePageSerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField(help_text="messages that match")
    complete = serializers.BooleanField(help_text="false when the queue was too long to look at every message")
    offset = serializers.IntegerField()
    messages = BrowsedMessageSerializer(many=True)


class MessageFilterSerializer(serializers.Serializer[Any]):
    # Not trimmed: a routing key or a path may begin or end with a space (DRF trims by default).
    routing_key = StrictCharField(required=False, trim_whitespace=False)
    header = serializers.DictField(required=False, help_text='{"name": ..., "value": ...}')
    path = StrictCharField(
        required=False, trim_whitespace=False, help_text="keys into a JSON body, joined by dots: order.country"
    )
    value = serializers.JSONField(required=False, help_text="the JSON value at `path`")


class MessageActionSerializer(serializers.Serializer[Any]):
    """Which messages (`ids`, or `all` that match `filter`) and, to move or copy, where to."""

    ids = serializers.ListField(child=StrictCharField(), required=False)
    all = StrictBooleanField(required=False, default=False)
    filter = MessageFilterSerializer(required=False)
    exchange = StrictCharField(
        required=False, allow_blank=True, trim_whitespace=False, help_text="move and copy: where to"
    )
    routing_key = StrictCharField(required=False, allow_blank=True, default="", trim_whitespace=False)


class MessageActionDoneSerializer(serializers.Serializer[Any]):
    taken = serializers.IntegerField(help_text="messages deleted, moved, copied or replayed")
    skipped = serializers.IntegerField(
        help_text="selected but left as they were: unacknowledged, gone meanwhile, or whose copy would reach no queue"
    )
    routed = serializers.IntegerField(help_text="queues the copies reached")
    complete = serializers.BooleanField(
        help_text="false: the queue was longer than 200,000 messages, and `all: true` took only from those looked at"
    )
