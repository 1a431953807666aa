"""Every error of the HTTP API as {"error": {code, message, fields?}} (docs/protocol.md, "Errors").

`translate` is the one translation of an exception into (status, code,
message, fields): broker errors as broker/transport/http_errors.py renders
them for every door, DRF's and Django's own exceptions (bad input, a missing
database) to the same codes. The DRF exception handler, the original
service's calls (legacy/views.py, through `exception_json`) and the 404
handler all use it, and both answers carry the same headers
(`WWW-Authenticate: Bearer` on every 401, `Retry-After`). Anything
unexpected is left alone (None): Django logs it and answers 500. Never
swallowed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from broker.engine.errors import BrokerError, ResourceLimit
from broker.transport.http_errors import Fields, error_body, error_response

log = logging.getLogger("broker.api")


def error_json(status: int, code: str, message: str, fields: Fields | None = None) -> JsonResponse:
    """The error answer of a plain Django view."""
    return JsonResponse(error_body(code, message, fields), status=status)


def exception_json(exc: Exception) -> JsonResponse | None:
    """A plain Django view's answer to `exc`, with the headers the API's would carry; None
    for a fault (Django answers 500)."""
    translated = translate(exc)
    if translated is None:
        return None
    response = error_json(*translated)
    for name, value in _headers(exc, translated[0]).items():
        response[name] = value
    return response


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER."""
    translated = translate(exc)
    if translated is None:
        return None
    status, code, message, fields = translated
    # Like DRF's own handler: undo the request's atomic block, if any, so a
    # failed request changes nothing (docs/protocol.md, "Errors").
    set_rollback()
    return Response(error_body(code, message, fields), status=status, headers=_headers(exc, status))


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 handler: under /api/ a URL that matches no endpoint (a name with
    characters docs/protocol.md does not allow, say) gets the API's error shape, not an HTML page."""
    if request.path.startswith("/api/"):
        return error_json(404, "not_found", f"no API endpoint at {request.path!r}")
    return page_not_found(request, exception)


def translate(exc: Exception) -> tuple[int, str, str, Fields | None] | None:
    """(status, code, message, fields) of an exception the API answers; None for a fault."""
    if isinstance(exc, BrokerError):
        status, body = error_response(exc)
        return status, body["error"]["code"], body["error"]["message"], body["error"].get("fields")
    if isinstance(exc, drf.ValidationError):
        fields = flatten_errors(exc.detail)
        return 400, "invalid", _first_message(fields) or "invalid input", fields or None
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database went away (docs/protocol.md, "Errors": unavailable); the broker recovers
        # by itself when it is back, so the client may retry.
        log.error("database unavailable: %s", exc)
        return 503, "unavailable", "the database is unavailable; retry later", None
    if isinstance(exc, RequestDataTooBig):
        return 413, "too_large", str(exc) or "request body too large", None
    if isinstance(exc, Http404):
        return 404, "not_found", str(exc) or "not found", None
    if isinstance(exc, DjangoPermissionDenied):
        return 403, "forbidden", str(exc) or "permission denied", None
    if isinstance(exc, drf.APIException):
        return _api_exception(exc)
    return None


# DRF exception class -> (status, code); the first matching class wins.
_DRF_CODES: tuple[tuple[type[drf.APIException], int, str], ...] = (
    (drf.ParseError, 400, "invalid"),
    (drf.NotAuthenticated, 401, "unauthorized"),
    (drf.AuthenticationFailed, 401, "unauthorized"),
    (drf.PermissionDenied, 403, "forbidden"),
    (drf.NotFound, 404, "not_found"),
    (drf.MethodNotAllowed, 405, "invalid"),
    (drf.UnsupportedMediaType, 415, "invalid"),
    (drf.Throttled, 429, "throttled"),
)


def _api_exception(exc: drf.APIException) -> tuple[int, str, str, Fields | None] | None:
    message = _detail_text(exc.detail)
    for cls, status, code in _DRF_CODES:
        if isinstance(exc, cls):
            return status, code, message, None
    # Other client errors DRF raises on purpose (NotAcceptable 406, ...) keep
    # their status; a 5xx APIException is a server fault: DRF's default path.
    if 400 <= exc.status_code < 500:
        return exc.status_code, "invalid", message, None
    return None


def _headers(exc: Exception, status: int) -> dict[str, str]:
    # Same headers as DRF's default handler: clients rely on them.
    headers: dict[str, str] = {}
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    elif status == 401:
        # docs/protocol.md, "Errors": every 401 names the scheme, as DRF's do (access/drf.py);
        # the broker's own `unauthorized` (the original service's calls) carries none.
        headers["WWW-Authenticate"] = "Bearer"
    wait = getattr(exc, "wait", None)
    if isinstance(exc, drf.Throttled) and wait is not None:
        headers["Retry-After"] = str(int(wait))
    if isinstance(exc, ResourceLimit):
        headers["Retry-After"] = str(exc.retry_after)
    return headers


def flatten_errors(detail: Any, prefix: str = "") -> Fields:
    """DRF error detail (nested dicts/lists of ErrorDetail) -> {"a.b": ["text"]}.

    A bare list or string (non-field errors) goes under NON_FIELD_ERRORS_KEY;
    nested serializers and list items get dotted keys ("arguments.x", "items.0").
    """
    fields: Fields = {}
    non_field = api_settings.NON_FIELD_ERRORS_KEY
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == non_field and prefix:
                name = prefix
            for sub, texts in flatten_errors(value, name).items():
                fields.setdefault(sub, []).extend(texts)
    elif isinstance(detail, Sequence) and not isinstance(detail, str):
        for index, item in enumerate(detail):
            if isinstance(item, (Mapping, list)):
                name = f"{prefix}.{index}" if prefix else str(index)
                for sub, texts in flatten_errors(item, name).items():
                    fields.setdefault(sub, []).extend(texts)
            else:
                fields.setdefault(prefix or non_field, []).append(str(item))
    else:
        fields.setdefault(prefix or non_field, []).append(str(detail))
    return fields


def _first_message(fields: Fields) -> str:
    for name, texts in fields.items():
        if texts:
            if name == api_settings.NON_FIELD_ERRORS_KEY:
                return texts[0]
            return f"{name}: {texts[0]}"
    return ""


def _detail_text(detail: Any) -> str:
    if isinstance(detail, (str, int, float)):
        return str(detail)
    return _first_message(flatten_errors(detail)) or "request refused"
