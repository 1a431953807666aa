"""An edge's side of the cluster: one link per process to whichever router is active.

`EdgeLink` is the `Router` (broker/router/interface.py) of a process without
the router: WebSocket sessions and HTTP calls use it as they would the router
itself. It batches what they send (one channel-layer message per send, while
the next batch fills; wire.py), dispatches what comes back in order, and
remembers what each connection subscribed (edge_connections.py), so that when
a new router takes over the connections resume by themselves: same
subscriptions, delivery tags above any the client holds, and what was in
flight failed with `unavailable` rather than left hanging.

About 600 lines: following a router, batching with flow control (and
refusing what cannot be encoded), and the interface's calls share the link's
state (what is in flight on which router); what each connection remembers is
in edge_connections.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.exceptions import ChannelFull

from broker.engine.errors import BrokerError, Unavailable
from broker.protocol.calls import RouterCall, call_args
from broker.protocol.client_frames import FrameId, SubscribeRequest
from broker.protocol.link import (
    AckItem,
    AnswerItem,
    CallItem,
    CancelledItem,
    CloseItem,
    EdgeItem,
    EncodedError,
    FramesItem,
    GiveBackItem,
    LastTagItem,
    NackItem,
    OpenItem,
    PublishedItem,
    PublishItem,
    RefusedItem,
    ResetItem,
    RouterItem,
    SubscribedItem,
    SubscribeItem,
    UnsubscribedItem,
    UnsubscribeItem,
    WatchItem,
    WrittenItem,
    decode_error,
    decode_router_item,
    encode_error,
)
from broker.protocol.publish import PublishRequest
from broker.router import registry
from broker.router.interface import ConnectionSink, Publishing, SubscribeAnswer
from broker.runtime import memory
from broker.runtime.stamps import new_message_id
from broker.runtime.timeouts import within

from .edge_connections import EdgeConnections
from .redis_link import encodes
from .wire import (
    ANSWER_LATE_SECONDS,
    ANSWER_TIMEOUT,
    BEAT,
    BEAT_SECONDS,
    CALL_TIMEOUT,
    EDGE_BATCH,
    EDGES_GROUP,
    HELLO,
    HELLO_CHANNEL,
    LINK_VERSION,
    REJOIN_SECONDS,
    ROUTER_BATCH,
    ROUTER_TIMEOUT,
    STALE_TERM_SECONDS,
    UNENCODABLE_REQUEST,
    Window,
    send_batch,
)

log = logging.getLogger("broker.cluster")

NO_ROUTER = "the broker's router is not reachable; a standby takes over"
LATE = (
    "the broker's router took the message but has not answered in {:.0f} s; "
    "it may be stored: publish again only if a duplicate is acceptable"
)


class EdgeLink:
    def __init__(self, layer: Any, *, candidate: bool = False) -> None:
        self.layer = layer
        # Also waits for the router lease (a `runbroker` of a cluster, not an edge).
        self.candidate = candidate
        self._loop: asyncio.AbstractEventLoop | None = None
        self.channel = ""
        self.router_channel: str | None = None
        self.epoch: str | None = None
        self.generation = 0
        self._last_beat = 0.0
        # The highest lease term heard (hub.py), and when last: a router of a lower term lost
        # its lease (it was stopped, say, and does not know yet) and is not followed.
        self._term = 0
        self._term_heard = 0.0
        self._joined = 0.0  # when this edge last joined the edges' group
        self._joining: asyncio.Task[None] | None = None
        self._router_store: bool | None = None  # the router's message store answers (its beat says)
        self._last_sent = 0.0
        self._connections = EdgeConnections()
        self._outbox: list[EdgeItem] = []
        self._batch: asyncio.Future[list[Any]] | None = None  # answers the outbox's publishes
        self._batch_size = 0
        self._awaiting: dict[int, asyncio.Future[list[Any]]] = {}  # batch seq -> its answer
        self._sent_at: dict[int, float] = {}  # batch seq -> when, while its publishes' answers are awaited
        # batch seq -> the answers of its publishes refused here (they could not be encoded), by slot
        self._refused: dict[int, dict[int, EncodedError]] = {}
        self._seq = 0
        self._first_seq = 1  # of this generation's first batch with items (hub.py)
        self._window = Window()
        self._last_answer_check = 0.0
        self._router_seq = 0  # the router's last batch with items, which we ack
        # While a give-back (`_unwanted`) waits in the outbox: the highest of the router's
        # batches that a batch without items may ack (the one before the give-back's answer).
        self._ack_held: int | None = None
        self._ack_asked = False  # the router's last batch asked for our ack at once
        self._beat_due = False
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._other_versions: set[object] = set()  # routers of another release, logged once
        self._stale_routers: set[object] = set()  # routers of an older lease term, logged once
        self._next_call = 1
        self._wakeup = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._ended = False  # the link's task ended (a bug): see `_link_ended`

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    @property
    def available(self) -> bool:
        return self.router_channel is not None and not self._ended

    @property
    def role(self) -> str:
        return "standby" if self.candidate else "edge"

    @property
    def store_reachable(self) -> bool | None:
        return self._router_store if self.router_channel is not None else None

    # -- life cycle ------------------------------------------------------

    async def start(self) -> None:
        """Join the edges, serve this process's clients through the link, and ask for a router."""
        self._loop = asyncio.get_running_loop()
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(EDGES_GROUP, self.channel)
        self._main = asyncio.create_task(self._run(), name="edge-link")
        self._main.add_done_callback(self._link_ended)
        registry.install(self, is_local=False)
        await self._hello()

    async def wait_for_router(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.available and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.available

    async def stop(self) -> None:
        registry.uninstall(self)
        self._lose_router("this edge is stopping")
        if self._main is not None:
            self._main.cancel()
            try:
                await self._main
            except asyncio.CancelledError:
                pass
        try:
            await self.layer.group_discard(EDGES_GROUP, self.channel)
        except Exception:
            log.debug("leaving the edges' group failed", exc_info=True)

    async def _run(self) -> None:
        """The link's tasks; one that fails (a bug: each catches what it expects) starts the
        link again rather than leave a zombie, `available` with nobody receiving, whose
        publishes wait for ever: what waited on the router fails, and the connections
        resume on it once its next beat is heard."""
        while True:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._receive_forever(), name="edge-receive")
                    group.create_task(self._send_forever(), name="edge-send")
                    group.create_task(self._watch_router(), name="edge-watchdog")
            except Exception:
                log.exception("the edge's link to its router failed: it starts again, its connections resume")
                self._lose_router("this edge's link to the broker's router failed; publish again")
                await asyncio.sleep(BEAT_SECONDS)

    def _link_ended(self, task: asyncio.Task[None]) -> None:
        """`_run` ended though it never returns: no longer `available` (its /health says
        so), and nothing waits on a link that is gone."""
        if task.cancelled():
            return
        log.error("the edge's link to its router ended: this edge serves no more", exc_info=task.exception())
        self._ended = True
        self._lose_router("this edge's link to the broker's router ended")

    async def _hello(self) -> None:
        # Join again first: a Redis restarted empty has forgotten the edges' group, and
        # its beats would not reach this edge.
        await self._join()
        try:
            await self.layer.send(HELLO_CHANNEL, {"type": HELLO, "edge": self.channel})
        except ChannelFull:
            pass  # no router has read them for a while; its beat will come
        except Exception:
            log.exception("saying hello to the router failed")

    async def _join(self) -> None:
        """Into the edges' group, again: also every REJOIN_SECONDS while an edge follows its
        router through the answers to its own batches, which a Redis restarted empty does not
        stop, while the router's beats (its memory alarm, its store's state) no longer came."""
        self._joined = time.monotonic()
        try:
            await self.layer.group_add(EDGES_GROUP, self.channel)
        except Exception:
            log.exception("joining the edges' group failed")

    async def _watch_router(self) -> None:
        """Lose a router that went silent; beat towards it when we have nothing to send."""
        while True:
            await asyncio.sleep(BEAT_SECONDS)
            now = time.monotonic()
            if self.router_channel is None:
                await self._hello()
                continue
            if now - self._joined >= REJOIN_SECONDS and (self._joining is None or self._joining.done()):
                # A task of its own: a Redis that does not answer must not hold up this watch.
                self._joining = asyncio.create_task(self._join(), name="edge-rejoin")
            if now - self._last_beat > ROUTER_TIMEOUT:
                log.warning("router %s silent for %.0f s: waiting for the next one", self.epoch, ROUTER_TIMEOUT)
                self._lose_router("the broker's router went away; a standby takes over")
            elif self._answer_lost(now):
                epoch, channel = self.epoch, self.router_channel
                log.warning("an ack of router %s is %.0f s late: resuming the connections", epoch, ANSWER_TIMEOUT)
                self._lose_router("an answer of the broker's router was lost; publish again")
                if epoch is not None and channel is not None:
                    self._follow(epoch, channel)
            elif now - self._last_sent >= BEAT_SECONDS:
                self._beat_due = True  # an empty batch says this edge lives
                self._wakeup.set()

    def _ignore_router(self, epoch: object, version: object) -> None:
        if epoch not in self._other_versions:
            self._other_versions.add(epoch)
            log.error("router %s speaks cluster link version %r, this edge %d: not followed", epoch, version, LINK_VERSION)

    def _current_term(self, term: object, epoch: object) -> bool:
        """Is a beat of this term to be heard? Not one of a term below the highest heard in
        the last STALE_TERM_SECONDS; a long-lived edge follows a lower term after that (a
        cluster started again on a new database, whose terms start low)."""
        term = term if isinstance(term, int) else 0
        now = time.monotonic()
        if term >= self._term or now - self._term_heard > STALE_TERM_SECONDS:
            self._term, self._term_heard = term, now
            return True
        if epoch not in self._stale_routers:
            self._stale_routers.add(epoch)
            log.warning("router %s of lease term %d, below %d: not followed (it lost its lease)", epoch, term, self._term)
        return False

    def _answer_lost(self, now: float) -> bool:
        """Is the router's ack of a batch overdue (it or the batch was lost)? Checked once a
        second. Not the answers of a batch it acked: they wait on its commit, which may be
        slow, and one lost on the way shows as a gap in its numbers (`_lost_batch`), which
        the beats of an edge waiting for answers ask the router for (`_waits_for_answers`).
        Resuming for a late answer would fail publishes that are stored (a client's retry
        makes duplicates) and redeliver every unacked message of every connection, every
        ANSWER_TIMEOUT while commits stay slow."""
        if now - self._last_answer_check < 1.0:
            return False
        self._last_answer_check = now
        self._fail_late(now)
        return self._window.unanswered_since(now - ANSWER_TIMEOUT)

    def _fail_late(self, now: float) -> None:
        """Fail the publishes of acked batches unanswered for ANSWER_LATE_SECONDS, alone:
        the router took them, so the connections need not resume."""
        deadline = now - ANSWER_LATE_SECONDS
        for seq in [seq for seq, sent in self._sent_at.items() if sent < deadline and seq not in self._window]:
            del self._sent_at[seq]
            self._refused.pop(seq, None)
            future = self._awaiting.pop(seq, None)
            if future is not None and not future.done():
                log.warning("router %s has not answered batch %d in %.0f s: its publishes fail",
                            self.epoch, seq, ANSWER_LATE_SECONDS)
                future.set_exception(Unavailable(LATE.format(ANSWER_LATE_SECONDS)))

    def _waits_for_answers(self) -> bool:
        """Does anything wait on the router: an ack, a publish's, a subscribe's or a call's answer?"""
        return (
            self._window.waiting
            or bool(self._awaiting)
            or bool(self._calls)
            or self._connections.oldest_question() is not None
        )

    @staticmethod
    def _router_alarm(alarm: bool) -> None:
        """The router's memory alarm: this process holds its publishers back while it is on."""
        guard = memory.guard()
        if guard is not None:
            guard.set_router_alarm(alarm)

    def _lose_router(self, reason: str) -> None:
        """Fail what waits on the router; keep connections to resume on the next one."""
        self._router_alarm(False)
        self.router_channel = None
        self.epoch = None
        self._outbox = []
        self._window.clear()
        self._router_seq = 0
        self._ack_held = None
        self._ack_asked = False
        failure = Unavailable(reason)
        batches = list(self._awaiting.values())
        if self._batch is not None:
            batches.append(self._batch)
        self._awaiting.clear()
        self._sent_at.clear()
        self._refused.clear()
        self._batch = None
        self._batch_size = 0
        for future in batches + list(self._calls.values()):
            if not future.done():
                future.set_exception(failure)
        self._calls.clear()
        self._connections.fail_questions(failure)

    def _follow(self, epoch: str, channel: str) -> None:
        """A router we do not follow yet: resume every connection on it."""
        if self.epoch is not None:
            log.warning("router %s replaced by %s", self.epoch[:8], epoch[:8])
            self._lose_router("the broker's router changed; publish again")
        else:
            log.info("following router %s", epoch[:8])
        self.epoch = epoch
        self.router_channel = channel
        self.generation += 1
        self._first_seq = self._seq + 1
        for item in self._connections.resume_items():
            self._push(item)

    # -- receiving -------------------------------------------------------

    async def _receive_forever(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
                kind = message.get("type")
                if kind == BEAT:
                    if message.get("link") != LINK_VERSION:
                        self._ignore_router(message.get("epoch"), message.get("link"))
                        continue
                    if not self._current_term(message.get("term"), message["epoch"]):
                        continue
                    self._last_beat = time.monotonic()
                    if message["epoch"] != self.epoch:
                        self._follow(message["epoch"], message["channel"])
                    self._router_alarm(bool(message.get("alarm")))
                    store = message.get("store")
                    self._router_store = store if isinstance(store, bool) else None
                elif kind == ROUTER_BATCH and message.get("epoch") == self.epoch:
                    if message.get("gen", self.generation) != self.generation:
                        # Sent to this edge's connections before they resumed (it waited in
                        # Redis, or in a send the router had under way): its deliveries are
                        # given again to the resumed connections, flagged as redelivered.
                        continue
                    self._last_beat = time.monotonic()
                    self._on_ack(message.get("ack", 0))
                    seq = message.get("seq")  # a reset has none
                    if seq is not None and seq > self._router_seq + bool(message["items"]):
                        self._lost_batch(seq)
                        continue
                    if message["items"] and (seq is None or seq > self._router_seq):
                        self._router_seq = seq if seq is not None else self._router_seq
                        if message.get("now"):  # it filled the router's window
                            self._ack_asked = True
                            self._wakeup.set()
                        self.on_batch(message["items"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a batch from the router failed")
                await asyncio.sleep(0.1)

    def _lost_batch(self, seq: int) -> None:
        """The router numbers its batches with items one by one, and an empty one carries the
        number of its last: batch `seq` says one between was lost on the way (a Redis
        restarted empty, a read whose reply was lost), with what it held (deliveries, the
        end of a subscription). The connections resume, as after a reset: the router drops
        what it holds of them, and their unacknowledged messages come again."""
        epoch, channel = self.epoch, self.router_channel
        log.warning("router %s: its batch %d came after %d, one between was lost: resuming the connections",
                    epoch, seq, self._router_seq)
        self._lose_router("a batch of the broker's router was lost; publish again")
        if epoch is not None and channel is not None:
            self._follow(epoch, channel)

    def on_batch(self, items: list[list[Any]]) -> None:
        """Carry out the router's items in order. One that fails (a client connection's
        callback that raises, a bug) is logged and the rest go on: the batch is counted as
        carried out (`_router_seq`), and its later items are other connections' answers
        and deliveries, which the router will not send again."""
        for raw in items:
            try:
                item = decode_router_item(raw)
            except ValueError:
                log.exception("an item from the router this edge does not know: skipped")
                continue
            try:
                if not self._on_item(item):
                    return
            except Exception:
                log.exception("a %r item from the router failed: the rest of its batch goes on", item[0])

    def _on_item(self, item: RouterItem) -> bool:
        """One of the router's items; False when the rest of its batch is to be ignored."""
        connections = self._connections
        match item:
            case FramesItem():
                connections.frames(item)
            case PublishedItem(seq=seq, results=results):
                self._published(seq, _with_refused(results, self._refused.pop(seq, {})))
            case LastTagItem():
                connections.last_tag(item)
            case SubscribedItem():
                connections.subscribed(item)
            case UnsubscribedItem():
                connections.unsubscribed(item)
            case CancelledItem():
                connections.cancelled(item)
            case RefusedItem(conn=conn, frame_id=frame_id, error=error):
                connections.refused(conn, frame_id, error)
            case AnswerItem(request_id=request_id, ok=ok, value=value):
                call = self._calls.pop(request_id, None)
                if call is not None and not call.done():
                    if ok:
                        call.set_result(value)
                    else:
                        call.set_exception(decode_error(value))
                elif ok:
                    self._unwanted(request_id)
            case ResetItem(generation=generation):
                # The router dropped this edge (it was silent too long) and ignores it
                # until it resumes its connections: what was in flight is lost. It answers
                # every batch of the dropped generation: a reset for one this edge has
                # resumed since is old news, not a reason to fail what is in flight again.
                if generation != self.generation:
                    return True
                epoch, channel = self.epoch, self.router_channel
                if epoch is not None and channel is not None:
                    self._lose_router("the broker's router lost this edge for a while; publish again")
                    self._follow(epoch, channel)
                return False
        return True

    def _unwanted(self, request_id: int) -> None:
        """The answer to a call that gave up meanwhile (CALL_TIMEOUT, its HTTP client gone):
        what it took (a get with ack) is to go back to its queue, which the router holds until
        this edge acks the batch that carried the answer (hub.py), then acks. So the give-back
        goes before that ack: in the batch that carries it (the router reads a batch's items
        before its ack), and no batch without items acks the answer's batch meanwhile."""
        if self._ack_held is None:
            self._ack_held = self._router_seq - 1  # the answer's batch is the last one taken
        self._push(GiveBackItem("b", request_id))

    # -- sending ---------------------------------------------------------

    def _published(self, seq: int, results: list[Any]) -> None:
        """The answers of batch `seq`'s publishes, by slot."""
        future = self._awaiting.pop(seq, None)
        self._sent_at.pop(seq, None)
        if future is not None and not future.done():
            future.set_result(results)

    def _push(self, item: EdgeItem) -> None:
        self._outbox.append(item)
        self._wakeup.set()

    def _on_ack(self, seq: int) -> None:
        if self._window.acked(seq):
            self._wakeup.set()

    async def _send_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            channel = self.router_channel
            if channel is None:
                continue
            items: list[EdgeItem] = []
            if self._outbox and not self._window.full:
                items, self._outbox = self._outbox, []
                self._seq += 1
                self._window.sent(self._seq)
                if self._batch is not None:
                    self._sent_at[self._seq] = time.monotonic()
                    self._awaiting[self._seq] = self._batch
                    self._batch, self._batch_size = None, 0
                self._ack_held = None  # the give-backs waiting go with this batch
            elif not (self._ack_asked or self._beat_due):
                continue  # the window is full (the router's ack wakes us), or the ack can wait
            ack = self._router_seq if self._ack_held is None else self._ack_held
            message = {
                "type": EDGE_BATCH,
                "edge": self.channel,
                "epoch": self.epoch,
                "gen": self.generation,
                "first": self._first_seq,
                "link": LINK_VERSION,
                "seq": self._seq,
                "ack": ack,
                "items": items,
                # Ack this at once: it fills our window; or a beat while anything waits on the
                # router: it left batches unacked (the ack was lost, or it waited for a batch to
                # carry it on), or its answers are awaited; its reply carries its last number, so
                # an answer lost on the way shows as a gap (`_lost_batch`) within a beat.
                "now": self._window.full if items else self._beat_due and self._waits_for_answers(),
            }
            self._ack_asked = self._beat_due = False
            self._last_sent = time.monotonic()
            await self._send(channel, message)

    async def _send(self, channel: str, message: dict[str, Any]) -> None:
        await send_batch(
            self.layer, channel, message, wanted=lambda: self.router_channel == channel, salvage=self._salvage
        )

    def _salvage(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Batch `message` without its items that cannot be encoded (wire.send_batch), each
        refused to whoever made it; a beat when none is left, its number given back."""
        seq = message["seq"]
        if message["gen"] != self.generation or seq != self._seq:
            return None  # the connections resumed since: what it held has failed already
        kept: list[EdgeItem] = []
        refused: dict[int, EncodedError] = {}
        slot = 0  # of the next publish: a batch's publishes are answered in order (`publish`)
        for item in message["items"]:
            if encodes(item):
                kept.append(item)
            else:
                error = BrokerError(UNENCODABLE_REQUEST)
                log.warning("a %r item cannot be encoded: refused", item[0])
                if isinstance(item, PublishItem):
                    refused[slot] = encode_error(error)
                elif isinstance(item, CallItem):
                    call = self._calls.pop(item.request_id, None)
                    if call is not None and not call.done():
                        call.set_exception(error)
                elif not self._refuse(item, error):
                    log.error("an item %r of this edge's own cannot be encoded: dropped", item)
            slot += isinstance(item, PublishItem)
        if refused and any(isinstance(item, PublishItem) for item in kept):
            self._refused[seq] = refused  # merged into the router's answer
        elif refused:
            self._published(seq, [refused[n] for n in range(slot)])
        if kept:
            return {**message, "items": kept}
        # The router is to see no batch `seq`: the next one takes its number, or it sees a gap.
        self._seq -= 1
        self._window.withdraw(seq)
        self._sent_at.pop(seq, None)
        return {**message, "seq": self._seq, "items": [], "now": False}

    def _refuse(self, item: EdgeItem, error: BrokerError) -> bool:
        """`EdgeConnections.refuse`, whose answers run a client connection's callbacks: one
        that raises must not end the sender's task, and with it the whole link."""
        try:
            return self._connections.refuse(item, error)
        except Exception:
            log.exception("answering a refused %r item failed", item[0])
            return True

    # -- the Router interface: client connections (on the loop) -----------

    def connect(self, sink: ConnectionSink) -> int:
        conn = self._connections.add(sink)
        if self.router_channel is not None:
            self._push(OpenItem("o", conn))
        return conn

    def disconnect(self, conn: int) -> None:
        if self._connections.remove(conn) and self.router_channel is not None:
            self._push(CloseItem("x", conn))

    def publish(self, conn: int, request: PublishRequest) -> Publishing:
        message_id = request.message_id or new_message_id()
        if self.router_channel is None:
            return Publishing(message_id, 0, None, error=Unavailable(NO_ROUTER))
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
            self._batch.add_done_callback(_retrieve)
        slot = self._batch_size
        self._batch_size += 1
        self._push(PublishItem.of(conn, request, message_id))
        return Publishing(message_id, 0, self._batch, slot)

    def subscribe(self, conn: int, request: SubscribeRequest, answer: SubscribeAnswer) -> None:
        if self.router_channel is None:
            answer(None, Unavailable(NO_ROUTER))
            return
        item = SubscribeItem.of(conn, request)
        if self._connections.asked(item, answer):
            self._push(item)

    def unsubscribe(self, conn: int, key: str) -> None:
        if self.router_channel is None:
            self._connections.unsubscribed_without_router(conn, key)
            return
        self._connections.forget(conn, key)
        self._push(UnsubscribeItem("u", conn, key))

    def ack(self, conn: int, frame_id: FrameId | None, tag: int, *, multiple: bool) -> None:
        if self.router_channel is not None:
            self._push(AckItem("k", conn, frame_id, tag, multiple))

    def nack(self, conn: int, frame_id: FrameId | None, tag: int, *, multiple: bool, requeue: bool) -> None:
        if self.router_channel is not None:
            self._push(NackItem("n", conn, frame_id, tag, multiple, requeue))

    def watch(self, conn: int, watching: bool) -> None:
        self._connections.watch(conn, watching)
        if self.router_channel is not None:
            self._push(WatchItem("w", conn, watching))

    def written(self, conn: int, batches: int) -> None:
        upto = self._connections.written(conn, batches)
        if upto is not None and self.router_channel is not None:
            self._push(WrittenItem("g", conn, upto))

    # -- the Router interface: the HTTP API (on the loop) ------------------

    async def publish_and_wait(self, request: PublishRequest) -> tuple[str, int]:
        publishing = self.publish(0, request)
        if publishing.settled is not None and not publishing.settled.done():
            await asyncio.wait({publishing.settled})
        outcome = publishing.outcome()
        if not isinstance(outcome, int):
            raise outcome
        return publishing.message_id, outcome

    def outbox_written(self) -> None:
        pass  # the router hears the database's notification

    async def call(self, call: RouterCall) -> Any:
        if self.router_channel is None:
            raise Unavailable(NO_ROUTER)
        request_id = self._next_call
        self._next_call += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[request_id] = future
        self._push(CallItem("r", request_id, call.op, call_args(call)))
        try:
            return await within(future, CALL_TIMEOUT)
        except TimeoutError:
            raise Unavailable("the broker's router did not answer in time") from None
        finally:
            self._calls.pop(request_id, None)


def _with_refused(results: list[Any], refused: dict[int, EncodedError]) -> list[Any]:
    """The router's answers to a batch's publishes, with those refused here at their slots."""
    if not refused:
        return results
    answers = iter(results)
    return [refused[slot] if slot in refused else next(answers, None) for slot in range(len(results) + len(refused))]


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Its publishers read the outcome; one that went away meanwhile must not make
    # asyncio log "exception was never retrieved".
    if not future.cancelled():
        future.exception()
