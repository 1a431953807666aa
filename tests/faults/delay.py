"""A delayed link without `sch_netem`: packets held in the kernel for a while, then let go.

The kernel here has no netem qdisc. iptables' NFQUEUE target hands each packet
of a chosen flow to a queue and waits for a verdict on it; this program,
started inside a test host's namespace, takes the queue and accepts each packet
`delay` ms after it arrived, in order. The packet itself never leaves the
kernel (only its id is copied out); `--queue-bypass` on the rule lets packets
through while no program holds the queue.

Run: `python -m tests.faults.delay QUEUE_NUMBER DELAY_MS` (in the namespace).
It speaks nfnetlink_queue's netlink messages itself: no library needed.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from typing import Final

NETLINK_NETFILTER: Final = 12
NFNL_SUBSYS_QUEUE: Final = 3
NFQNL_MSG_PACKET: Final = 0
NFQNL_MSG_VERDICT: Final = 1
NFQNL_MSG_CONFIG: Final = 2
NFQA_PACKET_HDR: Final = 1
NFQA_VERDICT_HDR: Final = 2
NFQA_CFG_CMD: Final = 1
NFQA_CFG_PARAMS: Final = 2
NFQA_CFG_QUEUE_MAXLEN: Final = 3
NFQNL_CFG_CMD_BIND: Final = 1
NFQNL_COPY_META: Final = 1
NF_ACCEPT: Final = 1
NLM_F_REQUEST: Final = 1
NLM_F_ACK: Final = 4
NLMSG_ERROR: Final = 2
QUEUE_MAXLEN: Final = 65_536


def _attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(kind: int, queue: int, attributes: bytes, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attributes
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0) + body


def _attributes(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


class Delayer:
    def __init__(self, queue: int, delay_ms: float) -> None:
        self.queue = queue
        self.delay = delay_ms / 1000
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self._configure()
        self.sock.setblocking(False)

    def _configure(self) -> None:
        for seq, attribute in enumerate(
            [
                _attribute(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)),
                _attribute(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
                + _attribute(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)),
            ],
            start=1,
        ):
            self.sock.send(_message(NFQNL_MSG_CONFIG, self.queue, attribute, NLM_F_REQUEST | NLM_F_ACK, seq))
            reply = self.sock.recv(65_536)
            _, kind, _, _, _ = struct.unpack_from("=IHHII", reply)
            if kind == NLMSG_ERROR:
                (error,) = struct.unpack_from("=i", reply, 16)
                if error != 0:
                    raise OSError(-error, f"nfnetlink_queue refused the configuration of queue {self.queue}")

    def _accept(self, packet_id: int) -> None:
        verdict = _attribute(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
        self.sock.send(_message(NFQNL_MSG_VERDICT, self.queue, verdict))

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, _, _ = struct.unpack_from("=IHHII", data, offset)
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    header = _attributes(data[offset + 20 : offset + length]).get(NFQA_PACKET_HDR)
                    if header is not None:
                        (packet_id,) = struct.unpack_from("!I", header)
                        loop.call_later(self.delay, self._accept, packet_id)
                offset += (length + 3) & ~3

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._readable, loop)
        sys.stdout.write("holding\n")  # the test waits for this line
        sys.stdout.flush()
        await asyncio.Event().wait()


def main() -> None:
    queue, delay_ms = int(sys.argv[1]), float(sys.argv[2])
    asyncio.run(Delayer(queue, delay_ms).run())


if __name__ == "__main__":
    main()
