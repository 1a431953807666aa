"""`python manage.py runhandlers [NAME ...]`: run the project's handlers (pubsub/handling.py).

Connects to the broker at HANDLERS_BROKER_URLS and runs every handler declared
in the installed apps' `handlers` modules, or the ones named. SIGTERM or SIGINT
stops taking messages, lets the running handlers finish (up to `--grace`
seconds), and exits. Run more processes, on more machines, for more.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.handler_token import handler_token
from pubsub.handling import autodiscover, registered
from pubsub.streams import refresh_streams
from pubsub.tasks.execution import prune_task_results, publish_due_tasks, register_task_handlers
from pubsub.worker.declare import DeclareError
from pubsub.worker.runner import Runner

log = logging.getLogger("pubsub.handlers")

NO_HANDLERS = "no handlers: declare some with @pubsub.handler in an app's handlers.py"


class Command(BaseCommand):
    help = "Run the project's message handlers (the @handler functions of its apps' handlers.py)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "names", nargs="*",
            help="handlers to run (module.function, the name given, or tasks:<backend>:<queue>); default: all",
        )
        parser.add_argument(
            "--url", action="append", dest="urls", help="the broker's WebSocket address (default: HANDLERS_BROKER_URLS)"
        )
        parser.add_argument(
            "--grace", type=float, default=30.0, help="seconds the running handlers get to finish at SIGTERM (30)"
        )
        parser.add_argument("--list", action="store_true", help="list the handlers and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        autodiscover()
        register_task_handlers()  # one per task queue of the broker's Django Tasks backend
        handlers = registered()
        if options["list"]:
            if not handlers:  # as a run without handlers says it, and with its status
                raise CommandError(NO_HANDLERS)
            for name, handler in sorted(handlers.items()):
                self.stdout.write(f"{name}: queue {handler.queue!r}, concurrency {handler.concurrency}")
            return
        names = options["names"] or sorted(handlers)
        unknown = [name for name in names if name not in handlers]
        if unknown:
            raise CommandError(f"no handler named {', '.join(map(repr, unknown))}; known: {', '.join(sorted(handlers)) or 'none'}")
        if not names:
            raise CommandError(NO_HANDLERS)
        chosen = [handlers[name] for name in names]
        runs_tasks = any(name.startswith("tasks:") for name in names)
        runner = Runner(
            chosen,
            urls=options["urls"] or settings.HANDLERS_BROKER_URLS,
            token=handler_token,
            grace=options["grace"],
            # The admin's model change streams kept fresh: a handler that only deletes publishes them.
            ticks=[refresh_streams, *([publish_due_tasks, prune_task_results] if runs_tasks else [])],
        )
        try:
            asyncio.run(self._run(runner))
        except DeclareError as error:
            raise CommandError(str(error)) from None
        finally:
            if runner.busy:
                # A sync handler still running past the grace period cannot be stopped: leave
                # without it; its transaction dies with the connection, its message comes back.
                log.warning("handlers: exiting with %d message(s) still being handled", runner.busy)
                logging.shutdown()
                os._exit(1)

    @staticmethod
    async def _run(runner: Runner) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, runner.stop)
        await runner.run()
