"""The broker's HTTP API (docs/protocol.md, "HTTP API"): declarations, lists with live counts, get, purge.

Every call is one request; none is retried (purge and get are not idempotent).
An answer outside 2xx becomes a `BrokerError` with the broker's code; a
broker that cannot be reached becomes `ConnectionFailed`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from .errors import STATUS_CODES, BrokerError, ConnectionFailed
from .models import DEFAULT_EXCHANGE_URL_NAME, Binding, Exchange, Message, Queue

PAGE_SIZE = 500  # the broker's largest page


def _path_name(name: str) -> str:
    """An exchange name as a URL segment: the default exchange `""` is `amq.default` there."""
    return quote(name or DEFAULT_EXCHANGE_URL_NAME, safe="")


def error_from_response(response: httpx.Response) -> BrokerError:
    """The broker's `{"error": {"code", "message", "fields"?}}`, or one made from the status."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        fields = error.get("fields")
        return BrokerError.from_code(
            str(error.get("code", "error")),
            str(error.get("message", "")),
            fields if isinstance(fields, dict) else None,
            status=response.status_code,
        )
    code = STATUS_CODES.get(response.status_code, "error")
    text = response.text.strip()[:200] or response.reason_phrase
    return BrokerError.from_code(code, f"HTTP {response.status_code}: {text}", status=response.status_code)


class HttpApi:
    """Thin typed calls over one `httpx.AsyncClient` (connection reuse, the token header)."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, json: Any = None, params: dict[str, str] | None = None) -> Any:
        """The decoded JSON answer (None for 204); raises `BrokerError` or `ConnectionFailed`."""
        try:
            response = await self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as error:
            raise ConnectionFailed(f"cannot reach the broker at {self.base_url}: {error}") from error
        if response.status_code >= 400:
            raise error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def _listed(self, path: str, name: str | None) -> list[Any]:
        """A whole list; with `name`, its items whose name contains it (any case), read a
        page of PAGE_SIZE at a time (docs/protocol.md, "HTTP API": pages of the lists). An
        item declared or deleted meanwhile shifts the pages: none is listed twice."""
        if name is None:
            return list(await self.request("GET", path))
        items: dict[str, Any] = {}
        page = 1
        while True:
            answer = await self.request("GET", path, params={"name": name, "page": str(page), "page_size": str(PAGE_SIZE)})
            items.update((item["name"], item) for item in answer["items"] if item["name"] not in items)
            if page >= answer["page_count"]:
                return list(items.values())
            page += 1

    # -- exchanges -----------------------------------------------------------

    async def declare_exchange(
        self, name: str, type: str, *, durable: bool, auto_delete: bool, arguments: dict[str, Any] | None
    ) -> Exchange:
        body = {"name": name, "type": type, "durable": durable, "auto_delete": auto_delete, "arguments": arguments or {}}
        return Exchange.from_json(await self.request("POST", "/api/exchanges/", body))

    async def exchanges(self, *, name: str | None = None) -> list[Exchange]:
        return [Exchange.from_json(item) for item in await self._listed("/api/exchanges/", name)]

    async def exchange(self, name: str) -> Exchange:
        return Exchange.from_json(await self.request("GET", f"/api/exchanges/{_path_name(name)}/"))

    async def delete_exchange(self, name: str) -> None:
        await self.request("DELETE", f"/api/exchanges/{_path_name(name)}/")

    # -- queues --------------------------------------------------------------

    async def declare_queue(
        self, name: str, *, durable: bool, auto_delete: bool, arguments: dict[str, Any] | None
    ) -> Queue:
        body = {"name": name, "durable": durable, "auto_delete": auto_delete, "arguments": arguments or {}}
        return Queue.from_json(await self.request("POST", "/api/queues/", body))

    async def queues(self, *, name: str | None = None) -> list[Queue]:
        return [Queue.from_json(item) for item in await self._listed("/api/queues/", name)]

    async def queue(self, name: str) -> Queue:
        return Queue.from_json(await self.request("GET", f"/api/queues/{_path_name(name)}/"))

    async def delete_queue(self, name: str) -> None:
        await self.request("DELETE", f"/api/queues/{_path_name(name)}/")

    async def purge_queue(self, name: str) -> int:
        answer = await self.request("POST", f"/api/queues/{_path_name(name)}/purge/")
        return int(answer["purged"])

    async def get(self, queue: str, *, count: int, ack: bool) -> list[Message]:
        answer = await self.request("POST", f"/api/queues/{_path_name(queue)}/get/", {"count": count, "ack": ack})
        return [Message.from_json(item) for item in answer]

    # -- bindings ------------------------------------------------------------

    async def bind(self, exchange: str, queue: str, *, binding_key: str, arguments: dict[str, Any] | None) -> Binding:
        body = {"exchange": exchange, "queue": queue, "binding_key": binding_key, "arguments": arguments or {}}
        return Binding.from_json(await self.request("POST", "/api/bindings/", body))

    async def bind_exchange(
        self, source: str, destination: str, *, binding_key: str, arguments: dict[str, Any] | None
    ) -> Binding:
        body = {"exchange": source, "destination_exchange": destination, "binding_key": binding_key,
                "arguments": arguments or {}}
        return Binding.from_json(await self.request("POST", "/api/bindings/", body))

    async def bindings(
        self, *, exchange: str | None, queue: str | None, destination_exchange: str | None = None
    ) -> list[Binding]:
        params = {}
        if exchange is not None:
            params["exchange"] = exchange or DEFAULT_EXCHANGE_URL_NAME
        if queue is not None:
            params["queue"] = queue
        if destination_exchange is not None:
            params["destination_exchange"] = destination_exchange
        return [Binding.from_json(item) for item in await self.request("GET", "/api/bindings/", params=params)]

    async def delete_binding(self, binding_id: int) -> None:
        await self.request("DELETE", f"/api/bindings/{binding_id}/")
