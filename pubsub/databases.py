"""Which database is the broker's: the router reads the outbox of `default` only."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections


def is_the_broker_s_database(using: str) -> bool:
    """Is `using` an alias of the database whose outbox the router reads (`default`)?"""
    if using == DEFAULT_DB_ALIAS:
        return True
    given, broker = connections[using].settings_dict, connections[DEFAULT_DB_ALIAS].settings_dict
    return all(given.get(key) == broker.get(key) for key in ("ENGINE", "NAME", "HOST", "PORT"))
