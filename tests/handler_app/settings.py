"""The project's settings with tests/handler_app installed: what runbroker and runhandlers
run with in tests/e2e/test_handlers_e2e.py."""

from __future__ import annotations

from broker_project.settings import *  # noqa: F403
from broker_project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.handler_app"]

# Django's Tasks on the broker (pubsub/tasks/): tests/handler_app/tasks.py.
TASKS = {
    "default": {
        "BACKEND": "pubsub.tasks.BrokerTaskBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"CONCURRENCY": 2, "TIME_LIMIT": 5},
    },
}
