"""HTTP API of bindings (docs/protocol.md, HTTP API): translates requests to services.

Creating and deleting a binding need write on its destination (queue or
exchange) and read on its exchange, as RabbitMQ's queue.bind and exchange.bind:
a binding is a way to publish into its destination (access/rules.py).
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
from bindings.selectors import binding_detail, binding_list, binding_page
from bindings.serializers import BindingCreateSerializer, BindingSerializer
from bindings.services import binding_create, binding_delete, require_binding_rights
from common.api_schema import errors, paged_list
from common.paging import page_request

_PAGED = paged_list(BindingSerializer, "Binding", by_name=False)


class BindingViewSet(viewsets.GenericViewSet[Binding]):
    queryset = Binding.objects.all()  # for the schema's path parameter only; selectors do the reading
    lookup_value_regex = r"[0-9]+"

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        return BindingCreateSerializer if self.action == "create" else BindingSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("exchange", str, description="only the bindings of this exchange (by name)"),
            OpenApiParameter("queue", str, description="only the bindings of this queue (by name)"),
            OpenApiParameter(
                "destination_exchange", str, description="only the bindings to this exchange (by name)"
            ),
            *_PAGED["parameters"],
        ],
        responses=_PAGED["responses"],
    )
    def list(self, request: Request) -> Response:
        query = request.query_params
        paging = page_request(query, by_name=False)
        rows = binding_list(
            exchange=query.get("exchange"), queue=query.get("queue"),
            destination_exchange=query.get("destination_exchange"),
        )
        if paging is None:
            return Response(BindingSerializer(rows, many=True).data)
        page = binding_page(paging, rows)
        return Response(page.envelope(BindingSerializer(page.items, many=True).data))

    @extend_schema(
        request=BindingCreateSerializer,
        responses={
            201: OpenApiResponse(BindingSerializer, description="created"),
            200: OpenApiResponse(BindingSerializer, description="an identical binding exists"),
            **errors(400, 401, 403, 404, 409),
        },
    )
    def create(self, request: Request) -> Response:
        serializer = BindingCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        _authorize(request, exchange=data["exchange"], queue=data.get("queue"),
                   destination_exchange=data.get("destination_exchange"))
        created = binding_create(**serializer.validated_data)
        code = status.HTTP_201_CREATED if created.created else status.HTTP_200_OK
        return Response(BindingSerializer(created.binding).data, status=code)

    @extend_schema(responses={200: BindingSerializer, **errors(401, 404)})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(BindingSerializer(binding_detail(id=int(pk))).data)

    @extend_schema(responses={204: None, **errors(401, 403, 404)})
    def destroy(self, request: Request, pk: str) -> Response:
        row = binding_detail(id=int(pk))
        _authorize(
            request, exchange=row.exchange.name, queue=row.queue.name if row.queue is not None else None,
            destination_exchange=row.destination_exchange.name if row.destination_exchange is not None else None,
        )
        binding_delete(id=int(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _authorize(request: Request, *, exchange: str, queue: str | None, destination_exchange: str | None) -> None:
    require_binding_rights(
        request_permissions(request), exchange=exchange, queue=queue, destination_exchange=destination_exchange
    )
