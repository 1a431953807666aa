"""Create the broker's built-in exchanges (docs/protocol.md: `amq.` names are reserved).

The default exchange (`""` / `amq.default`) is not a row: every queue is bound
to it implicitly by its own name, so the router provides it.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

BUILTIN_EXCHANGES = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)


def create_builtin_exchanges(apps: Any, schema_editor: Any) -> None:
    Exchange = apps.get_model("exchanges", "Exchange")
    db = schema_editor.connection.alias
    for name, type_ in BUILTIN_EXCHANGES:
        Exchange.objects.using(db).get_or_create(
            name=name,
            defaults={"type": type_, "durable": True, "auto_delete": False, "arguments": {}},
        )


def delete_builtin_exchanges(apps: Any, schema_editor: Any) -> None:
    Exchange = apps.get_model("exchanges", "Exchange")
    db = schema_editor.connection.alias
    Exchange.objects.using(db).filter(name__in=[name for name, _ in BUILTIN_EXCHANGES]).delete()


class Migration(migrations.Migration):
    dependencies = [("exchanges", "0001_initial")]

    operations = [migrations.RunPython(create_builtin_exchanges, delete_builtin_exchanges)]
