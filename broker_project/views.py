"""The home page: what the broker holds now, and where to manage it.

Server-rendered from the same selectors as the API; no JavaScript.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from bindings.selectors import binding_list
from exchanges.selectors import exchange_list
from queues.selectors import queue_list


def home(request: HttpRequest) -> HttpResponse:
    context = {
        "exchanges": exchange_list(),
        "queues": queue_list(),
        "bindings": binding_list().select_related("exchange", "queue"),
    }
    return render(request, "home.html", context)
