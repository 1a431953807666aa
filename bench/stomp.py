"""A small STOMP 1.2 encoder and decoder for Web-STOMP (one text frame per WebSocket message).

Pure functions, no I/O. Hot-path frames (SEND, ACK) are built by the dialects
in bench/dialects.py from pre-encoded parts, not by `encode`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

NUL: Final = "\x00"

# STOMP 1.2 header escaping (section "Value Encoding"); CONNECT is exempt.
_ESCAPES: Final = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"}
_UNESCAPES: Final = {"\\\\": "\\", "\\r": "\r", "\\n": "\n", "\\c": ":"}


def _escape(value: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        pair = value[i : i + 2]
        if pair in _UNESCAPES:
            out.append(_UNESCAPES[pair])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Frame:
    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


def encode(command: str, headers: dict[str, str] | None = None, body: str = "") -> str:
    """One frame as text; header values are escaped except for CONNECT."""
    lines = [command]
    for key, value in (headers or {}).items():
        if command == "CONNECT":
            lines.append(f"{key}:{value}")
        else:
            lines.append(f"{_escape(key)}:{_escape(value)}")
    return "\n".join(lines) + "\n\n" + body + NUL


def connect_frame(*, login: str | None, passcode: str | None, host: str = "/") -> str:
    """CONNECT with `login` and `passcode`, or without either when both are None (our
    broker lets anonymous clients in on loopback, and takes a passcode as an API token)."""
    headers = {"accept-version": "1.2", "host": host}
    if login is not None:
        headers["login"] = login
    if passcode is not None:
        headers["passcode"] = passcode
    # heart-beat 0,0: the benchmark's connections must not spend time on heartbeats.
    headers["heart-beat"] = "0,0"
    return encode("CONNECT", headers)


def decode(data: str) -> list[Frame]:
    """Every frame in a WebSocket message (heart-beat newlines are skipped)."""
    frames: list[Frame] = []
    for chunk in data.split(NUL):
        chunk = chunk.lstrip("\r\n")
        if not chunk:
            continue
        head, _, body = chunk.partition("\n\n")
        lines = head.split("\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.rstrip("\r").partition(":")
            # STOMP 1.2: the first occurrence of a repeated header wins.
            headers.setdefault(_unescape(key), _unescape(value))
        frames.append(Frame(lines[0].rstrip("\r"), headers, body))
    return frames
