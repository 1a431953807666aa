"""The broker itself, apart from the Django project that serves it.

Layers, each importing only those below it (import contracts in scripts/test):

- `transport`: the WebSocket session, runbroker's server and WebSocket
  protocol, the fast HTTP publish path, health, origins, connection limits;
- `cluster`: the router lease and its fence, the edges' link to the router;
- `router`: the one interface in front of the router, here or over the link;
- `runtime`: the event loop's owner around the engine: the group-commit writer,
  topology changes, statistics;
- `protocol`: typed wire shapes (client and server frames, publish requests,
  topology changes, cluster-link items) and their validation;
- `engine`: the pure core: exchanges, queues, consumers, dead-lettering.

This package imports no app of the project and not the project package: what
it needs from them (the message store, permissions, the ASGI application) is
handed in by `runbroker` or `broker_project/asgi.py`.

`__version__` is the installed distribution's (pyproject.toml's `version`, the
only place it is written; README, "Versions").
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("django-pubsub-broker")
except PackageNotFoundError:  # run from a checkout that was never installed (pip install -e .)
    __version__ = "0+unknown"
