"""The message browser's admin page for one queue: the same services as the HTTP API
(queues/browser.py), checked against the logged-in user's broker permissions."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from access.selectors import user_permissions
from broker.engine.errors import BrokerError
from broker.engine.jsoncodec import dumps
from queues.browser import Selection, query_filter, queue_messages, queue_messages_act
from queues.models import Queue

PAGE: Final = 50
# More than any queue holds, and within the 64-bit integers the cluster's links carry:
# int() of 4,301 digits or more raises, and an offset past 2**64 cannot reach the router.
MAX_OFFSET_DIGITS: Final = 18
FILTER_FIELDS: Final = ("routing_key", "header_name", "header_value", "path", "value")
VERBS: Final = {"delete": "Deleted", "move": "Moved", "copy": "Copied", "replay": "Replayed"}


def message_browser_view(model_admin: admin.ModelAdmin[Queue], request: HttpRequest, queue: Queue) -> HttpResponse:
    """Looking needs the view permission of queues; deleting, moving, copying and replaying
    change the queue, and need the change permission too (and the broker's rights)."""
    can_act = model_admin.has_change_permission(request, queue)
    if request.method == "POST" and not can_act:
        raise PermissionDenied("changing a queue's messages needs the change permission of queues")
    permissions = user_permissions(request.user)
    params = {field: request.GET.get(field, "") for field in FILTER_FIELDS}
    here = f"{request.path}?{urlencode({k: v for k, v in params.items() if v})}"
    if request.method == "POST":
        _act(request, queue, permissions)
        return HttpResponseRedirect(here)
    page: dict[str, Any] = {"count": 0, "complete": True, "offset": 0, "messages": []}
    offset = 0
    try:
        offset = _offset(request.GET.get("offset", ""))
    except BrokerError as error:  # the first page, with the error
        messages.error(request, error.message)
    try:
        page = queue_messages(name=queue.name, permissions=permissions, wanted=query_filter(params),
                              offset=offset, limit=PAGE)
    except BrokerError as error:
        messages.error(request, error.message)
    rows = [
        {**message, "body_text": dumps(message["body"]), "headers_text": dumps(message["headers"]) if message["headers"] else ""}
        for message in page["messages"]
    ]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "original": queue,
        "title": f"Messages of {queue.name}",
        "queue": queue,
        "page": page,
        "rows": rows,
        "params": params,
        "filtered": any(params.values()),
        "can_act": can_act,
        "previous": _page_link(here, offset - PAGE) if offset > 0 else None,
        "next": _page_link(here, offset + PAGE) if offset + PAGE < page["count"] else None,
        "first": offset + 1 if rows else 0,
        "last": offset + len(rows),
    }
    return TemplateResponse(request, "admin/queues/queue/messages.html", context)


def _offset(value: str) -> int:
    """The `offset` parameter: "" is 0; else ASCII digits ("²" is a digit to str.isdigit,
    not to int), at most MAX_OFFSET_DIGITS of them."""
    if value == "":
        return 0
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_OFFSET_DIGITS):
        raise BrokerError(f"offset: must be a whole number of at most {MAX_OFFSET_DIGITS} digits")
    return int(value)


def _page_link(here: str, offset: int) -> str:
    return f"{here}{'&' if '?' in here and not here.endswith('?') else ''}offset={max(0, offset)}"


def _act(request: HttpRequest, queue: Queue, permissions: Any) -> None:
    verb = request.POST.get("action", "")
    if verb not in VERBS:
        messages.error(request, "Choose an action.")
        return
    ids = request.POST.getlist("ids")
    scope_all = request.POST.get("scope") == "all"
    if not scope_all and not ids:
        messages.error(request, "Select messages first, or choose all that match.")
        return
    try:
        # The filter is checked here too (a bad one is the page's error, not a 500).
        selection = (
            Selection(None, query_filter({field: request.GET.get(field, "") for field in FILTER_FIELDS}))
            if scope_all else Selection(ids, None)
        )
        done = queue_messages_act(
            name=queue.name, action=verb, selection=selection, permissions=permissions,
            exchange=request.POST.get("exchange") if verb in ("move", "copy") else None,
            routing_key=request.POST.get("routing_key", ""),
        )
    except BrokerError as error:
        messages.error(request, f"{error.code}: {error.message}")
        return
    summary = f"{VERBS[verb]} {done['taken']} message(s)"
    if done["skipped"]:
        summary += f"; {done['skipped']} left as they were (unacknowledged, gone meanwhile, or routed nowhere)"
    if not done["complete"]:
        summary += "; only the queue's first 200,000 messages were looked at: act again for the rest"
    messages.success(request, summary + ".")
