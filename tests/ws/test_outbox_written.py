"""The outbox reports the router's batches once they are written to the socket, in
order (broker/transport/outbox.py): the credit of their deliveries comes back then."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.runtime.timeouts import within
from broker.transport.outbox import REPORT_EVERY, Outbox


class GatedSend:
    """A socket that takes frames only while its gate is open; `reported_at`: the batches
    reported written (`written`'s sum) as each frame was taken."""

    def __init__(self, written: list[int] | None = None) -> None:
        self.sent: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.written = written if written is not None else []
        self.reported_at: list[int] = []

    async def send(self, event: Any) -> None:
        await self.gate.wait()
        self.sent.append(event.get("text"))
        self.reported_at.append(sum(self.written))


def new_outbox(socket: GatedSend, written: list[int]) -> Outbox:
    outbox = Outbox(
        socket.send, 1_000_000, on_too_slow=lambda: None, on_failed=lambda: None, on_written=written.append
    )
    outbox.start(name="test-outbox")
    return outbox


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_batches_are_reported_once_written_and_not_before() -> None:
    socket, written = GatedSend(), []
    outbox = new_outbox(socket, written)
    socket.gate.clear()  # the client stops reading
    outbox.deliver(["a", "b"])
    outbox.append("a reply")  # not a batch: never reported
    outbox.deliver(["c"])
    await settle()
    assert written == []
    socket.gate.set()
    await settle()
    assert socket.sent == ["a", "b", "a reply", "c"]
    assert sum(written) == 2
    outbox.stop()


async def test_an_empty_batch_is_reported_after_what_was_queued_before_it() -> None:
    socket, written = GatedSend(), []
    outbox = new_outbox(socket, written)
    outbox.deliver([])
    await settle()
    assert written == [1]  # nothing before it: at once
    socket.gate.clear()
    outbox.deliver(["a"])
    outbox.deliver([])  # a STOMP client's stats frame, say, which it does not get
    await settle()
    assert written == [1]
    socket.gate.set()
    await settle()
    assert sum(written) == 3
    outbox.stop()


async def test_a_long_send_reports_as_it_goes() -> None:
    written: list[int] = []
    socket = GatedSend(written)
    outbox, reported_at = new_outbox(socket, written), socket.reported_at
    socket.gate.clear()
    for n in range(3 * REPORT_EVERY):
        outbox.deliver([str(n)])
    await settle()
    socket.gate.set()
    await settle()
    assert sum(written) == 3 * REPORT_EVERY
    assert reported_at[-1] >= 2 * REPORT_EVERY  # reported as it went, not only at the end
    assert all(reported <= sent for sent, reported in enumerate(reported_at))  # never ahead of the socket
    outbox.stop()


async def test_a_batch_followed_by_a_stream_of_replies_is_reported_before_they_end() -> None:
    written: list[int] = []
    socket = GatedSend(written)
    outbox, reported_at = new_outbox(socket, written), socket.reported_at
    socket.gate.clear()
    outbox.deliver(["delivery"])
    for n in range(3 * REPORT_EVERY):
        outbox.append(f"confirm {n}")
    await settle()
    socket.gate.set()
    await settle()
    assert reported_at[REPORT_EVERY] == 1  # long before the last confirm left
    outbox.stop()


async def test_nothing_is_reported_once_the_outbox_is_stopped() -> None:
    socket, written = GatedSend(), []
    outbox = new_outbox(socket, written)
    socket.gate.clear()
    outbox.deliver(["a"])
    await settle()
    outbox.stop()
    socket.gate.set()
    outbox.deliver(["b"])
    await settle()
    assert written == []


async def test_a_caller_cancelled_while_it_waits_for_the_sender_to_stop_is_cancelled() -> None:
    socket, written = GatedSend(), []
    outbox = new_outbox(socket, written)
    socket.gate.clear()
    outbox.deliver(["held"])  # the sender waits on the socket
    await settle()
    waiting = asyncio.create_task(within(outbox.wait_stopped(), 5))
    await settle()
    waiting.cancel()
    await asyncio.wait({waiting}, timeout=2)
    assert waiting.cancelled()  # not swallowed as if the sender had ended
    outbox.stop()
