"""STOMP destinations, RabbitMQ's scheme (docs/protocol.md, "STOMP: destinations").

A destination names where a SEND goes and what a SUBSCRIBE consumes:

- `/exchange/NAME[/KEY]`: publish to exchange NAME with routing key KEY; subscribe
  through a private queue bound to NAME with binding key KEY.
- `/queue/NAME`: the queue NAME, declared (durable) when missing; a SEND goes
  through the default exchange with routing key NAME.
- `/amq/queue/NAME`: the queue NAME, which must exist; never declared.
- `/topic/KEY`: the exchange `amq.topic` with routing (binding) key KEY.
- `/temp-queue/NAME`: a private queue of the connection, made when first named,
  reachable by others through the `reply-to` it is rewritten to.
- `/reply-queue/NAME`: a temporary queue as a `reply-to` named it: SEND only.

Pure: the engine's rules only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import unquote

from broker.engine.errors import BrokerError
from broker.engine.names import DEFAULT_EXCHANGE
from broker.engine.rules import exchange_field, key_field, name_field

TOPIC_EXCHANGE: Final = "amq.topic"


class Kind(StrEnum):
    EXCHANGE = "exchange"
    QUEUE = "queue"  # declared when missing
    AMQ_QUEUE = "amq/queue"  # must exist
    TOPIC = "topic"
    TEMP_QUEUE = "temp-queue"
    REPLY_QUEUE = "reply-queue"


@dataclass(frozen=True, slots=True)
class Destination:
    kind: Kind
    name: str  # the exchange, queue or temporary queue's name ("" for a topic)
    key: str = ""  # the routing or binding key (exchange and topic destinations)

    @property
    def publish_exchange(self) -> str:
        """The exchange a SEND to this destination publishes to."""
        if self.kind is Kind.EXCHANGE:
            return self.name
        if self.kind is Kind.TOPIC:
            return TOPIC_EXCHANGE
        return DEFAULT_EXCHANGE

    @property
    def publish_key(self) -> str:
        """The routing key a SEND to this destination publishes with."""
        if self.kind in (Kind.EXCHANGE, Kind.TOPIC):
            return self.key
        return self.name


class DestinationError(BrokerError):
    """A destination that is not one of the scheme's, or a bad name within it."""


_PREFIXES: Final = (
    ("/exchange/", Kind.EXCHANGE),
    ("/queue/", Kind.QUEUE),
    ("/amq/queue/", Kind.AMQ_QUEUE),
    ("/topic/", Kind.TOPIC),
    ("/temp-queue/", Kind.TEMP_QUEUE),
    ("/reply-queue/", Kind.REPLY_QUEUE),
)
EXPECTED: Final = "/exchange/NAME[/KEY], /queue/NAME, /amq/queue/NAME, /topic/KEY or /temp-queue/NAME"


def parse_destination(value: str) -> Destination:
    """The destination `value` names; DestinationError when it is not one of the scheme's."""
    for prefix, kind in _PREFIXES:
        if value.startswith(prefix):
            rest = value[len(prefix):]
            try:
                return _parse(kind, rest)
            except DestinationError:
                raise
            except BrokerError as error:
                raise DestinationError(f"destination {value!r}: {error.message}") from None
    raise DestinationError(f"destination {value!r} is not one of {EXPECTED}")


def _parse(kind: Kind, rest: str) -> Destination:
    if kind is Kind.EXCHANGE:
        name, _, key = rest.partition("/")
        if not name:  # `/exchange//KEY` is not the default exchange: RabbitMQ refuses it too
            raise DestinationError(f"destination /exchange/{rest}: needs an exchange name")
        # Names may be percent-encoded, as RabbitMQ allows; a key keeps its slashes as they are.
        return Destination(kind, exchange_field(unquote(name)), key_field("routing_key", key))
    if kind is Kind.TOPIC:
        return Destination(kind, "", key_field("routing_key", rest))
    name = unquote(rest)
    if kind is Kind.REPLY_QUEUE:
        return Destination(kind, name_field("queue", name))
    if kind is Kind.TEMP_QUEUE:
        if not name or "/" in name:
            raise DestinationError(f"destination /temp-queue/{rest}: needs a name without '/'")
        return Destination(kind, name)
    return Destination(kind, name_field("queue", name))


def destination_of(exchange: str, routing_key: str) -> str:
    """The destination a MESSAGE frame shows for a message published to `exchange` with
    `routing_key` (as RabbitMQ shows it)."""
    if exchange == DEFAULT_EXCHANGE:
        return f"/queue/{routing_key}"
    if exchange == TOPIC_EXCHANGE:
        return f"/topic/{routing_key}"
    return f"/exchange/{exchange}/{routing_key}" if routing_key else f"/exchange/{exchange}"
