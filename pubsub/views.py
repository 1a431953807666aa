"""`GET /api/outbox/`: how many messages published from Django code wait for the router."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api_schema import errors

from .selectors import outbox_state
from .serializers import OutboxStateSerializer


class OutboxView(APIView):
    @extend_schema(responses={200: OutboxStateSerializer, **errors(401)})
    def get(self, request: Request) -> Response:
        return Response(OutboxStateSerializer(outbox_state()).data)
