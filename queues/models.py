"""Queue definitions and the stored messages of durable queues.

Message rows are written and deleted in batches by the store (storage/store.py),
never one by one from views: the admin only reads and deletes them.
"""

from __future__ import annotations

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models

from broker.engine.jsoncodec import json_equal
from broker.engine.names import held_for
from broker.engine.queues import parse_queue_arguments, refuse_two_spellings
from broker.engine.rules import check_name, is_name, object_field
from common.limits import ensure_room
from common.validators import collect, refuse_json_input, validate_broker_name


class Queue(models.Model):
    name = models.CharField(max_length=255, unique=True, validators=[validate_broker_name])
    durable = models.BooleanField(default=True)
    auto_delete = models.BooleanField(default=False)
    arguments = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """The API's rules for the admin's forms: a refused row never reaches the router."""
        errors: dict[str, list[str]] = {}
        if self.arguments is None:  # the form's emptied box, or `null`: none, as the API's None
            self.arguments = {}
        if self._state.adding and is_name(self.name):
            collect(errors, "name", lambda: check_name("queue", self.name))
        if not refuse_json_input(errors, "arguments", self.arguments):  # else they cannot be read
            if not self._state.adding:
                self._refuse_fixed_changes(errors)
            collect(errors, "arguments", lambda: parse_queue_arguments(object_field("arguments", self.arguments)))
            collect(errors, "arguments",
                    lambda: refuse_two_spellings(self.arguments if isinstance(self.arguments, dict) else None))
        if self._state.adding:  # as queue_declare: past MAX_QUEUES only an existing queue is kept
            collect(errors, NON_FIELD_ERRORS, lambda: ensure_room(Queue, setting="MAX_QUEUES", kind="queues"))
        if errors:
            raise ValidationError(errors)


    def _refuse_fixed_changes(self, errors: dict[str, list[str]]) -> None:
        """What the API never changes on a stored queue (a redeclaration that differs is
        `precondition_failed`): its durability, whose loss deletes the queue and its stored
        messages at the next start; and anything of a delayed exchange's holding queue, made
        and kept with its exchange (an `x-max-length` of 0 dropped the waiting messages)."""
        stored = Queue.objects.filter(pk=self.pk).values("durable", "auto_delete", "arguments").first()
        if stored is None:
            return
        if held_for(self.name) is not None:
            if not (stored["durable"] == self.durable and stored["auto_delete"] == self.auto_delete
                    and json_equal(stored["arguments"] or {}, self.arguments or {})):
                errors.setdefault(NON_FIELD_ERRORS, []).append(
                    f"queue {self.name!r} holds a delayed exchange's messages: it is made, kept and deleted "
                    "with its exchange, unchanged"
                )
        elif stored["durable"] != self.durable:
            durability = "durable" if stored["durable"] else "not durable"
            errors["durable"] = [f"queue {self.name!r} is {durability}: delete it and declare it anew"]


class Message(models.Model):
    """A persistent message of a durable queue, kept until acknowledged."""

    # Assigned by the broker, increasing: a queue's order after a restart is
    # the order of these ids (docs/protocol.md, "Durability").
    id = models.BigIntegerField(primary_key=True)
    # No index of its own: message_queue_id (queue, id) serves every lookup by queue,
    # and each index is paid for on every stored publish.
    queue = models.ForeignKey(
        Queue, on_delete=models.CASCADE, related_name="stored_messages", db_index=False
    )
    message_id = models.CharField(max_length=64)
    exchange = models.CharField(max_length=255, blank=True)
    routing_key = models.CharField(max_length=255, blank=True)
    # The body's JSON text exactly as published: serialised once, never re-encoded.
    body = models.TextField()
    headers = models.JSONField(default=dict)
    # ISO-8601 text as on the wire, so a redelivery repeats it byte for byte.
    published_at = models.CharField(max_length=40)
    # Where the broker dead-lettered the message from (broker/engine/messages.py, `origin`):
    # what a replay follows. Null for every message the broker did not dead-letter itself.
    origin_exchange = models.CharField(max_length=255, null=True, blank=True)
    origin_routing_key = models.CharField(max_length=255, null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["queue", "id"], name="message_queue_id")]

    def __str__(self) -> str:
        return f"{self.message_id} in queue {self.queue.name}"
