"""Admin of queues (with live counts from the router) and of stored messages."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import NestedObjects, quote
from django.contrib.admin.views.main import ChangeList
from django.db import router as db_router
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator, capfirst

from access.admin_rights import BrokerRightsRequired
from access.rules import Permissions
from broker.engine.broker import QueueCounts
from broker.engine.errors import BrokerError
from broker.engine.names import held_for
from broker.engine.queues import parse_queue_arguments
from broker.engine.rules import object_field
from common.admin_mixins import CHECKED_JSON_FIELDS, NameFixedOnceSaved
from queues.admin_browser import message_browser_view
from queues.models import Message, Queue
from queues.selectors import queue_live_counts
from queues.services import require_queue_rights

logger = logging.getLogger(__name__)

UNKNOWN = "—"  # no runtime in this process, or the router did not answer
DEFAULT_EXCHANGE_LABEL = "(default)"  # the exchange "", as the web console names it
BODY_PREVIEW_CHARS = 60  # of the body's JSON text, in the list of stored messages


def _fetch_counts(names: list[str]) -> dict[str, QueueCounts]:
    try:
        return queue_live_counts(names)
    except Exception:
        # The page is still useful without counts; the failure is logged.
        logger.exception("live counts of %d queue(s) unavailable", len(names))
        return {}


def _dead_letter_exchange(values: Mapping[str, Any]) -> str | None:
    """The dead-letter exchange the form's arguments name, if they are valid (if not, the
    queue's clean() says why, and nothing is saved)."""
    try:
        return parse_queue_arguments(object_field("arguments", values.get("arguments"))).dead_letter_exchange
    except BrokerError:
        return None


class _MessagesCounted(NestedObjects):
    """The delete page's collector, with a queue's stored messages left out (counted)."""

    def related_objects(self, related_model: Any, related_fields: Any, objs: Any) -> Any:
        if related_model is Message:
            return Message._base_manager.none()
        return super().related_objects(related_model, related_fields, objs)


@admin.register(Queue)
class QueueAdmin(NameFixedOnceSaved, BrokerRightsRequired[Queue]):
    formfield_overrides = CHECKED_JSON_FIELDS  # what the API's parser refuses, refused
    list_display = ["name", "durable", "auto_delete", "ready", "unacknowledged", "consumers", "browse"]
    list_filter = ["durable", "auto_delete"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "ready", "unacknowledged", "consumers", "browse"]

    def require_rights_to_save(self, permissions: Permissions, values: Mapping[str, Any], stored: Queue | None) -> None:
        """As queue_declare: configure on the queue, and for a dead-letter exchange read on the
        queue and write on that exchange."""
        name = stored.name if stored is not None else values.get("name")
        if name:  # else the name's own error
            require_queue_rights(permissions, name=name, dead_letter_exchange=_dead_letter_exchange(values))

    def require_rights_to_delete(self, permissions: Permissions, obj: Queue) -> None:
        require_queue_rights(permissions, name=obj.name)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.messages_view)
        return [path("<path:object_id>/messages/", view, name="queues_queue_messages"), *super().get_urls()]

    @admin.display(description="messages")
    def browse(self, obj: Queue) -> str:
        if not obj.pk:  # the add form's unsaved queue
            return ""
        return format_html('<a href="{}">Browse messages</a>', reverse("admin:queues_queue_messages", args=[obj.pk]))

    def messages_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The message browser (queues/browser.py): a page of the queue's messages, and the
        actions on the selected or all matching."""
        queue = self.get_object(request, object_id)
        if queue is None or not self.has_view_permission(request, queue):
            raise Http404("no such queue")
        return message_browser_view(self, request, queue)

    def get_readonly_fields(self, request: HttpRequest, obj: Queue | None = None) -> list[str]:
        """A saved queue's durability is fixed, as in the API: unticked, the next start deleted
        the queue with its stored messages. A delayed exchange's holding queue is its
        exchange's, and shown only (as Queue.clean() says)."""
        fields = list(super().get_readonly_fields(request, obj))
        if obj is None:
            return fields
        fixed = ["durable", "auto_delete", "arguments"] if held_for(obj.name) is not None else ["durable"]
        return [*fields, *fixed]

    def has_delete_permission(self, request: HttpRequest, obj: Queue | None = None) -> bool:
        """A delayed exchange's holding queue goes with its exchange only, as the API says:
        deleted alone, its waiting messages were lost and the exchange routed without delay."""
        if obj is not None and held_for(obj.name) is not None:
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """Django's delete page (every row the delete takes, rows that protect the queue, the
        rights it needs), but a queue's stored messages counted rather than listed: Django
        would read each one (a backlog's millions) to name it on the page. They go with the
        queue, in one statement, for whoever may delete it."""
        queues = list(objs)
        if not queues:
            return [], {}, set(), []
        stored = dict(
            Message.objects.filter(queue__in=queues).values("queue").annotate(n=Count("id")).values_list("queue", "n")
        )
        collector = _MessagesCounted(using=db_router.db_for_write(Queue), origin=objs)
        collector.collect(queues)
        perms_needed: set[str] = set()

        def line(obj: Any) -> str:
            opts = obj._meta
            if not self.admin_site.is_registered(type(obj)):
                return f"{capfirst(opts.verbose_name)}: {obj}"
            if not self.admin_site.get_model_admin(type(obj)).has_delete_permission(request, obj):
                perms_needed.add(str(opts.verbose_name))
            url = reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[quote(obj.pk)])
            shown = format_html('{}: <a href="{}">{}</a>', capfirst(opts.verbose_name), url, obj)
            messages = stored.get(obj.pk, 0) if isinstance(obj, Queue) else 0
            return format_html("{} ({} stored messages)", shown, messages) if messages else shown

        listed = collector.nested(line)
        protected = [line(obj) for obj in collector.protected]
        model_objs: dict[Any, Any] = collector.model_objs
        counts = {str(model._meta.verbose_name_plural): len(found) for model, found in model_objs.items()}
        if stored:
            counts[str(Message._meta.verbose_name_plural)] = sum(stored.values())
        return listed, counts, perms_needed, protected

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        # One call to the router for the whole page, not three per row: the
        # counts are attached to the page's (cached) model instances.
        changelist = super().get_changelist_instance(request)
        rows: list[Queue] = list(changelist.result_list)
        counts = _fetch_counts([queue.name for queue in rows])
        for queue in rows:
            queue._live_counts = counts.get(queue.name)  # type: ignore[attr-defined]
        return changelist

    def _counts(self, obj: Queue) -> QueueCounts | None:
        if not hasattr(obj, "_live_counts"):
            # The change form: a single queue, fetched on first use.
            obj._live_counts = _fetch_counts([obj.name]).get(obj.name)  # type: ignore[attr-defined]
        return obj._live_counts  # type: ignore[attr-defined, no-any-return]

    @admin.display(description="ready")
    def ready(self, obj: Queue) -> int | str:
        counts = self._counts(obj)
        return UNKNOWN if counts is None else counts.messages_ready

    @admin.display(description="unacknowledged")
    def unacknowledged(self, obj: Queue) -> int | str:
        counts = self._counts(obj)
        return UNKNOWN if counts is None else counts.messages_unacknowledged

    @admin.display(description="consumers")
    def consumers(self, obj: Queue) -> int | str:
        counts = self._counts(obj)
        return UNKNOWN if counts is None else counts.consumers


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin[Message]):
    """Stored messages are written only by the broker, and deleted only through it: a row
    deleted here would still be delivered by the router, which holds the head of each queue
    in memory. The queue's message browser deletes them (and moves, copies, replays)."""

    list_display = ["id", "queue", "exchange_name", "routing_key", "body_preview", "message_id", "published_at"]
    list_filter = ["queue"]
    list_select_related = ["queue"]  # the queue's name on each row (and in __str__) without a query per row
    search_fields = ["message_id", "exchange", "routing_key"]

    @admin.display(description="exchange", ordering="exchange")
    def exchange_name(self, obj: Message) -> str:
        return obj.exchange or DEFAULT_EXCHANGE_LABEL

    @admin.display(description="body")
    def body_preview(self, obj: Message) -> str:
        return Truncator(obj.body).chars(BODY_PREVIEW_CHARS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
