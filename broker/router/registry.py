"""Which router this process talks to: the one running here, or the cluster link's.

Whoever starts a router or a link here installs it (`LocalRouter.start`,
`EdgeLink.start`) and removes it when it stops. A process that is the router
of a cluster runs both: new clients then use the router here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: this module imports no implementation
    from .interface import Router

_local: Router | None = None
_remote: Router | None = None


def current() -> Router | None:
    """The router this process's clients use: the one here, else the link's, else None."""
    return _local if _local is not None else _remote


def local() -> Router | None:
    """The router running in this process, if any."""
    return _local


def remote() -> Router | None:
    """This process's cluster link, if it runs one."""
    return _remote


def install(router: Router, *, is_local: bool) -> None:
    global _local, _remote
    if is_local:
        _local = router
    else:
        _remote = router


def uninstall(router: Router) -> None:
    global _local, _remote
    if _local is router:
        _local = None
    if _remote is router:
        _remote = None
