"""The test kit: what code published, recorded like `django.core.mail.outbox`.

    from pubsub.testing import capture_published

    def test_checkout_announces_the_order(client):
        with capture_published() as published:
            client.post("/checkout/", {...})
        assert [m.routing_key for m in published] == ["orders.eu.created"]

With pytest, the `published` fixture (registered by this package's pytest plugin)
does the same for the whole test. Every accepted call is recorded at the call, in
order, with its exchange, routing key, body (as JSON gives it back), headers,
`persistent` and message id: nothing needs a running router. A call that a
rollback later took back is recorded too, as `mail.outbox` keeps mail of a
transaction that rolled back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from . import recording
from .recording import Published

__all__ = ["Published", "capture_published"]


@contextmanager
def capture_published() -> Iterator[list[Published]]:
    """The messages published while the block runs (a list, filled as they are)."""
    recorder = recording.start()
    try:
        yield recorder.messages
    finally:
        recording.stop(recorder)
