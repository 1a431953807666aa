"""`python manage.py runbroker`: the whole broker in one process (DESIGN.md, "Processes")."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from broker_project.env import is_loopback_host
from broker_project.server import run


class Command(BaseCommand):
    help = "Run the broker: router, HTTP API, admin and WebSocket on HTTP_HOST:HTTP_PORT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HTTP_HOST, help="address to listen on (HTTP_HOST)")
        parser.add_argument("--port", type=int, default=settings.HTTP_PORT, help="port to listen on (HTTP_PORT)")

    def handle(self, *args: Any, **options: Any) -> None:
        host = options["host"]
        anonymous = settings.BROKER_ALLOW_ANONYMOUS and (is_loopback_host(host) or settings.BROKER_ALLOW_ANONYMOUS_SET)
        if not anonymous:
            # Authentication arrives with issue 7; until then a broker reachable from
            # other machines would be open to all of them: never by accident.
            raise CommandError(
                f"{host} is reachable from other machines and clients cannot authenticate yet: "
                "listen on a loopback address (HTTP_HOST=127.0.0.1), or set "
                "BROKER_ALLOW_ANONYMOUS=true to serve anonymous clients on purpose"
            )
        if settings.DO_MIGRATIONS:
            call_command("migrate", interactive=False, verbosity=0)
        if settings.BROKER_ALLOW_ANONYMOUS:
            self.stderr.write("anonymous access is ON: anyone who can reach this port may use the broker")
        run(host, options["port"])
