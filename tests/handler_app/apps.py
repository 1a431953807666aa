from __future__ import annotations

from django.apps import AppConfig


class HandlerAppConfig(AppConfig):
    """An app with handlers, for the end-to-end tests of `runhandlers` (tests/e2e/test_handlers_e2e.py)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "tests.handler_app"
    label = "handler_app"
