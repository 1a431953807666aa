"""Broker errors: one class per stable error code of docs/protocol.md ("Errors").

Raised by the engine, the protocol's parsers and the apps' services; HTTP
answers render them in one place (broker/transport/http_errors.py), WebSocket
error frames in another (broker/protocol/server_frames.py), both from the class
attributes `code` and `status`. Stdlib only: the engine imports this.
"""

from __future__ import annotations

from typing import ClassVar


class BrokerError(Exception):
    """A refused request: bad input (`invalid`, 400) unless a subclass says otherwise. The
    message names the object and the broken rule; `fields` maps a field to its problems."""

    code: ClassVar[str] = "invalid"
    status: ClassVar[int] = 400

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class NotFound(BrokerError):
    code = "not_found"
    status = 404


class Unauthorized(BrokerError):
    """No credentials, or credentials the broker does not know, where they are required."""

    code = "unauthorized"
    status = 401


class Forbidden(BrokerError):
    """E.g. declaring a name reserved for the broker (`amq.`), or lacking a permission."""

    code = "forbidden"
    status = 403


class Conflict(BrokerError):
    code = "conflict"
    status = 409


class PreconditionFailed(BrokerError):
    """A redeclaration with other properties than the existing object's."""

    code = "precondition_failed"
    status = 409


class TooLarge(BrokerError):
    """A body over MAX_MESSAGE_BYTES."""

    code = "too_large"
    status = 413


class Unavailable(BrokerError):
    """The router is not running or not reachable (e.g. during failover)."""

    code = "unavailable"
    status = 503


class LimitExceeded(BrokerError):
    """A declaration past MAX_QUEUES or MAX_BINDINGS (README, "Limits"); nothing was created.

    409, not 429: waiting does not help, deleting something does."""

    code = "limit_exceeded"
    status = 409


class QueueFull(BrokerError):
    """A queue the message routed to is full and refuses publishes (`x-overflow:
    reject-publish` or `reject-publish-dlx`), as RabbitMQ's publisher confirms nack it.
    The other queues it routed to took it."""

    code = "queue_full"
    status = 409


class RateLimited(BrokerError):
    """A WebSocket frame over the connection's WS_MAX_FRAMES_PER_SECOND; it was not carried out."""

    code = "rate_limited"
    status = 429


class ResourceLimit(BrokerError):
    """The process is over its memory limit (MEMORY_LIMIT): publishing is held back until
    memory falls; nothing was published. Try again after `retry_after` seconds."""

    code = "resource_limit"
    status = 503
    retry_after = 1
