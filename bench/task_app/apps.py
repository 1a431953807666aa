from __future__ import annotations

from django.apps import AppConfig


class TaskBenchConfig(AppConfig):
    """The tasks the task benchmark runs on ours, Celery and django-tasks-db (bench/task_scenarios.py)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "bench.task_app"
    label = "task_bench"
