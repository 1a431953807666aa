#!/usr/bin/env python
"""Django's command-line utility for the broker (runbroker, migrate, check, ...)."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "broker_project.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        # A bad setting is the user's to fix: one line naming the variable, not a traceback.
        sys.exit(f"configuration error: {error}")


if __name__ == "__main__":
    main()
