"""The router's side of the calls that the HTTP API and the admin make
(broker/protocol/calls.py): carried out on the router's loop, here and for
edges alike, with results of plain values.

A subscription's private queue belongs to its connection: the API may count
and list it, but neither purge it nor take its messages.
"""

from __future__ import annotations

from typing import Any

from broker.engine.errors import Forbidden
from broker.protocol.calls import (
    ExchangesMissingCall,
    QueueActCall,
    QueueBrowseCall,
    QueueCountsCall,
    QueueGetCall,
    QueueInfosCall,
    QueueIsPrivateCall,
    QueueListedCall,
    QueueNamesCall,
    QueueOriginsCall,
    QueuePurgeCall,
    QueueRedeclaredCall,
    QueueSnapshotCall,
    RouterCall,
    TopologyCall,
)
from broker.protocol.topology import decode_change

from . import browser
from .runtime import Runtime


def execute(runtime: Runtime, call: RouterCall, *, holder: int | None = None) -> Any:
    """Carry out `call` on the runtime's loop; its plain result, or an awaitable of it
    (a get that waits for its queue's window), or a BrokerError. `holder`: the connection
    that holds what a get with `ack` takes (`Runtime.open_holder`)."""
    match call:
        case QueueCountsCall(names):
            return _counts(runtime, names)
        case QueueSnapshotCall(names):
            return [_counts(runtime, names), _private_queues(runtime)]
        case QueueNamesCall(contains):
            return _private_names(runtime, contains)
        case QueueInfosCall(names):
            return [_counts(runtime, names), _private_queues(runtime, names)]
        case QueueListedCall():
            return runtime.listed_queues()
        case QueueIsPrivateCall(name):
            return _is_private(runtime, name)
        case QueueRedeclaredCall(name, row_id):
            return runtime.redeclared(name, row_id)
        case QueuePurgeCall(name):
            _refuse_private(runtime, name)
            return runtime.purge(name)
        case QueueGetCall(name, count, ack):
            _refuse_private(runtime, name)
            return runtime.get_waiting(name, count=count, ack=ack, holder=holder)
        case QueueBrowseCall(name, wanted, offset, limit):
            _refuse_private(runtime, name)  # its messages are its subscriber's, as a get's
            return browser.browse(runtime, name, wanted, offset, limit)
        case QueueOriginsCall(name, ids, wanted):
            _refuse_private(runtime, name)
            return browser.origins(runtime, name, ids, wanted)
        case QueueActCall(name, action, ids, wanted, exchange, routing_key, allowed):
            _refuse_private(runtime, name)
            return browser.act(runtime, name, action, ids=ids, wanted=wanted, exchange=exchange,
                               routing_key=routing_key, allowed=allowed)
        case ExchangesMissingCall(names):
            return [name for name in names if not runtime.broker.has_exchange(name)]
        case TopologyCall(change):
            runtime.apply_change(decode_change(change))
            return None
    raise TypeError(f"not a router call: {call!r}")


def _counts(runtime: Runtime, names: list[str]) -> dict[str, list[int]]:
    """name -> [ready, unacknowledged, consumers]."""
    return {
        name: [counts.messages_ready, counts.messages_unacknowledged, counts.consumers]
        for name, counts in runtime.queue_counts(names).items()
    }


def _private_names(runtime: Runtime, contains: str) -> list[Any]:
    names = [name for name, state in runtime.broker.queues.items() if state.spec.exclusive_to is not None]
    total = len(names)
    if contains:
        wanted = contains.casefold()
        names = [name for name in names if wanted in name.casefold()]
    return [total, sorted(names)]


def _private_queues(runtime: Runtime, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Every private queue as a dict, or those among `names`."""
    queues = runtime.broker.queues
    states = queues.values() if names is None else (queues[name] for name in names if name in queues)
    private = []
    for state in states:
        spec = state.spec
        if spec.exclusive_to is None:
            continue
        private.append(
            {
                "name": spec.name,
                "durable": spec.durable,
                "auto_delete": spec.auto_delete,
                "arguments": dict(spec.arguments),
                "exclusive": True,
                "messages_ready": state.depth,
                "messages_unacknowledged": state.unacked,
                "consumers": len(state.consumers),
            }
        )
    return private


def _is_private(runtime: Runtime, name: str) -> bool:
    state = runtime.broker.queues.get(name)
    return state is not None and state.spec.exclusive_to is not None


def _refuse_private(runtime: Runtime, name: str) -> None:
    if _is_private(runtime, name):
        raise Forbidden(f"queue {name!r} is exclusive to a WebSocket connection")
