"""Typed wire shapes and their validation: WebSocket frames, publish requests,
topology changes and the cluster link's items. Pure: the engine and the
standard library only."""
