"""The outbox table: messages published from Django code, waiting for the router.

Its columns are a documented contract (docs/outbox.md, version 1): programs
other than this project may write rows in their own transactions, and the
router reads them. A row is removed in the same transaction that stores the
message's durable copies, so each row is routed exactly once.
"""

from __future__ import annotations

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class OutboxRow(models.Model):
    # The order the router takes rows in: a sequence, so a process's successive
    # transactions keep their order, and so do the rows of one transaction.
    id = models.BigAutoField(primary_key=True)
    message_id = models.CharField(max_length=64)
    # The database's own defaults, so that programs writing rows of their own may
    # leave these columns out (docs/outbox.md, "The table").
    exchange = models.CharField(max_length=255, blank=True, db_default="", help_text='"" is the default exchange')
    routing_key = models.CharField(max_length=255, blank=True, db_default="")
    body = models.TextField(help_text="the body's JSON text")
    headers = models.TextField(db_default="{}", help_text="a JSON object's text")
    persistent = models.BooleanField(db_default=True)
    published_at = models.CharField(
        max_length=40, blank=True, db_default="", help_text='ISO 8601, UTC, as on the wire; "": when routed'
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pubsub_outbox"
        ordering = ["id"]
        verbose_name = "outbox message"

    def __str__(self) -> str:
        exchange = self.exchange or "(default)"
        return f"{self.message_id} to {exchange} [{self.routing_key}]"


class ChangeStream(models.Model):
    """A model change stream declared in the admin (pubsub/streams.py): the model's
    creates, updates and deletes are published to `exchange`."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, verbose_name="model")
    exchange = models.CharField(max_length=255, help_text="the exchange the changes are published to")
    fields = models.CharField(
        max_length=1024, blank=True, help_text="comma-separated field names to publish; empty: every field"
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        verbose_name = "model change stream"

    def __str__(self) -> str:
        return f"{self.content_type.app_label}.{self.content_type.model} to {self.exchange}"

    def clean(self) -> None:
        """The rules of `stream()` for the admin's form: a stream the code API would refuse is
        refused here too, before a staff user's row publishes a secret to an exchange."""
        from django.core.exceptions import ValidationError

        from exchanges.models import Exchange

        if self.exchange and not Exchange.objects.filter(name=self.exchange).exists():
            raise ValidationError({"exchange": [f"exchange {self.exchange!r} does not exist"]})
        model = self.content_type.model_class() if self.content_type_id else None
        if model is not None:
            from pubsub.streamable import check_no_secret, check_streamable, check_written_to_the_broker_s_database

            try:
                check_streamable(model)
                check_written_to_the_broker_s_database(model)
            except ValueError as error:
                raise ValidationError({"content_type": [str(error)]}) from None
            names = {field.name for field in model._meta.concrete_fields}
            chosen = [name.strip() for name in self.fields.split(",") if name.strip()]
            unknown = [name for name in chosen if name not in names]
            if unknown:
                raise ValidationError({"fields": [f"{model._meta.label} has no field {unknown[0]!r}"]})
            try:
                check_no_secret(model, chosen)
            except ValueError as error:
                raise ValidationError({"fields": [str(error)]}) from None


class HandlerAttempt(models.Model):
    """A stored message a handler failed on and will try again (pubsub/worker/): its
    attempts so far, so a redelivery after a crash goes on counting. Removed in the
    transaction that handles or dead-letters the message."""

    # The stored copy's row (queues.Message): no foreign key, the copy is deleted first.
    store_id = models.BigIntegerField(primary_key=True)
    # With the row id, what tells this message from a later one given the same id.
    message_id = models.CharField(max_length=64)
    handler = models.CharField(max_length=255)
    queue = models.CharField(max_length=255)
    attempts = models.PositiveIntegerField()
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "handler retry"
        verbose_name_plural = "handler retries"

    def __str__(self) -> str:
        return f"{self.message_id} in {self.queue}: {self.attempts} failed attempt(s)"


class HandlerStatus(models.Model):
    """One handler in one `runhandlers` process, as that process last reported it
    (every few seconds; pubsub/worker/status.py). The admin and the console show them."""

    process = models.CharField(max_length=300, help_text="host:pid:start of the process")
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    handler = models.CharField(max_length=255)
    queue = models.CharField(max_length=255)
    concurrency = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()
    running = models.PositiveIntegerField(default=0, help_text="messages being handled now")
    handled = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0, help_text="failed attempts")
    retried = models.PositiveBigIntegerField(default=0, help_text="failed attempts to be tried again")
    dead_lettered = models.PositiveBigIntegerField(default=0)
    already_handled = models.PositiveBigIntegerField(default=0, help_text="redelivered copies found handled")
    handled_rate = models.FloatField(default=0.0, help_text="messages handled per second, lately")

    class Meta:
        verbose_name = "handler process"
        verbose_name_plural = "handler processes"
        constraints = [models.UniqueConstraint(fields=["process", "handler"], name="handler_status_once")]

    def __str__(self) -> str:
        return f"{self.handler} in {self.process}"


class TaskResultRow(models.Model):
    """A task enqueued through the broker's Django Tasks backend (pubsub/tasks/), and
    its result: written in the enqueuing transaction, updated in the handler's."""

    class Status(models.TextChoices):
        # Django's TaskResultStatus values.
        READY = "READY"
        RUNNING = "RUNNING"
        FAILED = "FAILED"
        SUCCESSFUL = "SUCCESSFUL"

    id = models.CharField(max_length=64, primary_key=True)
    task_path = models.CharField(max_length=255)
    backend = models.CharField(max_length=100)
    queue_name = models.CharField(max_length=100)
    priority = models.IntegerField(default=0)
    takes_context = models.BooleanField(default=False)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.READY)
    enqueued_at = models.DateTimeField()
    run_after = models.DateTimeField(null=True, blank=True)
    # False while a deferred task waits for its `run_after`: its message is not sent yet.
    published = models.BooleanField(default=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    return_value = models.JSONField(null=True, blank=True)
    errors = models.JSONField(default=list)  # [{"exception_class_path", "traceback"}]
    worker_ids = models.JSONField(default=list)

    class Meta:
        verbose_name = "task result"
        indexes = [
            models.Index(fields=["published", "run_after"], name="task_result_due"),
            # The finished ones, by age: `runhandlers` deletes those past KEEP_RESULTS.
            models.Index(
                fields=["backend", "finished_at"], name="task_result_finished", condition=Q(finished_at__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_path} ({self.status})"
