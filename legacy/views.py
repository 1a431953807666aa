"""The original Go service's REST calls, unchanged (docs/protocol.md, "The original service's calls").

Plain JSON views without trailing slashes and without CSRF, as its clients
expect; they reuse the services, so the rules (names, 409 on a different
redeclaration, nothing half-applied) are the API's. Bad input gets 400 with
the API's error shape, naming the fields as these calls spell them.

Being without CSRF, they take credentials only as `Authorization: Bearer` (or `Token`),
never the session cookie (access/drf.py), and check the same permissions as
the API; `/ping` is open to all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, Final

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from access.drf import legacy_permissions
from bindings.serializers import BindingSerializer
from bindings.services import binding_create, require_binding_rights
from broker.engine.errors import BrokerError
from broker.engine.jsoncodec import json_value_problem, nested_deeper_than
from common.api_errors import error_json, exception_json
from common.json_input import MAX_JSON_DEPTH
from exchanges.serializers import ExchangeSerializer
from exchanges.services import exchange_declare, message_publish
from queues.services import queue_declare

View = Callable[[HttpRequest], HttpResponse]

# The original service knew only these two exchange types.
LEGACY_EXCHANGE_TYPES: Final = ("fanout", "direct")
# The names these calls use for the services' fields, for error messages.
PUBLISH_FIELDS: Final = {"body": "payload", "routing_key": "key", "exchange": "exchange_name"}
BINDING_FIELDS: Final = {"binding_key": "key", "exchange": "exchange_name", "queue": "queue_name"}


def legacy_call(method: str) -> Callable[[View], View]:
    """One HTTP method; what the API answers with an error (broker errors, oversized
    bodies, a database that is away) gets the same answer here."""

    def decorate(fn: View) -> View:
        @csrf_exempt
        @wraps(fn)
        def view(request: HttpRequest) -> HttpResponse:
            if request.method != method:
                response = error_json(405, "invalid", f"method {request.method} is not allowed here; use {method}")
                response["Allow"] = method
                return response
            try:
                return fn(request)
            except Exception as error:
                answer = exception_json(error)
                if answer is None:
                    raise
                return answer

        return view

    return decorate


def _body(request: HttpRequest) -> dict[str, Any]:
    """The JSON object in the body, whatever the Content-Type (old clients may not send one)."""
    try:
        data = json.loads(request.body or b"null")
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deeply
        raise BrokerError("the request body is not valid JSON") from None
    if nested_deeper_than(data, MAX_JSON_DEPTH):
        raise BrokerError(f"the request body is nested more than {MAX_JSON_DEPTH} levels deep")
    problem = json_value_problem(data)
    if problem is not None:
        raise BrokerError(f"the request body: {problem}")
    if not isinstance(data, dict):
        raise BrokerError("the request body must be a JSON object")
    return data


def _required(data: Mapping[str, Any], field: str) -> Any:
    if field not in data:
        raise BrokerError(f"{field}: this field is required", fields={field: ["this field is required"]})
    return data[field]


@legacy_call("GET")
def ping(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"message": "PONG"})


@legacy_call("POST")
def exchanges(request: HttpRequest) -> HttpResponse:
    permissions = legacy_permissions(request)
    data = _body(request)
    name, kind = _required(data, "name"), _required(data, "type")
    if kind not in LEGACY_EXCHANGE_TYPES:
        raise BrokerError(f"type: {kind!r} must be fanout or direct", fields={"type": ["must be fanout or direct"]})
    if isinstance(name, str):  # a name of another type is refused by the service
        permissions.require("configure", "exchange", name)
    declared = exchange_declare(name=name, type=kind)
    return JsonResponse(ExchangeSerializer(declared.exchange).data)


@legacy_call("POST")
def queues(request: HttpRequest) -> HttpResponse:
    permissions = legacy_permissions(request)
    data = _body(request)
    name = _required(data, "name")
    if not isinstance(name, str):
        raise BrokerError("name: must be a string", fields={"name": ["must be a string"]})
    # A missing `durable` was false to the Go service (its zero value).
    declared = queue_declare(
        name=name,
        durable=data.get("durable", False),
        # On the final name, as the API does: "" becomes a generated one.
        permissions=permissions,
    )
    row = declared.queue
    return JsonResponse(
        {"name": row.name, "durable": row.durable, "auto_delete": row.auto_delete, "arguments": row.arguments}
    )


@legacy_call("POST")
def bindings(request: HttpRequest) -> HttpResponse:
    permissions = legacy_permissions(request)
    data = _body(request)
    exchange, queue = _required(data, "exchange_name"), _required(data, "queue_name")
    if not isinstance(exchange, str) or not isinstance(queue, str):
        raise BrokerError(
            "exchange_name and queue_name must be strings", fields={"exchange_name": ["must be a string"]}
        )
    require_binding_rights(permissions, exchange=exchange, queue=queue)  # the API's rule
    try:
        created = binding_create(exchange=exchange, queue=queue, binding_key=data.get("key", ""))
    except BrokerError as error:
        raise _renamed(error, BINDING_FIELDS) from None
    return JsonResponse(BindingSerializer(created.binding).data)


@legacy_call("POST")
def publish(request: HttpRequest) -> HttpResponse:
    permissions = legacy_permissions(request)
    data = _body(request)
    # Required; an explicit "" is the default exchange (docs/protocol.md, "The original service's calls").
    exchange = _required(data, "exchange_name")
    if not isinstance(exchange, str):  # null would be the default exchange, unchecked
        raise BrokerError("exchange_name: must be a string", fields={"exchange_name": ["must be a string"]})
    permissions.require("write", "exchange", exchange)
    fields: dict[str, Any] = {"routing_key": data.get("key", "")}
    if "payload" in data:
        fields["body"] = data["payload"]
    try:
        published = message_publish(data=fields, exchange=exchange)
    except BrokerError as error:
        raise _renamed(error, PUBLISH_FIELDS) from None
    return JsonResponse({"message_id": published.message_id, "routed": published.routed})


def _renamed(error: BrokerError, names: Mapping[str, str]) -> BrokerError:
    """The same error, naming the fields as this call spells them."""
    message = error.message
    for ours, theirs in names.items():
        if message.startswith(f"{ours}:"):
            message = theirs + message[len(ours) :]
    fields = {names.get(key, key): texts for key, texts in (error.fields or {}).items()} or None
    return type(error)(message, fields=fields)
