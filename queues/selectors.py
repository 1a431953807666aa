"""Read-only queries about queues that the admin and the API share.

Live counts come from the running router, not the database: only it knows
which messages are ready, unacknowledged, or held by which consumer.
"""

from __future__ import annotations

from broker_project.engine.broker import QueueCounts

__all__ = ["QueueCounts", "queue_live_counts"]


def queue_live_counts(names: list[str]) -> dict[str, QueueCounts]:
    """Counts of the named queues, from a worker thread (sync views, admin).

    Empty when no runtime runs in this process (e.g. a `daphne` front end or
    a management command): callers show the counts as unknown, not as zero.
    Queues the router does not know are absent from the result.
    """
    # Imported here: the runtime pulls in the engine and the channel layer,
    # which model and admin imports must not need.
    from broker_project.runtime import current_runtime

    rt = current_runtime()
    if rt is None:
        return {}
    return rt.call_threadsafe(rt.queue_counts, names)
