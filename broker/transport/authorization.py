"""Which right each WebSocket frame needs (docs/protocol.md, "Permissions").

Who the client is, and which rights that gives, is the project's business
(the `access` app builds the `Permissions` once per connection and hands them
in); what each frame asks for is the broker's: a publish needs write on its
exchange, a subscribe read on its queue or exchange. The other frames act
only on the connection's own deliveries.
"""

from __future__ import annotations

from typing import Literal, Protocol

from broker.protocol.client_frames import ClientFrame, Publish, Subscribe

Right = Literal["configure", "write", "read"]
Kind = Literal["exchange", "queue"]


class Permissions(Protocol):
    """What one client may do."""

    @property
    def everything(self) -> bool:
        """Superusers, and anonymous clients where they are allowed: no check at all."""

    @property
    def who(self) -> str:
        """The client as refusals name it, and as its connections are counted."""

    def require(self, right: Right, kind: Kind, name: str) -> None:
        """Raise `forbidden` naming the object and the missing right unless allowed."""


def authorize_frame(permissions: Permissions, frame: ClientFrame) -> None:
    """Raise `forbidden` unless the connection may send `frame`."""
    if permissions.everything:
        return
    if isinstance(frame, Publish):
        permissions.require("write", "exchange", frame.request.exchange)
    elif isinstance(frame, Subscribe):
        if frame.queue is not None:
            permissions.require("read", "queue", frame.queue)
        elif frame.exchange is not None:
            permissions.require("read", "exchange", frame.exchange)
