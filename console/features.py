"""Short labels for the RabbitMQ features a queue's or an exchange's arguments turn on, as
the console shows them next to its name (static/console/overview.js says the same)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _argument(arguments: Mapping[str, Any], rabbit: str, ours: str) -> Any:
    return arguments.get(rabbit, arguments.get(ours))


def queue_features(arguments: Mapping[str, Any]) -> list[str]:
    labels: list[str] = []
    for rabbit, ours, label in (
        ("x-queue-type", "queue_type", "{}"),
        ("x-max-priority", "max_priority", "priority 0-{}"),
        ("x-message-ttl", "message_ttl", "ttl {} ms"),
        ("x-max-length", "max_length", "max {}"),
        ("x-max-length-bytes", "max_length_bytes", "max {} bytes"),
        ("x-overflow", "overflow", "{}"),
        ("x-delivery-limit", "delivery_limit", "delivery limit {}"),
        ("x-dead-letter-exchange", "dead_letter_exchange", "dlx {}"),
        ("x-expires", "expires", "expires {} ms"),
    ):
        value = _argument(arguments, rabbit, ours)
        if value is not None and value != "classic" and value != "drop-head":
            labels.append(label.format(value if value != "" else "(default)"))
    if _argument(arguments, "x-single-active-consumer", "single_active_consumer") is True:
        labels.append("single active consumer")
    return labels


def exchange_features(arguments: Mapping[str, Any]) -> list[str]:
    labels: list[str] = []
    delayed = arguments.get("x-delayed-type")
    if isinstance(delayed, str):
        labels.append(f"delayed, as {delayed}")
    alternate = arguments.get("alternate-exchange")
    if isinstance(alternate, str):
        labels.append(f"alternate {alternate}")
    return labels
