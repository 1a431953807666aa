"""The broker beyond one process (docs/deploy.md).

One router process owns the engine (`hub.py` serves the edges from it); any
number of edge processes hold client connections and speak to it over the
channel layer in batches (`edge.py`); `lease.py` makes sure one router runs.
`wire.py` is what they say to each other.
"""
