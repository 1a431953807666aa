"""Services of the message browser (docs/protocol.md, "Message browser"): a queue's
messages page by page without taking them, and the actions on its ready messages.
The HTTP API and the admin call these; the router does the work
(broker/runtime/browser.py).

Rights (access/rules.py): read on the queue to look; configure on it to delete,
move or replay (they take messages out); write on the exchange a copy goes to
(every origin exchange of a replay).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from access.rules import Permissions
from broker.engine.browse import parse_filter
from broker.engine.errors import BrokerError
from broker.engine.jsoncodec import loads
from broker.engine.rules import exchange_field, key_field
from broker.protocol.calls import check_browser_action
from broker.router import calls as router
from queues.services import require_router

log = logging.getLogger("broker.browser")



@dataclass(frozen=True, slots=True)
class Selection:
    """The messages an action takes: `ids` as listed, or every one matching `filter`."""

    ids: list[str] | None
    filter: dict[str, Any] | None


def query_filter(params: Mapping[str, str]) -> dict[str, Any]:
    """A filter from a page's query parameters: `routing_key`, `header_name` and
    `header_value`, `path` and `value` (JSON; anything else is taken as a string)."""
    wanted: dict[str, Any] = {}
    if params.get("routing_key"):
        wanted["routing_key"] = params["routing_key"]
    if params.get("header_name"):
        wanted["header"] = {"name": params["header_name"], "value": params.get("header_value", "")}
    if params.get("path"):
        wanted["path"] = params["path"]
        if "value" in params and params["value"] != "":
            try:
                wanted["value"] = loads(params["value"])
            except ValueError:
                wanted["value"] = params["value"]
    parse_filter(wanted)  # `invalid` here, before the router is asked
    return wanted


def queue_messages(
    *, name: str, permissions: Permissions, wanted: dict[str, Any] | None = None, offset: int = 0, limit: int = 50
) -> dict[str, Any]:
    """A page of the queue's messages, unacknowledged first, in the queue's order."""
    permissions.require("read", "queue", name)
    require_router(name)
    return router.queue_browse(name, wanted or None, offset=offset, limit=limit)


def selection_of(data: Mapping[str, Any]) -> Selection:
    ids, everything, wanted = data.get("ids"), data.get("all", False), data.get("filter")
    if everything is not True and everything is not False:
        raise BrokerError("all: must be true or false", fields={"all": ["must be true or false"]})
    if everything:
        if ids is not None:
            raise BrokerError("give `ids` or `all: true`, not both", fields={"ids": ["ids or all, not both"]})
        parse_filter(wanted)
        return Selection(None, dict(wanted or {}))
    if not isinstance(ids, list) or not ids:
        raise BrokerError("ids: the messages selected (a list of ids as listed), or `all: true` with a `filter`",
                          fields={"ids": ["a list of ids, or all: true"]})
    return Selection(ids, None)


def queue_messages_act(
    *,
    name: str,
    action: str,
    selection: Selection,
    permissions: Permissions,
    exchange: str | None = None,
    routing_key: str = "",
) -> dict[str, int | bool]:
    """Delete, move, copy or replay the selected ready messages; what was done, counted."""
    check_browser_action(action)
    if action == "copy":
        permissions.require("read", "queue", name)
    else:
        permissions.require("configure", "queue", name)
    target = ""
    if action in ("move", "copy"):
        if exchange is None:
            raise BrokerError("exchange: where the messages go (\"\" is the default exchange)",
                              fields={"exchange": ["this field is required"]})
        target = exchange_field(exchange)
        routing_key = key_field("routing_key", routing_key)
        permissions.require("write", "exchange", target)
    require_router(name)
    allowed: list[str] | None = None
    if action == "replay":
        allowed = router.queue_origins(name, selection.ids, selection.filter)
        for origin in allowed:  # every one, before anything is moved
            permissions.require("write", "exchange", origin)
    done = router.queue_act(name, action, ids=selection.ids, wanted=selection.filter, exchange=target,
                            routing_key=routing_key, allowed=allowed)
    log.info("message browser: %s: %s on queue %r: %d taken, %d skipped", permissions.who, action, name,
             done["taken"], done["skipped"])
    return done
