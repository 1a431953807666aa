"""The web console at `/`: what the broker holds now, live, and forms to change it.

The page is server-rendered from the same selectors as the API, so it is
meaningful before (or without) JavaScript; static/console/*.js then keeps it
live from the WebSocket's `stats` frames and drives the HTTP API for changes.
"""

from __future__ import annotations

import itertools
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from access.drf import peer_of
from access.selectors import anonymous_allowed
from bindings.models import Binding
from bindings.selectors import binding_list
from broker.engine.names import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS
from broker.runtime.stats import LISTED
from console.features import exchange_features, queue_features
from exchanges.selectors import exchange_list
from queues.selectors import queue_listed

LOGIN_URL = "/admin/login/"


def _initial_state() -> dict[str, Any]:
    """The topology in the shape of a WebSocket `stats` frame, rates unknown (null), with
    as many of each as the frame lists (broker/runtime/stats.py): the queues the router
    lists (at most LISTED, declared ones before private ones, each by the messages it holds),
    the first LISTED exchanges by name and the bindings between those."""
    infos = queue_listed(LISTED)
    exchanges = [
        {
            "name": DEFAULT_EXCHANGE if row.name == DEFAULT_EXCHANGE_ALIAS and row.pk is None else row.name,
            "type": str(row.type),
            "durable": row.durable,
            "arguments": dict(row.arguments or {}),
            "features": exchange_features(row.arguments or {}),
        }
        for row in exchange_list()[:LISTED]
    ]
    queues = [
        {
            "name": info.name,
            "durable": info.durable,
            "auto_delete": info.auto_delete,
            "exclusive": info.exclusive,
            "arguments": dict(info.arguments),
            "features": queue_features(info.arguments),
            "messages_ready": info.messages_ready,
            "messages_unacknowledged": info.messages_unacknowledged,
            "consumers": info.consumers,
            "publish_rate": None,
            "deliver_rate": None,
            "ack_rate": None,
        }
        for info in infos
    ]
    listed_exchanges = {str(x["name"]) for x in exchanges}
    listed_queues = {info.name for info in infos}
    bindings = [
        {
            "id": row.pk,
            "exchange": row.exchange.name,
            "queue": row.queue.name if row.queue is not None else None,
            "destination_exchange": row.destination_exchange.name if row.destination_exchange is not None else None,
            "binding_key": row.binding_key,
            "arguments": row.arguments or {},
        }
        for row in itertools.islice(
            (row for row in binding_list().iterator() if _between(row, listed_exchanges, listed_queues)), LISTED
        )
    ]
    return {"exchanges": exchanges, "queues": queues, "bindings": bindings}


def _between(row: Binding, exchanges: set[str], queues: set[str]) -> bool:
    if row.exchange.name not in exchanges:
        return False
    if row.queue is not None:
        return row.queue.name in queues
    return row.destination_exchange is not None and row.destination_exchange.name in exchanges


@ensure_csrf_cookie  # the console's fetch() calls send it back as X-CSRFToken
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated and not anonymous_allowed(peer_of(request)):
        return redirect_to_login(request.get_full_path(), LOGIN_URL)
    state = _initial_state()
    # Form choices: the user's exchanges first, the broker's own (default, amq.*) after, as the script orders them.
    names = sorted((x["name"] for x in state["exchanges"]), key=lambda name: (_own(name), name))
    choices = [{"value": name or DEFAULT_EXCHANGE_ALIAS, "label": name or "(default)"} for name in names]
    return render(request, "console/index.html", {"state": state, "exchange_choices": choices, **state})


def _own(name: str) -> bool:
    return name == DEFAULT_EXCHANGE or name.startswith("amq.")
