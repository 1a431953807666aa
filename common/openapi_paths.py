"""The OpenAPI document's paths that DRF does not serve: the original service's calls
(legacy/views.py) and `GET /health` (broker/transport/health.py).

A drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS): documentation only,
the calls themselves are unchanged. Their bodies and answers are written as
docs/protocol.md ("The original service's calls", "GET /health") gives them,
exactly enough for the schema fuzz test (tests/fuzz/test_api_schemathesis.py)
to check them as it checks /api/.
"""

from __future__ import annotations

from typing import Any, Final

ERROR: Final = {"$ref": "#/components/schemas/Error"}

# What each error status means for these calls, which take only a token (Bearer or Token scheme).
_MEANING: Final = {
    400: "invalid: the body is not a JSON object, or a field is missing or wrong (named as this call spells it)",
    401: "unauthorized: a token (Bearer or Token) that is not valid, or none while anonymous clients are not allowed "
    "(the session cookie is never taken here)",
    403: "forbidden: a missing configure/write/read permission, or a name reserved for the broker (amq.)",
    404: "not_found: the exchange or queue does not exist",
    409: "precondition_failed: it exists with other properties; limit_exceeded: past MAX_QUEUES or MAX_BINDINGS; "
    "queue_full: a queue it reaches is full and refuses it (x-overflow reject-publish)",
    413: "too_large: the body is over MAX_MESSAGE_BYTES",
    503: "unavailable: no router reachable or the database unavailable; retry later",
}

SCHEMAS: Final[dict[str, Any]] = {
    "LegacyExchangeDeclare": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "1 to 255 of A-Z a-z 0-9 _ . : -"},
            "type": {"type": "string", "enum": ["fanout", "direct"]},
        },
        "required": ["name", "type"],
    },
    "LegacyQueueDeclare": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": '"" = a generated amq.gen-... name'},
            "durable": {"type": "boolean", "default": False, "description": "false when absent, as in the Go service"},
        },
        "required": ["name"],
    },
    "LegacyQueue": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "durable": {"type": "boolean"},
            "auto_delete": {"type": "boolean"},
            "arguments": {"type": "object", "additionalProperties": {}},
        },
        "required": ["name", "durable", "auto_delete", "arguments"],
    },
    "LegacyBindingCreate": {
        "type": "object",
        "properties": {
            "exchange_name": {"type": "string"},
            "queue_name": {"type": "string"},
            "key": {"type": "string", "default": "", "description": "the binding key"},
        },
        "required": ["exchange_name", "queue_name"],
    },
    "LegacyPublish": {
        "type": "object",
        "properties": {
            "exchange_name": {"type": "string", "description": '"" is the default exchange'},
            "key": {"type": "string", "default": "", "description": "the routing key"},
            "payload": {"description": "the message body: any JSON value (required)"},
        },
        "required": ["exchange_name", "payload"],
    },
    "Pong": {
        "type": "object",
        "properties": {"message": {"type": "string", "enum": ["PONG"]}},
        "required": ["message"],
    },
    "Health": {
        "type": "object",
        "properties": {
            "role": {
                "type": "string",
                "enum": ["router", "standby", "edge", "none"],
                "description": "router: runs the router; standby: a router candidate serving meanwhile; "
                "edge: sends everything to the router; none: neither runs in this process",
            },
            "router": {"type": "boolean", "description": "this node reaches a router"},
            "cluster": {"type": "boolean", "description": "this node is part of a cluster"},
        },
        "required": ["role", "router", "cluster"],
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _call(operation_id: str, summary: str, body: str, answer: str, done: str, *statuses: int) -> dict[str, Any]:
    """A POST of the original service: a JSON body, one 200 answer, the API's errors."""
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": "No trailing slash and no CSRF check; the body is read as JSON whatever "
            "the Content-Type. Another method is 405 `invalid` with an `Allow` header.",
            "tags": ["original service"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
            "security": [{"bearerAuth": []}],
            "responses": {
                "200": _json(_ref(answer), done),
                **{str(status): _json(ERROR, _MEANING[status]) for status in statuses},
            },
        }
    }


PATHS: Final[dict[str, Any]] = {
    "/ping": {
        "get": {
            "operationId": "legacy_ping",
            "summary": "Is the broker up? (open to all)",
            "tags": ["original service"],
            "security": [],
            "responses": {"200": _json(_ref("Pong"), "the broker answers")},
        }
    },
    "/exchanges": _call(
        "legacy_exchange_declare", "Declare a fanout or direct exchange",
        "LegacyExchangeDeclare", "Exchange", "the exchange, created or identical", 400, 401, 403, 409, 413, 503,
    ),
    "/queues": _call(
        "legacy_queue_declare", "Declare a queue (not durable unless asked)",
        "LegacyQueueDeclare", "LegacyQueue", "the queue, created or identical", 400, 401, 403, 409, 413, 503,
    ),
    "/bindings": _call(
        "legacy_binding_create", "Bind a queue to an exchange",
        "LegacyBindingCreate", "Binding", "the binding, created or identical", 400, 401, 403, 404, 409, 413, 503,
    ),
    "/publish": _call(
        "legacy_publish", "Publish a persistent message",
        "LegacyPublish", "Published", "routed, and committed where it went to a durable queue",
        400, 401, 403, 404, 409, 413, 503,
    ),
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "This node's role, and whether it reaches a router",
            "description": "Answered before Django: no host check, no credentials. `HEAD` answers "
            "the same status without a body.",
            "tags": ["health"],
            "security": [],
            "responses": {
                "200": _json(_ref("Health"), "this node reaches a router"),
                "503": _json(_ref("Health"), "no router reachable, e.g. on an edge during a failover"),
            },
        }
    },
}


def add_paths_outside_drf(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS entry: the original service's calls and /health, after DRF's paths."""
    result["paths"].update(PATHS)
    result.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
    return result
