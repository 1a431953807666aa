"""HTTP request bodies: read up to a limit, and refused as soon as they pass it.

Django's ASGI handler reads a whole body into a spooled file before any view runs, with no
cap: DATA_UPLOAD_MAX_MEMORY_SIZE is checked only when a view reads `request.body`. So a
client, before any authentication, could make the broker write a body of any size to its
disk, and one that was refused got its 413 only once it had sent everything. `BodyLimit`
stands in front of every HTTP route: it reads the body itself, answers 413 `too_large` as
soon as it passes the limit (then reads the rest and throws it away before the response
ends, so that a client still sending reads the answer instead of a connection reset), and
hands a body under the limit on as one message.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from broker.engine.errors import BrokerError, TooLarge
from broker.engine.jsoncodec import dumps
from broker.runtime.timeouts import within

from .http_errors import error_response

# A refused body is read on and thrown away up to this much, for this long (`discard_rest`).
DISCARD_BYTES: Final = 256 * 1024 * 1024
DISCARD_SECONDS: Final = 30.0


class ClientGone(BrokerError):
    """The client closed its connection before the whole body came."""


class BodyTooLarge(TooLarge):
    """A body past the limit; `last` is the message that passed it (`discard_rest` goes on
    from there)."""

    def __init__(self, limit: int, last: dict[str, Any]) -> None:
        super().__init__(f"the request body is over the limit of {limit} bytes")
        self.last = last


async def read_body(receive: Any, limit: int) -> bytes:
    """The request's body; BodyTooLarge as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("the client went away before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, message)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def discard_rest(receive: Any, message: dict[str, Any]) -> None:
    """Read the rest of a body that is refused, and throw it away (a lingering close, as
    nginx does): a server that answers and closes while the body still arrives makes the
    client's system reset the connection, and the client never reads the answer. Up to
    DISCARD_BYTES or DISCARD_SECONDS; past either the answer goes out all the same."""
    discarded = 0
    deadline = asyncio.get_running_loop().time() + DISCARD_SECONDS
    while message.get("more_body", False) and discarded < DISCARD_BYTES:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        try:
            message = await within(receive(), left)
        except TimeoutError:
            return
        if message["type"] == "http.disconnect":
            return
        discarded += len(message.get("body", b""))


class BodyLimit:
    """ASGI middleware for HTTP: a body over `limit()` bytes is answered 413 here."""

    def __init__(self, app: Any, *, limit: Any) -> None:
        """`limit`: a callable giving the limit in bytes, read per request (tests change it)."""
        self.app = app
        self._limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive, self._limit())
        except ClientGone:
            return
        except BodyTooLarge as error:
            # The whole answer goes out at once (its length is said), but the response ends
            # only once the rest of the body is read: the server closes the connection then.
            status, payload = error_response(error)
            answer = dumps(payload).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": answer, "more_body": True})
            await discard_rest(receive, error.last)
            await send({"type": "http.response.body", "body": b""})
            return
        given = False

        async def replay() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            message: dict[str, Any] = await receive()  # what comes after: a disconnect
            return message

        await self.app(scope, replay, send)
