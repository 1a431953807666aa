"""HTTP API of exchanges (docs/protocol.md, HTTP API): translates requests to services.

Exchanges are looked up by name; `amq.default` names the default exchange.
Declaring and deleting need configure on the name, publishing needs write
(access/rules.py); reading needs only an authenticated user.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from access.drf import request_permissions
from common.api_schema import LOOKUP_NAME_REGEX, ErrorSerializer, errors, paged_list
from common.paging import page_request
from exchanges.models import Exchange
from exchanges.selectors import exchange_bindings, exchange_detail, exchange_list, exchange_page
from exchanges.serializers import (
    ExchangeBindingSerializer,
    ExchangeDetailSerializer,
    ExchangeSerializer,
    PublishedSerializer,
    PublishSerializer,
)
from exchanges.services import exchange_declare, exchange_delete, message_publish


class ExchangeViewSet(viewsets.GenericViewSet[Exchange]):
    queryset = Exchange.objects.all()  # for the schema's path parameter only; selectors do the reading
    lookup_field = "name"
    lookup_value_regex = LOOKUP_NAME_REGEX

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "publish":
            return PublishSerializer
        if self.action == "retrieve":
            return ExchangeDetailSerializer
        return ExchangeSerializer

    @extend_schema(**paged_list(ExchangeSerializer, "Exchange"))
    def list(self, request: Request) -> Response:
        paging = page_request(request.query_params)
        if paging is None:
            return Response(ExchangeSerializer(exchange_list(), many=True).data)
        page = exchange_page(paging)
        return Response(page.envelope(ExchangeSerializer(page.items, many=True).data))

    @extend_schema(
        request=ExchangeSerializer,
        responses={
            201: OpenApiResponse(ExchangeSerializer, description="created"),
            200: OpenApiResponse(ExchangeSerializer, description="an identical exchange exists"),
            **errors(400, 401, 403, 409),
        },
    )
    def create(self, request: Request) -> Response:
        serializer = ExchangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        declared = exchange_declare(**serializer.validated_data, permissions=request_permissions(request))
        code = status.HTTP_201_CREATED if declared.created else status.HTTP_200_OK
        return Response(ExchangeSerializer(declared.exchange).data, status=code)

    @extend_schema(responses={200: ExchangeDetailSerializer, **errors(401, 404)})
    def retrieve(self, request: Request, name: str) -> Response:
        exchange = exchange_detail(name=name)
        data = dict(ExchangeSerializer(exchange).data)
        data["bindings"] = ExchangeBindingSerializer(exchange_bindings(exchange=exchange), many=True).data
        return Response(data)

    @extend_schema(responses={204: None, **errors(401, 403, 404)})
    def destroy(self, request: Request, name: str) -> Response:
        request_permissions(request).require("configure", "exchange", name)
        exchange_delete(name=name)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=PublishSerializer,
        responses={
            200: PublishedSerializer,
            **errors(400, 401, 403, 404, 413, 503),
            409: OpenApiResponse(ErrorSerializer, description="queue_full: a queue it routed to is full and refuses "
                                 "publishes (x-overflow reject-publish); the other queues took it"),
        },
        description="Answers only after every durable copy is committed; `routed` counts the queues reached.",
    )
    @action(detail=True, methods=["post"])
    def publish(self, request: Request, name: str) -> Response:
        request_permissions(request).require("write", "exchange", name)
        published = message_publish(data=request.data, exchange=name)
        return Response(PublishedSerializer(published).data)
