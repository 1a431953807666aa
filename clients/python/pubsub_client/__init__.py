"""Client for the django-pubsub-broker: asyncio `Client`, synchronous `SyncClient`, and the `pubsub` CLI.

`pubsub_client.outbox` publishes with your own database connection, in your own transaction
(docs/outbox.md); it needs the standard library only and is not imported here.

See clients/python/README.md for complete examples, and docs/protocol.md for the wire contract.
`__version__` is the installed distribution's (clients/python/pyproject.toml's `version`).
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from .client import DEFAULT_URL, Client, connect
from .errors import (
    BrokerError,
    ClientClosed,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    PublishTimeout,
    PubSubError,
    RequestTimeout,
    SubscriptionCancelled,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from .models import AckMode, Binding, Event, EventKind, Exchange, Message, PublishResult, Queue
from .subscription import Backoff, Delivery, Subscription
from .sync import SyncClient, SyncDelivery, SyncSubscription

try:
    __version__ = version("pubsub-client")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

# A library logs; the application decides where that goes (nothing printed by default).
logging.getLogger("pubsub_client").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_URL",
    "AckMode",
    "Backoff",
    "Binding",
    "BrokerError",
    "Client",
    "ClientClosed",
    "Conflict",
    "ConnectionFailed",
    "Delivery",
    "Event",
    "EventKind",
    "Exchange",
    "Forbidden",
    "InvalidRequest",
    "Message",
    "NotFound",
    "PreconditionFailed",
    "PubSubError",
    "PublishResult",
    "PublishTimeout",
    "RequestTimeout",
    "Queue",
    "Subscription",
    "SubscriptionCancelled",
    "SyncClient",
    "SyncDelivery",
    "SyncSubscription",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "connect",
]
