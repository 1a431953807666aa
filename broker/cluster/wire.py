"""How edges and the router talk over the channel layer: batches, flow control, beats.

Every channel-layer message is a batch: a list of items (broker/protocol/link.py
types each of them). Many client frames, deliveries and replies share one
message, so a busy cluster pays one Redis round trip per batch, not per
message. Items in a batch are applied in order, and batches from one sender
arrive in order, so an edge's frames reach the router in the order its
clients sent them. An edge sends its batches (EDGE_BATCH) to the channel the
router announces; the router answers on the edge's own channel (ROUTER_BATCH).

Flow control: a batch with items is answered by a later batch the other way,
which carries `ack`, the sequence number of the last batch with items that
its sender has carried out. A sender has at most `BATCHES_IN_FLIGHT`
unanswered batches; the rest waits in its outbox and leaves as one batch.
Without this an edge sent a batch per few items as fast as Redis took them,
and they queued in Redis faster than the router, which reads channel-layer
messages one at a time, could take them: seconds of latency in the
cross-node benchmark.

Acks ride on batches that go anyway (a delivery, a publish's answer, a
client's ack). A batch is sent for the ack alone only when the other side asks
for it (`now`): with the batch that fills its window, and with an edge's beat
while it has batches unanswered (the ack was lost, or the router waited for a
batch to carry it on) or waits for answers (the reply's number shows one lost). At 1,000 messages a second each batch holds one
message, and sending every ack alone had doubled the link's Redis commands.

Each side numbers its batches with items one after another (an edge from `first`
in each generation, the router from 1 for each generation of an edge), and its
empty batches carry the number of its last. So a batch whose number skips one,
with items or without, says that one was lost on the way (Redis restarted empty,
a read whose reply was lost) with what it held: acks, closes, unsubscribes,
deliveries. The edge's connections then resume, as after a reset; served on, the
router would hold consumers the edge has closed, which take every Nth message of
an auto-ack queue for nobody. A number not above the last is a batch sent twice,
and is ignored.

An item that cannot be encoded (a string with a lone surrogate, an integer beyond 64
bits: msgpack has no form for either) is taken out of its batch when the batch fails to
encode, and answered with an error where it came from (`send_batch`); the rest of the
batch goes. Sent again and again, it held up every batch after it.

The router announces itself to the `EDGES_GROUP` with a beat every
`BEAT_SECONDS`; an edge that hears none for `ROUTER_TIMEOUT` fails what is in
flight, and resumes its connections on the next router it hears, never on
one of an older lease term (`STALE_TERM_SECONDS`). The router
drops an edge it has not heard from for `EDGE_TIMEOUT`, and with it the
connections' unacknowledged messages go back to their queues; the edge's
next batches get a reset, and it resumes its connections. So does an edge
the router no longer knows whose batch follows others of its generation
(`first`: the sequence number of its generation's first batch with items).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from channels.exceptions import ChannelFull

from broker.engine.errors import BrokerError
from broker.protocol.link import AnswerItem, PublishedItem, RefusedItem, RouterItem, SubscribedItem, encode_error

from .redis_link import encodes

# The items' form (broker/protocol/link.py). Nodes of other versions neither follow nor
# serve each other: every node of a cluster runs the same release (docs/deploy.md).
LINK_VERSION: Final = 7

EDGE_BATCH: Final = "broker.edge_batch"
ROUTER_BATCH: Final = "broker.router_batch"
BEAT: Final = "broker.beat"
HELLO: Final = "broker.hello"

# channels-redis reads a process's specific channels (`new_channel()`) with one
# receiver per name prefix and one lock among them: channels of two prefixes in one
# process starve each other. So every specific channel here keeps the default prefix.
EDGES_GROUP: Final = "broker.edges"
# A channel any process can send to and the active router reads: a new edge asks
# for a beat here instead of waiting up to BEAT_SECONDS for the next one.
HELLO_CHANNEL: Final = "broker.hello"

BATCHES_IN_FLIGHT: Final = 2
BEAT_SECONDS: Final = 0.5
ROUTER_TIMEOUT: Final = 3.0
# A beat's `term` is the router's lease term (a PostgreSQL transaction id taken with the
# lease: a later holder's is higher). An edge does not follow a router of a lower term than
# one it heard within this long: that router lost its lease without knowing it yet.
STALE_TERM_SECONDS: Final = 2 * ROUTER_TIMEOUT
# An edge joins the edges' group again this often (one script call): Redis may have
# forgotten it. A member that has not joined for three times this long is left out
# (redis_link.GROUP_EXPIRY): an edge killed without leaving.
REJOIN_SECONDS: Final = 5.0
# An ack this late was lost on the way (a Redis restart, say): the edge resumes its
# connections, failing what was in flight. Only the ack: a batch the router has acked may
# wait for its answers as long as a commit takes (a synchronous replica, a lock wait), and
# an answer lost on the way shows as a gap in the router's numbers, which an edge waiting
# for answers asks for with each beat (`now`).
ANSWER_TIMEOUT: Final = 10.0
# A publish whose batch the router acked but has not answered for this long fails with
# `unavailable` (it may be stored: its commit is slow, not lost), alone: the connections
# do not resume. Long, so that no slow commit that lands makes a duplicate of a retry;
# there only so that no publisher waits for ever on a router that never commits.
ANSWER_LATE_SECONDS: Final = 60.0
EDGE_TIMEOUT: Final = 5.0
# Longest wait for the router's answer to one call of the HTTP API.
CALL_TIMEOUT: Final = 30.0
# A batch that meets a full channel (its reader is behind) is sent again after FULL_RETRY_FIRST,
# then after twice as long each time, up to FULL_RETRY_LAST: a slow but live peer is asked a
# few times a second, not 200 (one script call each), and one that catches up waits at most
# FULL_RETRY_LAST more.
FULL_RETRY_FIRST: Final = 0.005
FULL_RETRY_LAST: Final = 0.2


log = logging.getLogger("broker.cluster")


class Window:
    """One side's batches with items that the other side has not acked yet (flow control)."""

    __slots__ = ("_unanswered",)

    def __init__(self) -> None:
        self._unanswered: deque[tuple[int, float]] = deque()  # (seq, when sent)

    @property
    def full(self) -> bool:
        return len(self._unanswered) >= BATCHES_IN_FLIGHT

    def sent(self, seq: int) -> None:
        self._unanswered.append((seq, time.monotonic()))

    def acked(self, seq: int) -> list[int]:
        """Forget the batches up to `seq`; returns them (none: the ack says nothing new)."""
        unanswered, done = self._unanswered, []
        while unanswered and unanswered[0][0] <= seq:
            done.append(unanswered.popleft()[0])
        return done

    @property
    def waiting(self) -> bool:
        return bool(self._unanswered)

    def unanswered_since(self, moment: float) -> bool:
        """Was a batch sent before `moment` still not acked?"""
        return bool(self._unanswered) and self._unanswered[0][1] < moment

    def __contains__(self, seq: int) -> bool:
        return any(sent == seq for sent, _ in self._unanswered)

    def clear(self) -> None:
        self._unanswered.clear()

    def withdraw(self, seq: int) -> None:
        """Forget `seq`, the last batch sent: it did not go after all (its number is reused)."""
        if self._unanswered and self._unanswered[-1][0] == seq:
            self._unanswered.pop()


# What an item that cannot be encoded (redis_link.encodes) is answered with, alone: a
# refusal (`invalid`) of the request that made it; the rest of its batch goes on.
_CANNOT_CROSS: Final = "holds a string that is not valid Unicode (a lone surrogate) or an integer beyond 64 bits"
UNENCODABLE_REQUEST: Final = f"the request cannot be sent to the broker's router: it {_CANNOT_CROSS}"
UNENCODABLE_ANSWER: Final = f"the broker's router cannot send its answer to this node: it {_CANNOT_CROSS}"

# A batch that cannot be encoded, with `salvage`: the same batch without its items that cannot,
# each of them answered with an error by the sender; None when there is nothing left to send.
Salvage = Callable[[dict[str, Any]], dict[str, Any] | None]


async def send_batch(
    layer: Any, channel: str, message: dict[str, Any], *, wanted: Callable[[], bool], salvage: Salvage
) -> None:
    """Send, waiting out a full channel (a busy peer) or a Redis hiccup, never dropping,
    for as long as `wanted()` says the peer is still the one to send to. A batch that
    cannot be encoded never will be: retried, it held up every later batch for good
    (the peer then dropped this node), so its items that cannot are taken out instead.
    The sender's next batch waits for this one: batches arrive in the order sent."""
    full_wait = FULL_RETRY_FIRST
    while wanted():
        try:
            await layer.send(channel, message)
            return
        except ChannelFull:
            await asyncio.sleep(full_wait)
            full_wait = min(full_wait * 2, FULL_RETRY_LAST)
        except Exception:
            if encodes(message):
                log.exception("sending a batch to %s failed; retrying", channel)
                await asyncio.sleep(BEAT_SECONDS)
                continue
            salvaged = salvage(message)
            if salvaged is None:
                return
            if not encodes(salvaged):  # not an item's fault: a bug of the sender
                log.error("a batch to %s cannot be encoded, not even without its items: dropped", channel)
                return
            message = salvaged


def error_instead(item: RouterItem, error: BrokerError) -> RouterItem | None:
    """What the router sends in place of an item that cannot be encoded: `error` as the
    answer it carried; None for an item that answers nothing (it is dropped)."""
    failure = encode_error(error)
    match item:
        case AnswerItem(request_id=request_id):
            return AnswerItem("R", request_id, False, failure)
        case PublishedItem(seq=seq, results=results):
            return PublishedItem("P", seq, [result if encodes(result) else failure for result in results])
        case SubscribedItem(conn=conn):
            return SubscribedItem("S", conn, None, failure)
        case RefusedItem(conn=conn, frame_id=frame_id):
            return RefusedItem("f", conn, frame_id, failure)
        case _:
            return None
