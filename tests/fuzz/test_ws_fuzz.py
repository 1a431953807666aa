"""Property-based WebSocket frame fuzzing against the real broker (in CI).

Hypothesis sends arbitrary JSON values, frames of every type with random or
mutated fields, random text and binary payloads, and frames over the size limit
over a few reused connections of the real `runbroker` process. After each one a
`ping` must get its `pong` in time (the connection neither hangs nor dies), error
frames carry only docs/protocol.md's codes, and a frame over the limit closes with 1009
(README, "Limits"). Afterwards the process is alive, logged no traceback, and a
normal client still declares, subscribes, publishes with confirm and receives.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.client import WsClient
from tests.e2e.harness import BrokerProcess

# alone: run in one process with the schema fuzzer (scripts/test).
pytestmark = [pytest.mark.e2e, pytest.mark.fuzz, pytest.mark.alone]

MAX_MESSAGE_BYTES: Final = 4096  # small, so that oversize frames are cheap to send
FRAME_LIMIT: Final = MAX_MESSAGE_BYTES + 64 * 1024  # broker.protocol.publish.FRAME_OVERHEAD
BROKER_ENV: Final = {"MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)}

CONNECTIONS: Final = 3
ANSWER_TIMEOUT: Final = 5.0  # seconds for the probe's pong or the close; the broker answers in milliseconds
# docs/protocol.md "Errors" and README "Limits": every code an error frame may carry.
ERROR_CODES: Final = {
    "invalid", "unauthorized", "forbidden", "not_found", "conflict", "precondition_failed",
    "too_large", "unavailable", "rate_limited", "limit_exceeded",
}
QUEUE: Final = "fuzz-q"  # declared (durable) before the run: subscribes and stored publishes succeed
NAMES: Final = ["", QUEUE, "nope", "amq.default", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.gen-x", "bad name", "x" * 256]

# -- strategies ----------------------------------------------------------------

# Strings a database or an encoder may choke on: U+0000 (PostgreSQL refuses it), an
# escaped one, a surrogate's neighbour, an astral character, a right-to-left mark.
NASTY: Final = ["\x00", "a\x00b", "\\u0000", "\ud7ff\ue000", "\U0001f4a5", "\u200f", " ", "null"]
strings = st.text(max_size=20) | st.sampled_from(NASTY)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | strings
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
frame_types = st.sampled_from(
    ["publish", "subscribe", "unsubscribe", "ack", "nack", "ping", "watch", "unwatch", "SUBSCRIBE"]
) | st.text(max_size=12)
names = st.sampled_from(NAMES) | json_values
small_ints = st.integers(min_value=-5, max_value=70_000) | json_values
flags = st.booleans() | json_values
ids = st.text(max_size=10) | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | json_values

# A frame's fields, each present or not, with plausible or random values.
frame_fields = st.fixed_dictionaries(
    {"type": frame_types},
    optional={
        "id": ids,
        "queue": names,
        "exchange": names,
        "routing_key": st.sampled_from(["", QUEUE, "a.b.c", "#"]) | json_values,
        "binding_key": st.sampled_from(["", "#", "*.x", QUEUE]) | json_values,
        "body": json_values,
        "headers": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
        "arguments": st.dictionaries(st.sampled_from(["x-match", "a", "b"]), json_values, max_size=3) | json_values,
        "persistent": flags,
        "message_id": st.text(max_size=70) | json_values,
        "ack": st.sampled_from(["auto", "client"]) | json_values,
        "prefetch": small_ints,
        "delivery_tag": small_ints,
        "multiple": flags,
        "requeue": flags,
        "payload": st.fixed_dictionaries({}, optional={"queue_name": names}) | json_values,
        "unknown": json_values,
    },
)

# Well-formed frames, so that subscriptions, deliveries, acks and confirms happen too.
frame_ids = st.text(max_size=10) | st.integers(-(2**53), 2**53)
exchanges = st.sampled_from(["", "amq.default", "amq.direct", "amq.fanout", "amq.topic", "amq.headers"])
valid_frames = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("publish"), "body": json_values, "exchange": exchanges,
         "routing_key": st.sampled_from([QUEUE, "", "a.b"])},
        optional={"id": frame_ids, "headers": st.dictionaries(st.text(max_size=6), json_values, max_size=3),
                  "persistent": st.booleans(), "message_id": st.text(min_size=1, max_size=64) | st.sampled_from(NASTY)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("subscribe"), "queue": st.just(QUEUE)},
        optional={"id": frame_ids, "ack": st.sampled_from(["auto", "client"]), "prefetch": st.integers(0, 200)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("subscribe"), "exchange": exchanges},
        optional={"id": frame_ids, "binding_key": st.sampled_from(["", "#", "a.*", QUEUE]),
                  "arguments": st.dictionaries(st.sampled_from(["x-match", "a"]), json_values, max_size=2)},
    ),
    st.fixed_dictionaries({"type": st.just("unsubscribe"), "id": frame_ids}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ack", "nack"]), "delivery_tag": st.integers(0, 50)},
        optional={"multiple": st.booleans(), "requeue": st.booleans()},
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["ping", "watch", "unwatch"])}, optional={"id": frame_ids}),
    st.just({"type": "SUBSCRIBE", "payload": {"queue_name": QUEUE}}),
)
FIELDS: Final = ["type", "id", "queue", "exchange", "routing_key", "binding_key", "body", "headers", "arguments",
                 "persistent", "message_id", "ack", "prefetch", "delivery_tag", "multiple", "requeue", "payload"]
# A well-formed frame with one field replaced by any JSON value.
mutated_frames = st.builds(lambda frame, key, value: {**frame, key: value}, valid_frames, st.sampled_from(FIELDS), json_values)


@dataclass(frozen=True)
class Send:
    """One WebSocket message: `text` or `data`, and whether it is over the size limit."""

    text: str | None = None
    data: bytes | None = None
    oversize: bool = False


def _json(value: Any) -> Send:
    return Send(text=json.dumps(value))


sends = st.one_of(
    valid_frames.map(_json),
    valid_frames.map(_json),  # twice as likely: they build the state the others poke at
    mutated_frames.map(_json),
    frame_fields.map(_json),
    json_values.map(_json),
    st.text(max_size=200).map(lambda text: Send(text=text)),
    st.binary(max_size=200).map(lambda data: Send(data=data)),
    # Over the frame limit: text, binary, and a publish whose body alone is too large.
    st.integers(FRAME_LIMIT + 1, FRAME_LIMIT + 20_000).map(lambda n: Send(text="x" * n, oversize=True)),
    st.integers(FRAME_LIMIT + 1, FRAME_LIMIT + 20_000).map(lambda n: Send(data=b"\0" * n, oversize=True)),
    st.integers(MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 20_000).map(
        lambda n: Send(text=json.dumps({"type": "publish", "routing_key": QUEUE, "body": "b" * n}), oversize=True)
    ),
)

# -- the connections -------------------------------------------------------------


@dataclass
class Pool:
    url: str
    loop: asyncio.AbstractEventLoop
    connections: list[websockets.ClientConnection | None] = field(default_factory=lambda: [None] * CONNECTIONS)
    probes: Iterator[int] = field(default_factory=itertools.count)
    sent: int = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    async def connection(self, slot: int) -> websockets.ClientConnection:
        conn = self.connections[slot]
        if conn is None or conn.close_code is not None:
            conn = await websockets.connect(self.url, max_size=None, open_timeout=ANSWER_TIMEOUT)
            self.connections[slot] = conn
        return conn

    async def close_all(self) -> None:
        for conn in self.connections:
            if conn is not None:
                await conn.close()


@pytest.fixture(scope="module")
def pool(broker: BrokerProcess) -> Iterator[Pool]:
    response = httpx.post(f"{broker.url}/api/queues/", json={"name": QUEUE}, timeout=10)
    assert response.status_code == 201, response.text
    # Bound to every built-in exchange, so that most publishes reach the store.
    for exchange, key in (("amq.direct", QUEUE), ("amq.fanout", ""), ("amq.topic", "#"), ("amq.headers", "")):
        binding = {"exchange": exchange, "queue": QUEUE, "binding_key": key, "arguments": {"x-match": "any"}}
        response = httpx.post(f"{broker.url}/api/bindings/", json=binding, timeout=10)
        assert response.status_code == 201, response.text
    loop = asyncio.new_event_loop()
    pool = Pool(broker.ws_url, loop)
    try:
        yield pool
    finally:
        loop.run_until_complete(pool.close_all())
        loop.close()


async def _exchange(pool: Pool, slot: int, send: Send) -> None:
    conn = await pool.connection(slot)
    probe = f"probe-{next(pool.probes)}"
    try:
        await conn.send(send.text if send.text is not None else send.data)  # type: ignore[arg-type]
        if not send.oversize:
            await conn.send(json.dumps({"type": "ping", "id": probe}))
        async with asyncio.timeout(ANSWER_TIMEOUT):
            while True:
                raw = await conn.recv()
                assert isinstance(raw, str), f"a binary frame from the broker: {raw!r}"
                frame = json.loads(raw)
                if frame.get("type") == "error":
                    assert frame.get("code") in ERROR_CODES, f"undocumented error code: {frame}"
                if frame.get("type") == "pong" and frame.get("id") == probe:
                    return
    except websockets.ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else None
        # README "Limits": a frame over MAX_MESSAGE_BYTES closes with 1009; nothing
        # else these frames do may close the connection (1011 would be a bug).
        assert send.oversize and code == 1009, f"closed with {code} ({closed}) after {send!r:.300}"
        return
    except TimeoutError:
        pytest.fail(f"no answer within {ANSWER_TIMEOUT} s after {send!r:.300}")
    assert not send.oversize, f"still open after a frame over the limit: {send!r:.300}"


@settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,  # the same frames in every CI run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(slot=st.integers(0, CONNECTIONS - 1), send=sends)
def test_any_frame_gets_an_answer_or_a_documented_close(pool: Pool, slot: int, send: Send) -> None:
    pool.sent += 1
    pool.run(_exchange(pool, slot, send))


async def _normal_client(broker: BrokerProcess) -> None:
    async with httpx.AsyncClient(base_url=broker.url, timeout=10) as http:
        response = await http.post("/api/queues/", json={"name": "after-fuzz"})
        assert response.status_code == 201, response.text
    client = await WsClient.connect(broker.ws_url)
    try:
        subscribed = await client.request({"type": "subscribe", "id": "s1", "queue": "after-fuzz"})
        assert subscribed["type"] == "subscribed", subscribed
        await client.send({"type": "publish", "id": "p1", "routing_key": "after-fuzz", "body": {"still": "serving"}})
        # The confirm and the delivery, in either order.
        frames = {frame["type"]: frame for frame in [await client.recv(), await client.recv()]}
        assert (frames["confirm"]["id"], frames["confirm"]["routed"]) == ("p1", 1), frames
        assert frames["message"]["body"] == {"still": "serving"}, frames
        assert frames["message"]["message_id"] == frames["confirm"]["message_id"], frames
    finally:
        await client.close()


def test_broker_still_serves_a_normal_client(pool: Pool, broker: BrokerProcess) -> None:
    """Runs after the fuzzing above (same module, same broker)."""
    assert pool.sent > 0, "the fuzz test did not run first"
    pool.run(pool.close_all())
    assert broker.proc is not None and broker.proc.poll() is None, broker.log()
    pool.run(_normal_client(broker))
    # Nothing the clients sent was the broker's fault: no traceback, no error logged
    # (a refused commit, say, logs one: "commit of N messages failed").
    log = broker.log()
    assert "Traceback" not in log and " ERROR " not in log, log
