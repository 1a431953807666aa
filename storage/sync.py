"""Topology changes, from the database to the running router.

Model signals (exchanges, queues, bindings) call `notify` with a change. Once
the transaction commits, the router in this process applies it before the
saving thread goes on, so an API answer means the change is live. An edge
of a cluster asks the router the same way, over its link, so a publish
through the edge after the answer sees the change (issue 6). A process
with neither (a shell, a management command) sends the change over the
channel layer to the router's group instead (DESIGN.md, "The engine":
changes reach the router within a second).
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from broker.engine.errors import BrokerError, Unavailable
from broker.router.calls import call_router, router_op
from broker.runtime.runtime import Runtime, current_runtime
from broker.protocol.topology import (
    TOPOLOGY_EVENT,
    TOPOLOGY_GROUP,
    TopologyChange,
    decode_change,
    encode_change,
)

log = logging.getLogger("broker.sync")


def apply_now(change: TopologyChange) -> None:
    runtime = current_runtime()
    if runtime is None:
        from broker.cluster.edge import current_link

        link = current_link()
        if link is None or not link.router_known:
            broadcast(change)
            return
    try:
        call_router("topology.apply", encode_change(change))
    except Unavailable as error:  # e.g. a failover: the next router loads the stored topology
        log.warning("router did not take a stored change %s: %s", change, error.message)
        broadcast(change)
    except BrokerError as error:
        log.error("router refused a stored change %s: %s", change, error.message)


@router_op("topology.apply")
def _apply_on_loop(runtime: Runtime, change: dict[str, Any]) -> None:
    runtime.apply_change(decode_change(change))


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
