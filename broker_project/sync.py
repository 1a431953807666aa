"""Topology changes, from the database to the running router.

Model signals (exchanges, queues, bindings) call `notify` with a change. Once
the transaction commits, the router in this process applies it before the
saving thread goes on, so an API answer means the change is live. A process
without a router (a shell, a management command) sends
the change over the channel layer to the router's group instead (DESIGN.md,
"The engine": changes reach the router within a second).
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from .engine.errors import BrokerError
from .runtime import current_runtime
from .topology import TOPOLOGY_EVENT, TOPOLOGY_GROUP, TopologyChange, encode_change

log = logging.getLogger("broker.sync")


def apply_now(change: TopologyChange) -> None:
    runtime = current_runtime()
    if runtime is None:
        broadcast(change)
        return
    try:
        runtime.call_threadsafe(runtime.apply_change, change)
    except BrokerError as error:
        log.error("router refused a stored change %s: %s", change, error.message)


def broadcast(change: TopologyChange) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(TOPOLOGY_GROUP, {"type": TOPOLOGY_EVENT, "change": encode_change(change)})
    except Exception:  # the router loads the stored topology when it starts anyway
        log.exception("could not send a topology change to the router")


def notify(change: TopologyChange) -> None:
    transaction.on_commit(lambda: apply_now(change))
