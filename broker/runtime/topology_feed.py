"""Topology changes that processes without a router send over the channel layer.

A management command or a shell that saves an exchange, queue or binding has
no router to ask; it sends the change to the router's group instead
(storage/sync.py). The router joins the group before it reads the stored
topology, so a change committed during that load (a failover's) waits in the
channel and is applied after it, not lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from broker.protocol.topology import TOPOLOGY_EVENT, TOPOLOGY_GROUP, TopologyChange, decode_change

log = logging.getLogger("broker.runtime")

# The router joins the group again this often: a Redis restarted empty has forgotten it, and
# changes sent to the group would be lost until the router's next start.
REJOIN_SECONDS = 5.0


class TopologyFeed:
    def __init__(self, layer: Any) -> None:
        """`layer`: the channel layer, or None (no other process can send changes)."""
        self._layer = layer
        self._channel: str | None = None

    async def join(self) -> None:
        if self._layer is not None:
            self._channel = await self._layer.new_channel()
            await self._layer.group_add(TOPOLOGY_GROUP, self._channel)

    async def listen(self, apply: Callable[[TopologyChange], None]) -> None:
        """Apply each change as it comes, until cancelled; then leave the group."""
        layer, channel = self._layer, self._channel
        if layer is None or channel is None:
            return
        rejoining = asyncio.create_task(self._keep_joined(layer, channel), name="topology-rejoin")
        try:
            while True:
                try:
                    event = await layer.receive(channel)
                    if event.get("type") == TOPOLOGY_EVENT:
                        apply(decode_change(event["change"]))
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bad event or a lost Redis: log, wait, go on
                    log.exception("topology listener")
                    await asyncio.sleep(1)
        finally:
            rejoining.cancel()
            await asyncio.shield(layer.group_discard(TOPOLOGY_GROUP, channel))

    @staticmethod
    async def _keep_joined(layer: Any, channel: str) -> None:
        while True:
            await asyncio.sleep(REJOIN_SECONDS)
            try:
                await layer.group_add(TOPOLOGY_GROUP, channel)
            except Exception as error:
                log.warning("joining the topology group again failed: %r", error)
