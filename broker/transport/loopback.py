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
