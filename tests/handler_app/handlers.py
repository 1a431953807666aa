"""Handlers whose behaviour the message asks for: `{"fail_until": N}` raises on the first
N attempts, `{"busy": S}` computes for S seconds (a time limit stops it), `{"sleep": S}`
sleeps for S seconds (a graceful stop waits for it), `{"die": "before_commit"}` or
`"after_commit"` ends the process there on the first delivery, `{"die": "always"}` at
every attempt (a message that kills whatever runs it). Every committed run inserts a row."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from django.db import transaction

from pubsub import Message, handler

from .models import HandledRow


def _behave(message: Message) -> None:
    body: Any = message.body if isinstance(message.body, dict) else {}
    if message.delivery_count <= body.get("fail_until", 0):
        raise RuntimeError(f"failing attempt {message.delivery_count} as asked")
    deadline = time.monotonic() + body.get("busy", 0)
    while time.monotonic() < deadline:
        pass
    time.sleep(body.get("sleep", 0))
    if body.get("die") == "always":
        os._exit(9)
    if not message.redelivered and body.get("die") == "before_commit":
        os._exit(9)
    if not message.redelivered and body.get("die") == "after_commit":
        transaction.on_commit(lambda: os._exit(9))


@handler(queue="work", concurrency=4, max_attempts=3, backoff=0.2, backoff_factor=2.0, time_limit=1.0)
def record(message: Message) -> None:
    _behave(message)
    HandledRow.objects.create(message_id=message.message_id, queue=message.queue, delivery_count=message.delivery_count)


@handler(queue="events.audit", exchange="events", binding_key="audit.#", concurrency=2)
def audit(message: Message) -> None:
    HandledRow.objects.create(message_id=message.message_id, queue=message.queue, delivery_count=message.delivery_count)


@handler(queue="async-work", concurrency=2, max_attempts=2, backoff=0.1)
async def record_async(message: Message) -> None:
    if isinstance(message.body, dict) and message.delivery_count <= message.body.get("fail_until", 0):
        raise RuntimeError("failing as asked")
    await asyncio.sleep(0)
    await HandledRow.objects.acreate(
        message_id=message.message_id, queue=message.queue, delivery_count=message.delivery_count
    )


@handler(queue="slow-work", time_limit=30.0)
def record_slowly(message: Message) -> None:
    """As `record`, under a longer time limit: a `{"sleep": S}` that outlives a stop's grace."""
    _behave(message)
    HandledRow.objects.create(message_id=message.message_id, queue=message.queue, delivery_count=message.delivery_count)
