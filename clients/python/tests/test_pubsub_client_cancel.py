"""A consumer's task cancelled in the same turn as its subscription wakes is cancelled: on
Python 3.11 `asyncio.wait_for` returned instead, and the consumer's loop went on."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from pubsub_client.subscription import Subscription


async def test_a_consumer_cancelled_as_its_subscription_wakes_is_cancelled() -> None:
    subscription = Subscription(id="s", frame={}, ack=cast(Any, "auto"), session=cast(Any, None))
    waiting = asyncio.create_task(subscription.next(timeout=5))
    await asyncio.sleep(0.01)
    subscription._end()  # wakes it...
    waiting.cancel()  # ...in the turn its task is cancelled
    await asyncio.wait({waiting}, timeout=2)
    assert waiting.cancelled()
