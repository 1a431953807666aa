"""Topology changes survive their trip over the channel layer unchanged."""

from __future__ import annotations

import json

import pytest

from broker.engine.exchanges import ExchangeSpec, ExchangeType
from broker.engine.queues import QueueSpec
from broker.engine.routing import BindingSpec, DestinationType
from broker.protocol.topology import (
    BindingDeleted,
    BindingSaved,
    ExchangeDeleted,
    ExchangeSaved,
    QueueDeleted,
    QueueSaved,
    TopologyChange,
    decode_change,
    encode_change,
)

CHANGES: list[TopologyChange] = [
    ExchangeSaved(ExchangeSpec("orders", ExchangeType.TOPIC, True, False, {"alternate": "x"})),
    ExchangeDeleted("orders"),
    QueueSaved(QueueSpec("jobs", False, True, {"max_length": 5})),
    QueueDeleted("jobs"),
    BindingSaved(BindingSpec("orders", "jobs", "a.#", {"x-match": "any", "k": 1})),
    BindingDeleted(BindingSpec("orders", "jobs", "", {})),
    BindingSaved(BindingSpec("orders", "eu", "eu.*", {}, DestinationType.EXCHANGE)),
    BindingDeleted(BindingSpec("orders", "eu", "eu.*", {}, DestinationType.EXCHANGE)),
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: f"{type(c).__name__}-{CHANGES.index(c)}")
def test_round_trip_through_json(change: TopologyChange) -> None:
    wire = json.loads(json.dumps(encode_change(change)))
    assert decode_change(wire) == change


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_change({"kind": "teleport"})
