"""The one place where a broker error becomes an HTTP answer (docs/protocol.md, "Errors").

Every door uses it: the fast publish path here, the DRF API and the original
service's calls (common/api_errors.py, which adds Django's and DRF's own
exceptions). The body is `{"error": {"code", "message", "fields"?}}`; the
status is the error class's.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from broker.engine.errors import BrokerError

Fields = dict[str, list[str]]


class ErrorDetail(TypedDict):
    code: str
    message: str
    fields: NotRequired[Fields]


class ErrorBody(TypedDict):
    error: ErrorDetail


def error_body(code: str, message: str, fields: Fields | None = None) -> ErrorBody:
    detail = ErrorDetail(code=code, message=message)
    if fields:
        detail["fields"] = fields
    return ErrorBody(error=detail)


def error_response(error: BrokerError) -> tuple[int, ErrorBody]:
    """(HTTP status, body) of a refusal."""
    return error.status, error_body(error.code, error.message, dict(error.fields) if error.fields else None)
