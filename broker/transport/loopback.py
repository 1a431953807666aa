"""Whether only this machine can reach an address: anonymous access and plain-HTTP
cookies are safe defaults only then. Standard library only (settings import it)."""

from __future__ import annotations

import ipaddress


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
    """Is a request's client (its socket's peer, or the address a trusted proxy's
    `X-Forwarded-For` gave, as uvicorn rewrites it) on this machine? None (a Unix socket,
    an in-process test) counts as this machine. IPv4 mapped into IPv6 counts as IPv4."""
    if address is None or address == "":
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
