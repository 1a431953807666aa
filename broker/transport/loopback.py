"""Whether only this machine can reach an address: anonymous access and plain-HTTP
cookies are safe defaults only then. Standard library only (settings import it)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


def is_loopback_host(host: str) -> bool:
    """Only this machine can connect to `host` (an address or `localhost`)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname or 0.0.0.0: reachable from elsewhere


def is_loopback_client(address: str | None) -> bool:
    """Is a client address on this machine? None (a Unix socket, an in-process test) counts
    as this machine. IPv4 mapped into IPv6 counts as IPv4; a port after an address (as
    `Forwarded` may give one) is ignored."""
    if address is None or address == "":
        return True
    address = address.strip().strip('"')
    if address.startswith("["):  # [v6]:port
        address = address[1:].partition("]")[0]
    elif address.count(":") == 1:  # v4:port
        address = address.partition(":")[0]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # "unknown", an obfuscated name: not known to be here
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


@dataclass(frozen=True, slots=True)
class Peer:
    """Who sent a request: its connection's peer (or what a trusted proxy's `X-Forwarded-For`
    made of it, as uvicorn rewrites it) and every address proxies named on the way
    (`X-Forwarded-For`, `Forwarded: for=`)."""

    address: str | None
    forwarded: tuple[str, ...] = ()

    @classmethod
    def of(cls, address: str | None, x_forwarded_for: str | None, forwarded: str | None) -> Peer:
        named = [part.strip() for part in (x_forwarded_for or "").split(",") if part.strip()]
        for element in (forwarded or "").split(","):
            for pair in element.split(";"):
                key, _, value = pair.strip().partition("=")
                if key.lower() == "for" and value:
                    named.append(value)
        return cls(address, tuple(named))

    def is_local(self) -> bool:
        """On this machine, and so is every address a proxy named: a proxy here that
        forwards another machine's request (trusted or not, by any ASGI server) names it,
        and a client can add names but not remove the one its proxy appends."""
        return is_loopback_client(self.address) and all(is_loopback_client(name) for name in self.forwarded)
