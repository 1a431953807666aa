"""`runbroker`'s start-up: which database it names, and how many migrations it applied."""

from __future__ import annotations

import dj_database_url
import pytest
from django.db import connection
from django.db.utils import ConnectionHandler

from subscriptions.management.commands.runbroker import Command, describe_database


def test_a_sqlite_database_is_named_by_its_file() -> None:
    assert describe_database(connection) == f"SQLite {connection.settings_dict['NAME']}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://alice:s3cret@db.internal:5433/broker", "PostgreSQL 'broker' on db.internal:5433"),
        ("postgres://alice:s3cret@db.internal/broker", "PostgreSQL 'broker' on db.internal"),
        ("postgres:///broker", "PostgreSQL 'broker' on the local socket"),
    ],
)
def test_a_server_database_is_named_without_its_user_or_password(url: str, shown: str) -> None:
    handler = ConnectionHandler({"default": dj_database_url.parse(url)})
    assert describe_database(handler["default"]) == shown


@pytest.mark.django_db(transaction=True)
def test_migrating_a_migrated_database_applies_none() -> None:
    assert Command._migrate("single") == 0
