"""What the broker serves besides its API: the favicon, without a logged 404, and the
browser module to pages of the origins the WebSocket allows (CORS on /static/pubsub/ only)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from unittest import TestCase

import httpx
import pytest
from django.test import Client

from broker.transport.origins import OriginGuard
from broker_project.asgi import http_application

MODULE = "/static/pubsub/client.js"


@pytest.fixture
async def static() -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP application without the router: static files and Django, as runbroker serves them."""
    transport = httpx.ASGITransport(app=http_application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8060") as client:
        yield client


@pytest.mark.django_db
def test_favicon_ico_leads_to_the_svg_icon_and_nothing_is_logged() -> None:
    with TestCase().assertNoLogs("django.request", level=logging.INFO):  # where a 404 was a warning
        response = Client().get("/favicon.ico")
    assert (response.status_code, response["Location"]) == (301, "/static/favicon.svg")
    console = Client().get("/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in console


async def test_the_svg_icon_is_served(static: httpx.AsyncClient) -> None:
    icon = await static.get("/static/favicon.svg")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:3000", True),  # a host of ALLOWED_HOSTS, any scheme and port
        ("https://127.0.0.1", True),
        ("https://app.example.com", False),
        ("null", False),  # a file:// or sandboxed page
    ],
)
async def test_the_browser_module_may_be_imported_by_the_origins_the_websocket_allows(
    static: httpx.AsyncClient, origin: str, allowed: bool
) -> None:
    assert OriginGuard(None).policy.allows(origin) is allowed  # the WebSocket's check, the same answer
    response = await static.get(MODULE, headers={"Origin": origin})
    assert response.status_code == 200 and b"export function connect" in response.content
    assert response.headers.get("access-control-allow-origin") == (origin if allowed else None)
    assert "access-control-allow-credentials" not in response.headers
    assert "Origin" in response.headers["vary"]


async def test_allowed_origins_setting_decides(static: httpx.AsyncClient, settings: Any) -> None:
    settings.ALLOWED_ORIGINS = ["https://app.example.com"]
    allowed = await static.get(MODULE, headers={"Origin": "https://app.example.com"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    refused = await static.get(MODULE, headers={"Origin": "http://localhost:3000"})
    assert "access-control-allow-origin" not in refused.headers


async def test_only_the_browser_module_is_shared(static: httpx.AsyncClient) -> None:
    without_origin = await static.get(MODULE)
    assert "access-control-allow-origin" not in without_origin.headers
    console = await static.get("/static/console/main.js", headers={"Origin": "http://localhost:3000"})
    assert console.status_code == 200
    assert "access-control-allow-origin" not in console.headers
