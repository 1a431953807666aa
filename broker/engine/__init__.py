"""The broker's pure core: exchanges, queues, routing and delivery decisions.

Nothing here imports Django, Channels or asyncio, reads a clock or does I/O;
the runtime (broker/runtime/runtime.py) drives it and carries out its effects.
"""
