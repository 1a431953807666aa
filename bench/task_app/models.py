from __future__ import annotations

from django.db import models


class BenchRow(models.Model):
    """What the insert task writes: one row per run (no unique constraint: a second run shows)."""

    system = models.CharField(max_length=20)
    key = models.IntegerField()


class BenchLatency(models.Model):
    """Enqueue-to-start latency of one task, in seconds."""

    system = models.CharField(max_length=20)
    latency = models.FloatField()
