"""common.api_errors: every error in docs/protocol.md's shape, with its stable code.

Pure: the handler is called directly with each exception; no database, no request.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions as drf

from broker.engine import errors as broker
from common.api_errors import exception_handler, flatten_errors


def handle(exc: Exception) -> tuple[int, dict[str, Any]]:
    response = exception_handler(exc, {})
    assert response is not None
    return response.status_code, response.data


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (broker.BrokerError("bad"), 400, "invalid"),
        (broker.BrokerError("bad"), 400, "invalid"),
        (broker.NotFound("queue 'x' does not exist"), 404, "not_found"),
        (broker.Forbidden("reserved"), 403, "forbidden"),
        (broker.Conflict("in use"), 409, "conflict"),
        (broker.PreconditionFailed("differs"), 409, "precondition_failed"),
        (broker.TooLarge("too big"), 413, "too_large"),
        (broker.Unavailable("no router"), 503, "unavailable"),
    ],
)
def test_broker_errors(exc: broker.BrokerError, status: int, code: str) -> None:
    assert handle(exc) == (status, {"error": {"code": code, "message": exc.message}})


def test_broker_error_fields() -> None:
    exc = broker.BrokerError("name: too long", fields={"name": ["1 to 255 characters"]})
    assert handle(exc) == (
        400,
        {"error": {"code": "invalid", "message": "name: too long", "fields": {"name": ["1 to 255 characters"]}}},
    )


def test_instance_code_alone_is_not_a_broker_error() -> None:
    exc = ValueError("x")
    exc.code = "nope"  # type: ignore[attr-defined]
    exc.status = 418  # type: ignore[attr-defined]
    assert exception_handler(exc, {}) is None


def test_validation_error_fields_and_first_message() -> None:
    exc = drf.ValidationError({"name": ["This field is required."], "type": ["Bad choice.", "Other."]})
    status, data = handle(exc)
    assert status == 400
    assert data == {
        "error": {
            "code": "invalid",
            "message": "name: This field is required.",
            "fields": {"name": ["This field is required."], "type": ["Bad choice.", "Other."]},
        }
    }
    assert all(type(text) is str for texts in data["error"]["fields"].values() for text in texts)


def test_validation_error_non_field() -> None:
    status, data = handle(drf.ValidationError(["bindings differ"]))
    assert status == 400
    assert data["error"]["fields"] == {"non_field_errors": ["bindings differ"]}
    assert data["error"]["message"] == "bindings differ"


def test_validation_error_serializer_non_field_errors() -> None:
    status, data = handle(drf.ValidationError({"non_field_errors": ["exchange and queue required"]}))
    assert data["error"]["fields"] == {"non_field_errors": ["exchange and queue required"]}
    assert data["error"]["message"] == "exchange and queue required"


def test_nested_errors_get_dotted_names() -> None:
    detail = {"arguments": {"max_length": ["must be >= 0"]}, "items": [{}, {"name": ["bad"]}]}
    assert flatten_errors(detail) == {"arguments.max_length": ["must be >= 0"], "items.1.name": ["bad"]}


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (drf.ParseError("JSON parse error"), 400, "invalid"),
        (drf.NotAuthenticated(), 401, "unauthorized"),
        (drf.AuthenticationFailed(), 401, "unauthorized"),
        (drf.PermissionDenied(), 403, "forbidden"),
        (DjangoPermissionDenied("no"), 403, "forbidden"),
        (drf.NotFound(), 404, "not_found"),
        (Http404("No Queue matches the given query."), 404, "not_found"),
        (drf.MethodNotAllowed("PATCH"), 405, "invalid"),
        (drf.UnsupportedMediaType("text/plain"), 415, "invalid"),
        (RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE."), 413, "too_large"),
        (drf.Throttled(wait=3), 429, "throttled"),
        (drf.NotAcceptable(), 406, "invalid"),
    ],
)
def test_framework_errors(exc: Exception, status: int, code: str) -> None:
    got_status, data = handle(exc)
    assert (got_status, data["error"]["code"]) == (status, code)
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]
    assert "fields" not in data["error"]


def test_messages_come_from_the_exception() -> None:
    assert handle(drf.MethodNotAllowed("PATCH"))[1]["error"]["message"] == 'Method "PATCH" not allowed.'
    assert handle(Http404("No Queue matches"))[1]["error"]["message"] == "No Queue matches"


def test_throttled_keeps_retry_after() -> None:
    response = exception_handler(drf.Throttled(wait=3), {})
    assert response is not None and response["Retry-After"] == "3"


def test_not_authenticated_keeps_www_authenticate() -> None:
    exc = drf.NotAuthenticated()
    exc.auth_header = 'Basic realm="api"'  # type: ignore[attr-defined]  # set by APIView
    response = exception_handler(exc, {})
    assert response is not None and response["WWW-Authenticate"] == 'Basic realm="api"'


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyError("k"), drf.APIException("server")])
def test_unexpected_errors_are_left_to_django(exc: Exception) -> None:
    assert exception_handler(exc, {}) is None


def test_a_lost_database_is_unavailable_not_a_server_error() -> None:
    from django.db import OperationalError

    response = exception_handler(OperationalError("server closed the connection unexpectedly"), {})
    assert response is not None
    assert (response.status_code, response.data["error"]["code"]) == (503, "unavailable")
