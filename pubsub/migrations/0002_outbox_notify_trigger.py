"""On PostgreSQL the outbox notifies the router itself: a statement-level trigger sends
NOTIFY pubsub_outbox, delivered when the writing transaction commits. Whoever writes
rows (this project's calls, the client's helper, SQL of its own) wakes the router
without a statement of its own (docs/outbox.md). Nothing to do on other databases."""

from __future__ import annotations

from typing import Any

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION pubsub_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pubsub_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER pubsub_outbox_notify AFTER INSERT ON pubsub_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION pubsub_outbox_notify();
"""
DROP = """
DROP TRIGGER IF EXISTS pubsub_outbox_notify ON pubsub_outbox;
DROP FUNCTION IF EXISTS pubsub_outbox_notify();
"""


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("pubsub", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
