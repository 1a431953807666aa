"""OpenAPI pieces the apps' views share: the error shape and per-status responses.

Only documentation: the errors themselves are rendered by the one exception
handler (common/api_errors.py), in docs/protocol.md's shape.
"""

from __future__ import annotations

from typing import Any, Final

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, inline_serializer
from rest_framework import serializers

from common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE, MAX_PAGE_SIZE

LOOKUP_NAME_REGEX: Final = r"[A-Za-z0-9_.:\-]+"  # docs/protocol.md's name characters


class ErrorDetailSerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="invalid, unauthorized, forbidden, not_found, conflict, "
                                 "precondition_failed, limit_exceeded, too_large, rate_limited, unavailable")
    message = serializers.CharField()

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # A field named `fields` cannot be declared: the name is the serializer's own attribute.
        declared = super().get_fields()
        declared["fields"] = serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            required=False,
            help_text="per field, its problems",
        )
        return declared


class ErrorSerializer(serializers.Serializer[Any]):
    error = ErrorDetailSerializer()


_MEANING: Final = {
    400: "invalid: the input breaks a rule (the body is not a JSON object, a field is wrong)",
    401: "unauthorized: no valid credentials (Bearer token or session) while anonymous clients are not allowed",
    403: "forbidden: a missing configure/write/read permission, a name reserved for the broker (amq.), "
    "the default exchange, or a WebSocket subscription's private queue",
    404: "not_found",
    409: "precondition_failed: it exists with other properties; limit_exceeded: past MAX_QUEUES or MAX_BINDINGS; "
    "queue_full: a queue it reaches is full and refuses it (x-overflow reject-publish)",
    413: "too_large: the body is over MAX_MESSAGE_BYTES",
    503: "unavailable: the broker's router is not running in this process",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """`responses=` entries for these error statuses."""
    return {status: OpenApiResponse(ErrorSerializer, description=_MEANING[status]) for status in statuses}


def paged_list(
    item: type[serializers.Serializer[Any]], name: str, *, by_name: bool = True, statuses: tuple[int, ...] = (400, 401),
    filters: list[OpenApiParameter] | None = None,
) -> dict[str, Any]:
    """`extend_schema` arguments of a list that pages on request (common/paging.py): its
    query parameters, and its answer, the whole list or one page of it."""
    page = inline_serializer(
        name=f"{name}Page",
        fields={
            "items": item(many=True),
            "page": serializers.IntegerField(),
            "page_size": serializers.IntegerField(),
            "page_count": serializers.IntegerField(help_text="pages of the filtered list"),
            "item_count": serializers.IntegerField(help_text="items on this page"),
            "filtered_count": serializers.IntegerField(help_text="items the filters kept"),
            "total_count": serializers.IntegerField(help_text="items before any filter"),
        },
    )
    parameters = [
        OpenApiParameter("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
                         description="a page of the list, from 1 (any paging parameter answers with one "
                         "page in an envelope; none, with the whole list)"),
        OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE,
                                       "default": DEFAULT_PAGE_SIZE}, description="items per page"),
    ]
    if by_name:
        parameters += [
            OpenApiParameter("name", str, description="only the items whose name contains this, in any case"),
            OpenApiParameter("use_regex", {"type": "boolean", "enum": [False]},
                             description="only false, as RabbitMQ's clients send it: no regular expression "
                             "is run on the names (one could stall the broker)"),
        ]
    parameters += filters or []
    answer = PolymorphicProxySerializer(
        component_name=f"{name}List", serializers=[item(many=True), page], resource_type_field_name=None, many=False,
    )
    return {"parameters": parameters, "responses": {200: answer, **errors(*statuses)}}
