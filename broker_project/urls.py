"""Root URL configuration: the console, the admin (and its branding), the HTTP API under
/api/ with its root page, schema and docs, the original Go service's calls
(legacy/views.py), and /favicon.ico."""

from __future__ import annotations

import re
from typing import Any, Final

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.templatetags.static import static
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.views.generic import RedirectView
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)
from rest_framework.routers import APIRootView, DefaultRouter

from bindings.views import BindingViewSet
from console.views import home
from exchanges.views import ExchangeViewSet
from legacy import views as legacy
from pubsub.views import OutboxView
from queues.views import QueueViewSet


def _alias(view: Any) -> Any:
    """The same view under another URL, hidden from the schema (it is no DRF view class)."""

    def alias(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return view(request, *args, **kwargs)  # type: ignore[no-any-return]

    alias.csrf_exempt = True  # type: ignore[attr-defined]  # as DRF views are
    return alias


DOCS_URL: Final = re.compile(r"/api/(?:docs|redoc|schema)/")


class ApiRoot(APIRootView):
    """The broker's HTTP API: declare exchanges, queues and bindings, publish, and take
    messages from queues, at the links below.

    Interactive docs at /api/docs/ (or /api/redoc/), from the OpenAPI schema at
    /api/schema/. Messages are delivered over the WebSocket at /ws: its frames, and the
    contract behind every call, are in docs/protocol.md of the broker's source.
    """

    def get_view_name(self) -> str:
        return "Pub/Sub broker API"  # SPECTACULAR_SETTINGS' title; DRF's would be "Api Root"

    def get_view_description(self, html: bool = False) -> str:
        text: str = super().get_view_description(html=False)
        if not html:
            return text
        paragraphs = "".join(f"<p>{escape(paragraph)}</p>" for paragraph in text.split("\n\n"))
        return mark_safe(DOCS_URL.sub(r'<a href="\g<0>">\g<0></a>', paragraphs))


class BrokerRouter(DefaultRouter):
    """The documented URLs, which end in a slash, and the same without it.

    Without the slash-less aliases, APPEND_SLASH would 301-redirect `POST /api/queues`
    and a client following the redirect would turn it into a GET, losing the body.
    The aliases have no names, so links and reverse() give the documented form.
    """

    include_format_suffixes = False  # `.json` would clash with names containing dots
    APIRootView = ApiRoot

    def get_urls(self) -> list[URLPattern | URLResolver]:
        urls: list[Any] = super().get_urls()
        aliases = [
            re_path(url.pattern.regex.pattern.removesuffix("/$") + "$", _alias(url.callback))
            for url in urls
            if isinstance(url, URLPattern) and url.pattern.regex.pattern.endswith("/$") and url.name != "api-root"
        ]
        return urls + aliases


admin.site.site_header = "Pub/sub broker"
admin.site.site_title = "Pub/sub broker admin"
admin.site.index_title = "Broker administration"

router = BrokerRouter()
router.register("exchanges", ExchangeViewSet, basename="exchange")
router.register("queues", QueueViewSet, basename="queue")
router.register("bindings", BindingViewSet, basename="binding")

urlpatterns = [
    path("", home, name="home"),
    # Browsers ask for it on every page without an icon link (the admin's, the browsable API's).
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api/outbox/", OutboxView.as_view(), name="outbox"),
    # As the router's slash-less aliases: served, and left out of the schema (documented
    # twice, both would be `outbox_retrieve`, a collision drf-spectacular warns of).
    path("api/outbox", _alias(OutboxView.as_view())),
    path("api/", include(router.urls)),
    # Log in and out for any active user (the admin's login takes staff only):
    # the browsable API's links, and the session a non-staff user's console needs.
    path("api/auth/", include("rest_framework.urls")),
    # The original service's calls: no trailing slash, as its clients send them.
    path("ping", legacy.ping, name="legacy-ping"),
    path("exchanges", legacy.exchanges, name="legacy-exchanges"),
    path("queues", legacy.queues, name="legacy-queues"),
    path("bindings", legacy.bindings, name="legacy-bindings"),
    path("publish", legacy.publish, name="legacy-publish"),
]

handler404 = "common.api_errors.not_found"
