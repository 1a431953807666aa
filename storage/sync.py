"""Topology changes, from the database to the running router.

The model signals (signals.py) call `notify` with a change. Once the
transaction commits, the router applies it before the saving thread goes on,
so an API answer means the change is live; an edge of a cluster asks the
router the same way, over its link, so a publish through the edge after the
answer sees the change. A process with neither (a shell, a management
command) sends the change over the channel layer to the router's group
instead, and the router applies it within moments.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from broker.engine.errors import BrokerError, Unavailable
from broker.protocol.topology import TOPOLOGY_EVENT, TOPOLOGY_GROUP, TopologyChange, encode_change
from broker.router.calls import router_reachable, topology_apply

log = logging.getLogger("broker.sync")


def apply_now(change: TopologyChange) -> None:
    if not router_reachable():
        broadcast(change)
        return
    try:
        topology_apply(change)
    except Unavailable as error:  # e.g. a failover: the next router loads the stored topology
        log.warning("router did not take a stored change %s: %s", change, error.message)
        broadcast(change)
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
