"""The outbox's NOTIFY carries the rows it announces, when they fit: the router routes
them without reading the table, one round trip fewer between a commit and its
delivery. Rows that do not fit (PostgreSQL's payloads hold under 8000 bytes) are
announced with an empty payload, as before, and the router reads the table.
Nothing to do on other databases."""

from __future__ import annotations

from typing import Any

from django.db import migrations

# The payload: a JSON array of rows, each [id, message_id, exchange, routing_key, body,
# headers, persistent, published_at] (storage/outbox.py reads it). A statement of many
# rows, or of large ones, is not even encoded.
CREATE = """
CREATE OR REPLACE FUNCTION pubsub_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_count bigint;
    size bigint;
    payload text := '';
BEGIN
    SELECT count(*), coalesce(sum(octet_length(body) + octet_length(headers)), 0) INTO row_count, size FROM new_rows;
    IF row_count <= 32 AND size < 6000 THEN
        SELECT json_agg(json_build_array(id, message_id, exchange, routing_key, body, headers, persistent, published_at)
                        ORDER BY id)::text
            INTO payload FROM new_rows;
        IF payload IS NULL OR octet_length(payload) >= 7900 THEN
            payload := '';
        END IF;
    END IF;
    PERFORM pg_notify('pubsub_outbox', payload);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS pubsub_outbox_notify ON pubsub_outbox;
CREATE TRIGGER pubsub_outbox_notify AFTER INSERT ON pubsub_outbox REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pubsub_outbox_notify();
"""
# Back to 0002's trigger: an empty payload, every time.
REVERT = """
CREATE OR REPLACE FUNCTION pubsub_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pubsub_outbox', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS pubsub_outbox_notify ON pubsub_outbox;
CREATE TRIGGER pubsub_outbox_notify AFTER INSERT ON pubsub_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION pubsub_outbox_notify();
"""


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def revert(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(REVERT)


class Migration(migrations.Migration):
    dependencies = [("pubsub", "0002_outbox_notify_trigger")]

    operations = [migrations.RunPython(create, revert)]
