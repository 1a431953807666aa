"""HTTP API of queues (docs/protocol.md, HTTP API): translates requests to services.

Queues are looked up by name. The list also shows the private `amq.gen-`
queues of live WebSocket subscriptions, read-only. Declaring, deleting and
purging need configure on the name, getting needs read (access/rules.py).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from access.drf import request_permissions
from broker.engine.errors import BrokerError
from broker.protocol.calls import BROWSER_ACTIONS
from common.api_schema import LOOKUP_NAME_REGEX, errors, paged_list
from common.paging import flag, page_request
from queues.browser import query_filter, queue_messages, queue_messages_act, selection_of
from queues.models import Queue
from queues.selectors import queue_detail, queue_list, queue_page
from queues.serializers import (
    MAX_QUERY_INT,
    MessageActionDoneSerializer,
    MessageActionSerializer,
    MessagePageSerializer,
    MessageSerializer,
    PurgedSerializer,
    QueueDeclareSerializer,
    QueueGetSerializer,
    QueueSerializer,
)
from queues.services import queue_declare, queue_delete, queue_get, queue_purge


class QueueViewSet(viewsets.GenericViewSet[Queue]):
    queryset = Queue.objects.all()  # for the schema's path parameter only; selectors do the reading
    lookup_field = "name"
    lookup_value_regex = LOOKUP_NAME_REGEX

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "create":
            return QueueDeclareSerializer
        if self.action == "get_messages":
            return QueueGetSerializer
        if self.action == "purge":
            return PurgedSerializer
        return QueueSerializer

    @extend_schema(**paged_list(
        QueueSerializer, "Queue", statuses=(400, 401, 503),
        filters=[OpenApiParameter("exclusive", bool, description="only connections' private queues (true), "
                                  "or only declared ones (false); a page of them")],
    ))
    def list(self, request: Request) -> Response:
        paging = page_request(request.query_params, filters=("exclusive",))
        if paging is None:
            return Response(QueueSerializer(queue_list(), many=True).data)
        page = queue_page(paging, exclusive=flag(request.query_params, "exclusive"))
        return Response(page.envelope(QueueSerializer(page.items, many=True).data))

    @extend_schema(
        request=QueueDeclareSerializer,
        responses={
            201: OpenApiResponse(QueueSerializer, description="created"),
            200: OpenApiResponse(QueueSerializer, description="an identical queue exists"),
            **errors(400, 401, 403, 409),
        },
    )
    def create(self, request: Request) -> Response:
        serializer = QueueDeclareSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # Checked on the final name: a generated `amq.gen-` name is known only inside the service.
        permissions = request_permissions(request)
        declared = queue_declare(**serializer.validated_data, permissions=permissions)
        code = status.HTTP_201_CREATED if declared.created else status.HTTP_200_OK
        return Response(QueueSerializer(queue_detail(name=declared.queue.name)).data, status=code)

    @extend_schema(responses={200: QueueSerializer, **errors(401, 404)})
    def retrieve(self, request: Request, name: str) -> Response:
        return Response(QueueSerializer(queue_detail(name=name)).data)

    @extend_schema(responses={204: None, **errors(401, 403, 404)})
    def destroy(self, request: Request, name: str) -> Response:
        request_permissions(request).require("configure", "queue", name)
        queue_delete(name=name)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: PurgedSerializer, **errors(401, 403, 404, 503)})
    @action(detail=True, methods=["post"])
    def purge(self, request: Request, name: str) -> Response:
        request_permissions(request).require("configure", "queue", name)
        return Response({"purged": queue_purge(name=name)})

    @extend_schema(
        parameters=[
            OpenApiParameter("offset", int, description="messages to pass over (default 0)"),
            OpenApiParameter("limit", int, description="messages in the page, 1 to 1000 (default 50)"),
            OpenApiParameter("routing_key", str, description="only messages with this routing key"),
            OpenApiParameter("header_name", str, description="only messages with this header..."),
            OpenApiParameter("header_value", str, description="...of this value (as text)"),
            OpenApiParameter("path", str, description="only JSON bodies with a value at this path (keys joined by dots)"),
            OpenApiParameter("value", str, description="...equal to this JSON value (other text: that string)"),
        ],
        responses={200: MessagePageSerializer, **errors(400, 401, 403, 404, 503)},
        description="The queue's messages, without taking them or changing their order or `redelivered`: "
        "the unacknowledged ones first (`state: unacked`), then the ready ones in the queue's order.",
    )
    @action(detail=True, methods=["get"], url_path="messages", url_name="messages")
    def messages(self, request: Request, name: str) -> Response:
        params = request.query_params
        offset = _query_int(params.get("offset"), "offset", 0)
        limit = _query_int(params.get("limit"), "limit", 50)
        page = queue_messages(name=name, permissions=request_permissions(request), wanted=query_filter(params),
                              offset=offset, limit=limit)
        return Response(page)

    @extend_schema(
        request=MessageActionSerializer,
        responses={200: MessageActionDoneSerializer, **errors(400, 401, 403, 404, 503)},
        description="`delete`, `move` or `copy` (to `exchange` with `routing_key`) or `replay` (each to where the "
        "broker dead-lettered it from) the ready messages selected by `ids`, or `all` that match `filter`. Done in batches, "
        "each committed whole: a broker that stops half way has done some batches and not the others.",
    )
    @action(detail=True, methods=["post"], url_path=rf"messages/(?P<verb>{'|'.join(BROWSER_ACTIONS)})",
            url_name="messages-act")
    def act_on_messages(self, request: Request, name: str, verb: str) -> Response:
        serializer = MessageActionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        done = queue_messages_act(
            name=name, action=verb, selection=selection_of(request.data if isinstance(request.data, dict) else {}),
            permissions=request_permissions(request), exchange=data.get("exchange"),
            routing_key=data.get("routing_key", ""),
        )
        return Response(done)

    @extend_schema(
        request=QueueGetSerializer,
        responses={200: MessageSerializer(many=True), **errors(400, 401, 403, 404, 503)},
        description="Up to `count` ready messages. With `ack` false they stay at the head of the "
        "queue, in order, and come out next with `redelivered: true`.",
    )
    # Not a method named `get`: on an APIView that would answer every GET request.
    @action(detail=True, methods=["post"], url_path="get", url_name="get")
    def get_messages(self, request: Request, name: str) -> Response:
        serializer = QueueGetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        request_permissions(request).require("read", "queue", name)
        return Response(queue_get(name=name, **serializer.validated_data))


def _query_int(value: str | None, field: str, default: int) -> int:
    """A whole number from 0 to MAX_QUERY_INT: what a page can ask for. A larger one could
    not cross the cluster's link (msgpack's integers end at 64 bits), and Python's `int`
    refuses more than 4,300 digits."""
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()):  # "²" and "１" are digits to str.isdigit
        raise BrokerError(f"{field}: must be a whole number", fields={field: ["must be a whole number"]})
    if len(value) > len(str(MAX_QUERY_INT)) or int(value) > MAX_QUERY_INT:
        problem = f"must be at most {MAX_QUERY_INT}"
        raise BrokerError(f"{field}: {problem}", fields={field: [problem]})
    return int(value)
