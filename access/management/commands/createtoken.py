"""`python manage.py createtoken USER [--name NAME]`: issue an API token and print it once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for USER and print it (only its hash is stored: it cannot be shown again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="the username")
        parser.add_argument("--name", default="", help="what the token is for")

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        try:
            user = model._default_manager.get_by_natural_key(options["user"])
        except model.DoesNotExist:
            raise CommandError(f"user {options['user']!r} does not exist") from None
        if not user.is_active:
            raise CommandError(f"user {options['user']!r} is inactive: its tokens would be refused")
        _, token = ApiToken.issue(user=user, name=options["name"])
        # The token alone on stdout, so scripts can capture it; the advice on stderr.
        self.stdout.write(token)
        self.stderr.write("Keep it now: only its hash is stored. Send it as 'Authorization: Bearer <token>'.")
