"""The handlers' queues and bindings, declared on start over the broker's HTTP API.

Over the API, not the ORM: the router (in another process, perhaps on another
machine) hears of the change before the answer, whatever channel layer this
process has. A queue that exists with other properties is used as it is; a
queue without a dead-letter exchange, or whose dead-letter exchange does not
exist, gets `<queue>.dead` for the messages its handler gives up on.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

from broker.engine.errors import BrokerError
from broker.engine.queues import parse_queue_arguments
from pubsub.handling import Handler

from .execution import dead_queue

log = logging.getLogger("pubsub.handlers")

TIMEOUT_SECONDS: Final = 10.0


class DeclareError(Exception):
    """The broker refused a declaration, or could not be reached."""


def http_base(ws_url: str) -> str:
    """`ws://host:port/ws` -> `http://host:port`."""
    parts = urllib.parse.urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urllib.parse.urlunsplit((scheme, parts.netloc, "", "", ""))


def _call(base: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """The answer's status and JSON (its text, if it is not JSON). A server error (a node
    not ready yet, a proxy's 502 page) raises ConnectionError: the caller tries again."""
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    if status >= 500:
        raise ConnectionError(f"{method} {path}: {status}")
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw[:200].decode(errors="replace")


def _exchange_exists(base: str, token: str, name: str) -> bool:
    """Known to exist: the default exchange, or an exchange the broker shows (anything else, a
    refusal to show it too, and `<queue>.dead` is declared: the dead letters' way out)."""
    if name == "":
        return True
    status, _ = _call(base, token, "GET", f"/api/exchanges/{urllib.parse.quote(name, safe='')}/")
    return status == 200


def _message(answer: Any) -> str:
    error = answer.get("error") if isinstance(answer, dict) else None
    return str(error.get("message", "")) if isinstance(error, dict) else str(answer or "")


def declare(handler: Handler, *, base: str, token: str) -> None:
    """Make sure the handler's queue (and binding, and dead queue) exist."""
    status, answer = _call(base, token, "POST", "/api/queues/", {"name": handler.queue, "durable": True})
    if status == 409:
        log.warning("handler %s: queue %r exists with other properties (%s); used as it is, and if it is not "
                    "durable its messages are handled at least once, not exactly once", handler.name, handler.queue,
                    _message(answer))
    elif status not in (200, 201):
        raise DeclareError(f"handler {handler.name}: declaring queue {handler.queue!r}: {status} {answer}")
    if handler.exchange is not None:
        binding = {"exchange": handler.exchange, "queue": handler.queue, "binding_key": handler.binding_key}
        status, answer = _call(base, token, "POST", "/api/bindings/", binding)
        if status not in (200, 201):
            raise DeclareError(f"handler {handler.name}: binding {handler.queue!r} to {handler.exchange!r}: {status} {answer}")
    status, answer = _call(base, token, "GET", f"/api/queues/{urllib.parse.quote(handler.queue, safe='')}/")
    if status != 200:
        raise DeclareError(f"handler {handler.name}: reading queue {handler.queue!r}: {status} {answer}")
    try:
        arguments = answer.get("arguments") if isinstance(answer, dict) else None
        dead_letter_exchange = parse_queue_arguments(arguments or {}).dead_letter_exchange
    except BrokerError:
        dead_letter_exchange = None
    if dead_letter_exchange is None or not _exchange_exists(base, token, dead_letter_exchange):
        status, answer = _call(base, token, "POST", "/api/queues/", {"name": dead_queue(handler.queue), "durable": True})
        if status not in (200, 201, 409):
            raise DeclareError(f"handler {handler.name}: declaring {dead_queue(handler.queue)!r}: {status} {answer}")
