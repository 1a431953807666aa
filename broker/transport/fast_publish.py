"""The fast path of `POST /api/exchanges/{name}/publish/`, in front of Django.

Publishing is the hot HTTP call. Through Django each request paid for a thread
of its own (the ASGI handler's thread-sensitive context) and a hop to it per
middleware: 7 ms of CPU per publish (the benchmarks' profiles). This ASGI layer
answers JSON publishes itself, on the router's loop, and the wait for the
commit holds nothing, so concurrent publishers share commits.

It does what Django would do for such a request: the Host check against
ALLOWED_HOSTS, authentication by `Authorization: Bearer` (or `Token`) token and
the write permission on the exchange (`authenticate` is handed in: the access app's,
which caches a token's user and permissions for a few seconds, so revoking
one takes that long here), the body size limit, the same answers and error
shape, the same security headers. Anything else goes to Django, the
documented DRF action included: other methods and content types (the
browsable API's forms), every request with a session cookie (DRF checks
CSRF for logged-in users), and every request with an `Origin`: a browser page's,
whose anonymous changes Django refuses unless the origin is allowed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from django.conf import settings

from broker.engine.errors import BrokerError, ResourceLimit
from broker.engine.jsoncodec import dumps, loads_exact
from broker.protocol.publish import prepare_publish
from broker.router.calls import publish_async

from .authorization import Permissions
from .http_errors import error_body, error_response
from .origins import check_host
from .request_bodies import read_body

# The publisher's permissions from the request (its headers and client); `unauthorized` to refuse it.
Authenticate = Callable[[dict[str, Any]], Awaitable[Permissions]]  # from the request's scope

log = logging.getLogger("broker.http")

PUBLISH_PATH: Final = re.compile(r"^/api/exchanges/([^/]+)/publish/?$")
# As Django's SecurityMiddleware and XFrameOptionsMiddleware send them (settings.py).
SECURITY_HEADERS: Final = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class FastPublish:
    def __init__(self, app: Any, *, authenticate: Authenticate) -> None:
        self.app = app
        self._authenticate = authenticate
        self._session_cookie = settings.SESSION_COOKIE_NAME.encode() + b"="

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        match = PUBLISH_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST" or not self._takes(scope["headers"]):
            await self.app(scope, receive, send)
            return
        status, payload = await self._publish(match.group(1), scope, receive)
        body = dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))  # as DRF answers
        elif status == ResourceLimit.status and payload_code(payload) == ResourceLimit.code:
            headers.append((b"retry-after", str(ResourceLimit.retry_after).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers + SECURITY_HEADERS})
        await send({"type": "http.response.body", "body": body})

    def _takes(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """A program's JSON publish. Forms, session requests and whatever a browser page
        sends (it has an `Origin`) go to Django, for its CSRF and origin checks."""
        for name, value in headers:
            if name == b"content-type" and not value.lower().startswith(b"application/json"):
                return False
            if name == b"cookie" and self._session_cookie in value:
                return False
            if name == b"origin":
                return False
        return True

    async def _publish(self, exchange: str, scope: dict[str, Any], receive: Any) -> tuple[int, object]:
        try:
            check_host(scope)
            permissions = await self._authenticate(scope)
            permissions.require("write", "exchange", exchange)
            data = loads_exact(await read_body(receive, settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
        except BrokerError as error:
            return error_response(error)
        except ValueError as error:
            return 400, error_body("invalid", f"JSON parse error - {error}")
        try:
            if not isinstance(data, dict):
                raise BrokerError("the request body must be a JSON object")
            request = prepare_publish(data, max_bytes=settings.MAX_MESSAGE_BYTES, exchange=exchange)
            message_id, routed = await publish_async(request)
        except BrokerError as error:
            return error_response(error)
        return 200, {"message_id": message_id, "routed": routed}


def payload_code(payload: object) -> object:
    error = payload.get("error") if isinstance(payload, dict) else None
    return error.get("code") if isinstance(error, dict) else None
