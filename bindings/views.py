"""HTTP API of bindings (docs/protocol.md, HTTP API): translates requests to services.

Creating and deleting a binding need configure on its queue and read on its
exchange (access/rules.py).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from access.drf import request_permissions
from bindings.models import Binding
from bindings.selectors import binding_detail, binding_list
from bindings.serializers import BindingCreateSerializer, BindingSerializer
from bindings.services import binding_create, binding_delete
from common.api_schema import errors


class BindingViewSet(viewsets.GenericViewSet[Binding]):
    queryset = Binding.objects.all()  # for the schema's path parameter only; selectors do the reading
    lookup_value_regex = r"[0-9]+"

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        return BindingCreateSerializer if self.action == "create" else BindingSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("exchange", str, description="only the bindings of this exchange (by name)"),
            OpenApiParameter("queue", str, description="only the bindings of this queue (by name)"),
        ],
        responses={200: BindingSerializer(many=True), **errors(401)},
    )
    def list(self, request: Request) -> Response:
        rows = binding_list(exchange=request.query_params.get("exchange"), queue=request.query_params.get("queue"))
        return Response(BindingSerializer(rows, many=True).data)

    @extend_schema(
        request=BindingCreateSerializer,
        responses={
            201: OpenApiResponse(BindingSerializer, description="created"),
            200: OpenApiResponse(BindingSerializer, description="an identical binding exists"),
            **errors(400, 401, 403, 404),
        },
    )
    def create(self, request: Request) -> Response:
        serializer = BindingCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        _authorize(request, exchange=serializer.validated_data["exchange"], queue=serializer.validated_data["queue"])
        created = binding_create(**serializer.validated_data)
        code = status.HTTP_201_CREATED if created.created else status.HTTP_200_OK
        return Response(BindingSerializer(created.binding).data, status=code)

    @extend_schema(responses={200: BindingSerializer, **errors(401, 404)})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(BindingSerializer(binding_detail(id=int(pk))).data)

    @extend_schema(responses={204: None, **errors(401, 403, 404)})
    def destroy(self, request: Request, pk: str) -> Response:
        row = binding_detail(id=int(pk))
        _authorize(request, exchange=row.exchange.name, queue=row.queue.name)
        binding_delete(id=int(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _authorize(request: Request, *, exchange: str, queue: str) -> None:
    permissions = request_permissions(request)
    permissions.require("configure", "queue", queue)
    permissions.require("read", "exchange", exchange)
