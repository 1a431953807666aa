"""Errors raised by the client.

`BrokerError` is the broker saying no: it carries the broker's stable error
code (docs/protocol.md, "Errors"), its message, and the per-field problems when the
broker gave them. One subclass per code, so callers can write
`except NotFound:`; unknown codes still arrive as a plain `BrokerError`.
`ConnectionFailed` and `ClientClosed` are about the transport, not the broker.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PubSubError(Exception):
    """Base of every exception this package raises."""


class BrokerError(PubSubError):
    """The broker refused a request: `code` is its stable error code (`not_found`, `invalid`…)."""

    default_code: ClassVar[str] = "error"

    def __init__(
        self,
        code: str | None = None,
        message: str = "",
        fields: dict[str, Any] | None = None,
        *,
        status: int | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.message = message
        self.fields = fields or {}
        self.status = status  # the HTTP status when the error came over HTTP
        super().__init__(f"{self.code}: {message}" if message else self.code)

    @staticmethod
    def from_code(
        code: str, message: str, fields: dict[str, Any] | None = None, *, status: int | None = None
    ) -> BrokerError:
        """The subclass for `code` (a plain `BrokerError` for a code this client does not know)."""
        cls = _BY_CODE.get(code, BrokerError)
        return cls(code, message, fields, status=status)

    @property
    def retryable(self) -> bool:
        """True for `unavailable` and `rate_limited`: the broker (or its cluster) may accept the
        same request later, so the client sends it again after its backoff."""
        return self.code in ("unavailable", "rate_limited")


class InvalidRequest(BrokerError):
    """400 `invalid`: a field broke a rule (see `fields`)."""

    default_code = "invalid"


class Unauthorized(BrokerError):
    """401 `unauthorized`: no token, or one the broker does not accept."""

    default_code = "unauthorized"


class Forbidden(BrokerError):
    """403 `forbidden`: e.g. declaring a name starting with `amq.`."""

    default_code = "forbidden"


class NotFound(BrokerError):
    """404 `not_found`: the exchange, queue, binding or subscription does not exist."""

    default_code = "not_found"


class Conflict(BrokerError):
    """409 `conflict`."""

    default_code = "conflict"


class PreconditionFailed(BrokerError):
    """409/412 `precondition_failed`: e.g. it exists with other properties."""

    default_code = "precondition_failed"


class TooLarge(BrokerError):
    """413 `too_large`: the message is over the broker's MAX_MESSAGE_BYTES."""

    default_code = "too_large"


class Unavailable(BrokerError):
    """503 `unavailable`: retry later (a cluster failover, the store is down)."""

    default_code = "unavailable"


class SubscriptionCancelled(BrokerError):
    """The broker ended a subscription (its queue was deleted or expired)."""

    default_code = "cancelled"


_BY_CODE: dict[str, type[BrokerError]] = {
    cls.default_code: cls
    for cls in (InvalidRequest, Unauthorized, Forbidden, NotFound, Conflict, PreconditionFailed, TooLarge, Unavailable)
}

# What an HTTP status means when the answer does not carry the error shape.
STATUS_CODES: dict[int, str] = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    412: "precondition_failed",
    413: "too_large",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}


class ConnectionFailed(PubSubError):
    """The broker could not be reached (or the client gave up reconnecting)."""


class ClientClosed(PubSubError):
    """The client was closed while the operation waited."""


class PublishTimeout(PubSubError, TimeoutError):
    """No confirm within the publish's timeout: the message may or may not have been published."""


class RequestTimeout(PubSubError, TimeoutError):
    """No answer within the call's timeout (a subscribe, a ping)."""
