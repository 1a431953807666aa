"""The project's settings for the task benchmark: its app, our Tasks backend ("default") and
django-tasks-db's ("db"), on the benchmark's database."""

from __future__ import annotations

import os

from broker_project.settings import *  # noqa: F403
from broker_project.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks", "django_tasks_db", "bench.task_app"]

TASKS = {
    "default": {
        "BACKEND": "pubsub.tasks.BrokerTaskBackend",
        "QUEUES": ["bench"],
        # Tuned for many short tasks as docs/handlers.md advises (and Celery's worker is, by
        # its docs): a prefetch of concurrency x 128, two batches of 64 for each thread.
        "OPTIONS": {"CONCURRENCY": 4, "PREFETCH": 512},
    },
    "db": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["bench"]},
}

# Persistent connections for every system's worker process (Celery's Django fixup and
# django-tasks-db's worker close theirs after each task otherwise, as Django does after each
# request); not for runbroker, whose request threads would each keep one.
if os.environ.get("BENCH_WORKER") == "1":
    DATABASES["default"]["CONN_MAX_AGE"] = 600
