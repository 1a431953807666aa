from __future__ import annotations

from django.db import models


class HandledRow(models.Model):
    """One row per run of a handler that committed: no unique constraint, so a
    message handled twice shows as two rows."""

    message_id = models.CharField(max_length=64)
    queue = models.CharField(max_length=255)
    delivery_count = models.IntegerField()
