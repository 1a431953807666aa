"""`python manage.py runbroker`: the whole broker in one process.

With REDIS_URL set it is a node of a cluster: a router candidate (the router,
or its hot standby), or with `--edge` an edge that only serves clients. Without, it first takes
its database's router lock (a lock file beside SQLite's, PostgreSQL's advisory
lock) against a second broker.
Before serving it says which database it uses and what it migrated.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.utils.module_loading import import_string

from broker.cluster.lease import migrate_under_lock
from broker.cluster.resp import RespConnection
from broker.cluster.sqlite_lock import RouterLockHeld
from broker.engine.errors import PreconditionFailed
from broker.transport.loopback import is_loopback_host
from broker.transport.server import Role, run
from broker.transport.startup import hold_single_router_lock
from common.redact import without_password
from pubsub.tasks.execution import task_queue_names
from queues.services import queue_declare
from storage.store import OrmMessageStore
from subscriptions.stomp import tcp_stomp_session

# How long start-up waits for Redis to answer a PING before it gives up.
REDIS_CHECK_SECONDS = 5


class Command(BaseCommand):
    help = "Run the broker: router, HTTP API, admin and WebSocket on HTTP_HOST:HTTP_PORT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HTTP_HOST, help="address to listen on (HTTP_HOST)")
        parser.add_argument("--port", type=int, default=settings.HTTP_PORT, help="port to listen on (HTTP_PORT)")
        parser.add_argument(
            "--edge",
            action="store_true",
            help="cluster only (REDIS_URL): serve clients, never become the router",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host = options["host"]
        if not is_loopback_host(host) and not settings.BROKER_ALLOW_ANONYMOUS_SET:
            # The default followed HTTP_HOST; --host moved off loopback, so a broker
            # reachable from other machines is never open to them by accident.
            settings.BROKER_ALLOW_ANONYMOUS = False
        role = self._role(options["edge"])
        self._check_database()
        if role != "single":
            self._check_redis()
        if role == "single":
            try:  # before it migrates: a second broker on the database changes nothing
                hold_single_router_lock()
            except RouterLockHeld as error:
                raise CommandError(str(error)) from None
        if settings.DO_MIGRATIONS:
            applied = self._migrate(role)
            plural = "" if applied == 1 else "s"
            migrated = f"applied {applied} migration{plural}" if applied else "no migrations to apply"
        else:
            migrated = "migrations not run (DO_MIGRATIONS is off)"
        self.stderr.write(f"database: {describe_database(connections[DEFAULT_DB_ALIAS])}; {migrated}")
        if role != "edge":
            self._declare_task_queues()
        if settings.BROKER_ALLOW_ANONYMOUS and settings.BROKER_ALLOW_ANONYMOUS_SET:
            self.stderr.write("anonymous access is ON: anyone who can reach this port may use the broker")
        elif settings.BROKER_ALLOW_ANONYMOUS:
            self.stderr.write(
                "anonymous access is ON for clients on this machine: anyone on it may use the broker "
                "(not clients a proxy forwards with X-Forwarded-For)"
            )
        else:
            self.stderr.write(
                "anonymous access is off: clients authenticate with an API token "
                "(manage.py createtoken USER) or a session (/admin/login/)"
            )
        # The project's application, by its setting: the project package is above this app.
        application = import_string(settings.ASGI_APPLICATION)
        run(
            application,
            host,
            options["port"],
            role=role,
            new_store=lambda fence: OrmMessageStore(fence=fence),
            layer=get_channel_layer(),
            stomp_port=settings.STOMP_PORT,
            new_stomp_session=tcp_stomp_session,
        )

    def _declare_task_queues(self) -> None:
        """The queues of the broker's Django Tasks backend (TASKS) exist before any task is
        enqueued: a message published to a queue that does not exist reaches nothing."""
        for name in task_queue_names():
            try:
                queue_declare(name=name)
            except PreconditionFailed:
                pass  # declared before with other properties: used as it is

    @staticmethod
    def _check_database() -> None:
        """A database that cannot be reached (a server stopped, a database not created)
        stops start-up with the setting and the server's words, before anything uses it."""
        try:
            connections[DEFAULT_DB_ALIAS].ensure_connection()
        except DatabaseError as error:
            said = "\n".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
            raise CommandError(f"cannot connect to the database of {database_setting()}: {said}") from None

    @staticmethod
    def _check_redis() -> None:
        """A cluster node whose Redis cannot be reached (not started, another port, a
        refused password) stops start-up in one line, as for its database: once started,
        the cluster link waits out an outage of Redis instead."""
        try:
            asyncio.run(ping_redis(settings.REDIS_URL))
        except (redis.RedisError, TimeoutError) as error:
            cause = error.__cause__
            if isinstance(cause, OSError) and cause.errno:
                # "Connection refused", "Name or service not known": not asyncio's repr of it.
                said = os.strerror(cause.errno) if cause.errno > 0 else cause.strerror or str(cause)
            elif isinstance(cause or error, TimeoutError):
                said = f"no answer within {REDIS_CHECK_SECONDS} s"
            else:
                said = str(error)
            raise CommandError(f"cannot connect to Redis at REDIS_URL={without_password(settings.REDIS_URL)}: {said}") from None

    @staticmethod
    def _role(edge: bool) -> Role:
        if not settings.REDIS_URL:
            if edge:
                raise CommandError("--edge needs REDIS_URL: edges reach the router over Redis")
            return "single"
        if not settings.DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
            raise CommandError(
                "a cluster (REDIS_URL is set) keeps its state in PostgreSQL: set DATABASE_URL=postgres://..."
            )
        return "edge" if edge else "candidate"

    @staticmethod
    def _migrate(role: Role) -> int:
        """Migrate the database; the number of migrations applied."""
        applied = 0

        def migrate() -> None:
            nonlocal applied
            executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
            applied = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
            call_command("migrate", interactive=False, verbosity=0)

        if role == "single":
            migrate()
        else:  # nodes that start together must not migrate at once
            migrate_under_lock(settings.DATABASES["default"], migrate)
        return applied


async def ping_redis(url: str) -> None:
    """PING Redis the way the cluster link connects to it (resp.py: its AUTH, its TLS)."""
    connection = RespConnection(url, timeout=REDIS_CHECK_SECONDS)
    try:
        async with asyncio.timeout(REDIS_CHECK_SECONDS * 2):
            await connection.call("PING")
    finally:
        connection.close()


def database_setting() -> str:
    """The variable that chose the database, and its value without a password."""
    if not settings.DATABASE_URL:
        return f"DATABASE_NAME={settings.DATABASE_NAME}"
    return f"DATABASE_URL={without_password(settings.DATABASE_URL)}"


def describe_database(connection: BaseDatabaseWrapper) -> str:
    """Which database, for people: its kind, name and server; never its user or password."""
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor == "sqlite":
        return f"{connection.display_name} {name}"
    host, port = connection.settings_dict.get("HOST"), connection.settings_dict.get("PORT")
    where = f"{host}:{port}" if host and port else host or "the local socket"
    return f"{connection.display_name} {name!r} on {where}"
