"""The fast path of `POST /api/exchanges/{name}/publish/`: an async view.

The DRF view is synchronous: Django runs every sync view on one thread, so
each publisher held that thread until its commit and HTTP publishing ran one
commit at a time. Here the wait for the commit holds no thread, so concurrent
publishers share commits (DESIGN.md, "Message store"). Same answers and errors
as the DRF action, which stays the documented view (schema, browsable API) and
still serves what this one hands it: requests with a session cookie (DRF
checks CSRF for logged-in users) and bodies that are not JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from broker_project.api_errors import error_payload
from broker_project.engine.errors import BrokerError, TooLarge
from broker_project.engine.jsoncodec import loads
from exchanges.services import message_publish_async

JSON = "application/json"


def fast_publish_view(drf_view: Callable[..., HttpResponse]) -> Callable[..., Any]:
    """The async view, falling back to `drf_view` for what only DRF handles."""
    delegate = sync_to_async(drf_view)

    @csrf_exempt  # as DRF's views: CSRF protects cookie sessions, which go to DRF
    async def publish(request: HttpRequest, name: str) -> HttpResponse:
        if request.method != "POST" or request.content_type != JSON or settings.SESSION_COOKIE_NAME in request.COOKIES:
            return await delegate(request, name=name)  # type: ignore[no-any-return]
        try:
            try:
                body = request.body
            except RequestDataTooBig:
                raise TooLarge(f"the request body is over the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")
            try:
                data = loads(body)
            except ValueError as error:
                raise BrokerError(f"JSON parse error - {error}") from None
            published = await message_publish_async(data=data, exchange=name)
        except BrokerError as error:
            return JsonResponse(error_payload(error.code, error.message, error.fields), status=error.status)
        return JsonResponse({"message_id": published.message_id, "routed": published.routed})

    return publish
