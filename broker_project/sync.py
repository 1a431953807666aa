"""Topology changes, from the database to the running router.

Model signals (exchanges, queues, bindings) call `notify` with a change; once
the transaction commits, the router in this process applies it before the
saving thread goes on, so an API answer means the change is live.
"""

from __future__ import annotations

import logging

from django.db import transaction

from .engine.errors import BrokerError
from .runtime import current_runtime
from .topology import TopologyChange

log = logging.getLogger("broker.sync")


def apply_now(change: TopologyChange) -> None:
    runtime = current_runtime()
    if runtime is None:
        return  # no router in this process: it loads the topology when it starts
    try:
        runtime.call_threadsafe(runtime.apply_change, change)
    except BrokerError as error:
        log.error("router refused a stored change %s: %s", change, error.message)


def notify(change: TopologyChange) -> None:
    transaction.on_commit(lambda: apply_now(change))
