"""Test hosts on this machine: network namespaces joined by a bridge, and links cut between them.

`Lab` makes a bridge in the test's own namespace and, for each host, a network
namespace with one veth leg on that bridge: hosts reach each other, and the test
process (on the bridge's own address) reaches every host. A link between two hosts
is cut with iptables in one host's namespace, dropping every packet to and from
the other in both directions: no reset, no refusal, as a cable pulled out or a
switch that lost its way. Needs root, `ip` (iproute2) and `iptables`.

The kernel here has no `sch_netem`: a delayed link is made by `delay.py` instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

NEEDED_COMMANDS: Final = ("ip", "iptables")
ROOT: Final = Path(__file__).resolve().parents[2]


class LabUnavailable(RuntimeError):
    """This machine cannot make test hosts (not root, or iproute2/iptables missing)."""


def check_lab_tools() -> None:
    if os.geteuid() != 0:
        raise LabUnavailable("the fault tests make network namespaces: they need root")
    missing = [command for command in NEEDED_COMMANDS if shutil.which(command) is None]
    if missing:
        raise LabUnavailable(f"the fault tests need {', '.join(missing)} (Debian: iproute2, iptables)")


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    cut_from: set[str] = field(default_factory=set)

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this host's namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class Lab:
    """A bridge and the hosts on it, removed by `close()`; addresses 10.231.<lab>.<n>/24."""

    def __init__(self) -> None:
        check_lab_tools()
        self.number = random.randint(1, 254)
        self.prefix = f"10.231.{self.number}"
        self.bridge = f"pfbr{self.number}"
        self.address = f"{self.prefix}.1"  # the test process's own, on the bridge
        self.hosts: dict[str, Host] = {}
        self._numbers = itertools.count(10)
        self._queues = itertools.count(1)
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.address}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")

    def host(self, name: str) -> Host:
        number = next(self._numbers)
        namespace = f"pf{self.number}-{name}"
        outside, inside = f"pf{self.number}o{number}", f"pf{self.number}i{number}"
        address = f"{self.prefix}.{number}"
        run("ip", "netns", "add", namespace)
        run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        run("ip", "link", "set", inside, "netns", namespace)
        run("ip", "link", "set", outside, "master", self.bridge)
        run("ip", "link", "set", outside, "up")
        run("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{address}/24", "dev", inside)
        run("ip", "netns", "exec", namespace, "ip", "link", "set", inside, "up")
        run("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        host = Host(name, namespace, address)
        self.hosts[name] = host
        return host

    def cut(self, host: Host, other: Host) -> None:
        """Drop every packet between the two hosts, both ways (rules in `host`'s namespace)."""
        if other.name in host.cut_from:
            return
        for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
            run(*host.command("iptables", "-I", chain, flag, other.address, "-j", "DROP"))
        host.cut_from.add(other.name)

    def heal(self, host: Host, other: Host) -> None:
        if other.name not in host.cut_from:
            return
        for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
            run(*host.command("iptables", "-D", chain, flag, other.address, "-j", "DROP"))
        host.cut_from.discard(other.name)

    @contextlib.contextmanager
    def link_cut(self, host: Host, other: Host) -> Iterator[None]:
        self.cut(host, other)
        try:
            yield
        finally:
            self.heal(host, other)

    @contextlib.contextmanager
    def link_delayed(self, host: Host, other: Host, delay_ms: float) -> Iterator[None]:
        """Every packet between the two hosts held `delay_ms` each way (delay.py, in `host`'s
        namespace): the round trip grows by twice that."""
        queue = next(self._queues)
        holder = subprocess.Popen(
            host.command(sys.executable, "-m", "tests.faults.delay", str(queue), str(delay_ms)),
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        rules = [("INPUT", "-s"), ("OUTPUT", "-d")]
        try:
            assert holder.stdout is not None
            if holder.stdout.readline().strip() != "holding":
                raise RuntimeError(f"the delay on {host.name} <-> {other.name} did not start ({holder.wait(5)})")
            for chain, flag in rules:
                run(*host.command("iptables", "-I", chain, flag, other.address, "-j", "NFQUEUE",
                                  "--queue-num", str(queue), "--queue-bypass"))
            yield
        finally:
            for chain, flag in rules:
                subprocess.run(host.command("iptables", "-D", chain, flag, other.address, "-j", "NFQUEUE",
                                            "--queue-num", str(queue), "--queue-bypass"), capture_output=True)
            holder.kill()
            holder.wait(10)

    def close(self) -> None:
        for host in self.hosts.values():
            # Whatever still runs in the namespace goes with it.
            pids = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True).stdout
            for pid in pids.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self.hosts.clear()
