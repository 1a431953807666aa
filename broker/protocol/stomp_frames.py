"""STOMP 1.0/1.1/1.2 frames on the wire: an incremental parser and an encoder.

Owns the frame grammar of the STOMP 1.2 specification ("STOMP Frames", "Value
Encoding", "Size Limits", "Augmented BNF"): heart-beat EOLs between frames,
LF or CRLF line ends, header escaping per version, `content-length` bodies and
NUL-terminated ones, and the limits a server puts on a frame. What the commands
mean is the session's business, not this module's.

Pure: no I/O, no clock, no Django; the standard library and
`broker.engine.errors` only. It sits on the broker's hot path, so the parser
works on whole buffers with `find` and `split`, unescapes only values that hold
a backslash, and resumes its searches where the previous `feed` left off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from broker.engine.errors import BrokerError

# A heart-beat is one EOL between frames (spec, "Heart-beating").
_CONNECTS: Final = frozenset(("CONNECT", "STOMP"))
# A content-length longer than this many digits is no size a frame may have.
MAX_LENGTH_DIGITS: Final = 15
HEARTBEAT: Final = b"\n"

VERSIONS: Final = ("1.0", "1.1", "1.2")

# Escape sequences a header may hold, by version (spec, "Value Encoding"); 1.0 has none.
_UNESCAPES: Final[dict[str, dict[str, str] | None]] = {
    "1.0": None,
    "1.1": {"n": "\n", "c": ":", "\\": "\\"},
    "1.2": {"r": "\r", "n": "\n", "c": ":", "\\": "\\"},
}

# For backward compatibility the spec leaves the headers of these frames unescaped.
_UNESCAPED_COMMANDS: Final = frozenset({"CONNECT", "CONNECTED"})


class StompFrameError(BrokerError):
    """A malformed frame: the session answers with an ERROR frame and closes. Raised by
    `feed`, it carries the frames that same feed completed before it (`before`), which are
    to be carried out first."""

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message, fields=fields)
        self.before: list[StompFrame] = []


class StompFrameTooLarge(StompFrameError):
    """A frame (headers + body) over the parser's max_frame_bytes."""


@dataclass(slots=True)
class StompFrame:
    command: str
    headers: dict[str, str]  # a repeated header: the FIRST occurrence wins (STOMP 1.2)
    body: bytes = b""


class StompParser:
    """Incremental: feed it the bytes as they arrive (TCP chunks, or whole WebSocket messages that
    may hold several frames, or a frame split over several messages).

    Limits, counted from the first byte of the command (heart-beats before it are not counted):
    at most `max_headers` header lines; at most `max_header_bytes` for the command and header
    lines with their EOLs and the blank line after them; at most `max_frame_bytes` for all of
    that plus the body (not counting the NUL). Past any of them `feed` raises StompFrameTooLarge.
    After an error the parser is unusable: the session closes the connection.

    CRLF line ends are accepted whatever `version` says: 1.2's rule, kept for 1.0 and 1.1 too,
    as the CONNECT frame is read before the version is known and older clients send CRLF as well.
    """

    __slots__ = (
        "_body_start",
        "_broken",
        "_before_connect",
        "_buf",
        "_command",
        "_headers",
        "_length",
        "_pos",
        "_scan",
        "_unescapes",
        "_version",
        "max_frame_bytes",
        "max_header_bytes",
        "max_headers",
    )

    def __init__(
        self,
        *,
        max_frame_bytes: int,
        max_headers: int = 128,
        max_header_bytes: int = 65536,
        stop_after_connect: bool = False,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self._version = "1.2"
        self._unescapes = _UNESCAPES["1.2"]
        self._buf = bytearray()
        self._pos = 0  # where the frame being read starts in _buf
        self._scan = 0  # where the next search (blank line, or NUL) resumes
        self._broken = False
        # A server's parser stops after the first CONNECT (or STOMP) frame, so that the frames
        # after it are read with the version it negotiates (set `version`, then `feed(b"")`).
        self._before_connect = stop_after_connect
        # The frame whose headers are read and whose body has not all arrived; "" between frames.
        self._command = ""
        self._headers: dict[str, str] = {}
        self._body_start = 0
        self._length: int | None = None  # content-length, if the frame has one

    @property
    def version(self) -> str:
        """The negotiated version ("1.0", "1.1" or "1.2"), which decides the escaping; the
        session sets it after CONNECT."""
        return self._version

    @version.setter
    def version(self, version: str) -> None:
        if version not in _UNESCAPES:
            raise ValueError(f"STOMP version {version!r} is not one of {', '.join(VERSIONS)}")
        self._version = version
        self._unescapes = _UNESCAPES[version]

    def feed(self, data: bytes) -> list[StompFrame]:
        """The frames `data` completes, in order; an incomplete frame stays buffered."""
        if self._broken:
            raise StompFrameError("the STOMP parser failed earlier; the connection must close")
        buf = self._buf
        buf += data
        frames: list[StompFrame] = []
        try:
            while (self._command or self._read_headers(buf)) and self._read_body(buf, frames):
                if self._before_connect and frames[-1].command in _CONNECTS:
                    self._before_connect = False
                    break
        except StompFrameError as error:
            self._broken = True
            error.before = frames
            raise
        # Drop the frames read, once per feed rather than once per frame; the positions shift with them.
        pos = self._pos
        if pos:
            del buf[:pos]
            self._scan -= pos
            self._body_start -= pos
            self._pos = 0
        return frames

    def _read_headers(self, buf: bytearray) -> bool:
        end = len(buf)
        pos = self._pos
        # Heart-beats: EOLs between frames (spec, "Heart-beating"). Usually none. NULs there
        # are passed over too, as RabbitMQ does: a frame ended by NUL and EOL, then another NUL.
        while pos < end:
            byte = buf[pos]
            if byte == 10 or byte == 0:
                pos += 1
            elif byte == 13 and pos + 1 < end and buf[pos + 1] == 10:
                pos += 2
            else:
                break
        self._pos = pos
        if pos >= end:
            self._scan = pos
            return False
        # The blank line ending the header block: LF LF, or LF CR LF (CRLF lines, 1.2).
        # Searched only up to the header limit, resuming after the bytes already searched.
        scan = self._scan if self._scan > pos else pos
        limit = pos + self.max_header_bytes
        blank = buf.find(b"\n\n", scan, limit)
        crlf = buf.find(b"\n\r\n", scan, limit if blank < 0 else blank + 2)
        if crlf >= 0:
            block_end, body_start = crlf, crlf + 3
        elif blank >= 0:
            block_end, body_start = blank, blank + 2
        else:
            if end >= limit:
                raise StompFrameTooLarge(f"STOMP frame headers exceed the limit of {self.max_header_bytes} bytes")
            self._scan = end - 2 if end - 2 > pos else pos
            return False
        try:
            text = buf[pos:block_end].decode()
        except UnicodeDecodeError:
            raise StompFrameError("STOMP frame headers are not valid UTF-8") from None
        if "\x00" in text:  # a NUL ends a frame: within the headers it is not STOMP
            raise StompFrameError("STOMP frame headers hold a NUL byte")
        if "\r" in text:
            # CRLF line ends (1.2): drop the CR before each LF, and the one ending the last line.
            text = text.replace("\r\n", "\n")
            if text.endswith("\r"):
                text = text[:-1]
        lines = text.split("\n")
        if len(lines) - 1 > self.max_headers:
            raise StompFrameTooLarge(f"STOMP frame has more than {self.max_headers} headers")
        command = lines[0]
        if not (command.isascii() and command.isalpha() and command.isupper()):
            raise StompFrameError(f"STOMP command {command[:40]!r} is not one of uppercase ASCII letters")
        unescapes = self._unescapes if "\\" in text and command not in _UNESCAPED_COMMANDS else None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not name or not colon:
                problem = "has an empty name" if colon else "has no colon"
                raise StompFrameError(f"STOMP header line {line[:40]!r} {problem}")
            if unescapes is not None:
                if "\\" in name:
                    name = _unescape(name, unescapes)
                if "\\" in value:
                    value = _unescape(value, unescapes)
            if name not in headers:  # the first occurrence wins (spec, "Repeated Header Entries")
                headers[name] = value
        length: int | None = None
        declared = headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit() and len(declared) <= MAX_LENGTH_DIGITS):
                raise StompFrameError(f"STOMP content-length {declared[:40]!r} is not a non-negative integer")
            length = int(declared)
            if body_start - pos + length > self.max_frame_bytes:
                raise StompFrameTooLarge(
                    f"STOMP frame with content-length {length} exceeds the limit of {self.max_frame_bytes} bytes"
                )
        self._command = command
        self._headers = headers
        self._body_start = body_start
        self._length = length
        self._scan = body_start
        return True

    def _read_body(self, buf: bytearray, frames: list[StompFrame]) -> bool:
        start = self._body_start
        length = self._length
        if length is not None:
            nul = start + length
            if len(buf) <= nul:
                return False
            if buf[nul] != 0:
                raise StompFrameError(f"STOMP frame body of content-length {length} is not followed by a NUL")
        else:
            nul = buf.find(b"\x00", self._scan)
            if nul < 0:
                end = len(buf)
                if end - self._pos > self.max_frame_bytes:
                    raise StompFrameTooLarge(f"STOMP frame exceeds the limit of {self.max_frame_bytes} bytes")
                self._scan = end
                return False
            if nul - self._pos > self.max_frame_bytes:
                raise StompFrameTooLarge(f"STOMP frame exceeds the limit of {self.max_frame_bytes} bytes")
        frames.append(StompFrame(self._command, self._headers, bytes(buf[start:nul])))
        self._command = ""
        self._pos = self._scan = nul + 1
        return True


def _unescape(text: str, unescapes: dict[str, str]) -> str:
    """`text` with its escape sequences replaced; one step per backslash, not per character."""
    parts: list[str] = []
    i = 0
    while True:
        j = text.find("\\", i)
        if j < 0:
            parts.append(text[i:])
            return "".join(parts)
        parts.append(text[i:j])
        replacement = unescapes.get(text[j + 1 : j + 2])
        if replacement is None:
            raise StompFrameError(f"STOMP header {text[:40]!r} has an undefined escape sequence")
        parts.append(replacement)
        i = j + 2


def escape_header(value: str, version: str = "1.2") -> str:
    """A header name or value escaped for `version` (spec, "Value Encoding"): `\\`, LF and `:`
    in 1.1 and 1.2, CR too in 1.2, nothing in 1.0. Returns `value` itself when nothing needs it."""
    if version == "1.0":
        return value
    if version not in _UNESCAPES:
        raise ValueError(f"STOMP version {version!r} is not one of {', '.join(VERSIONS)}")
    if "\\" in value:  # first, so that the backslashes added below stay single
        value = value.replace("\\", "\\\\")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if ":" in value:
        value = value.replace(":", "\\c")
    if "\r" in value and version == "1.2":
        value = value.replace("\r", "\\r")
    return value


def encode_frame(
    command: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes = b"",
    *,
    version: str = "1.2",
) -> bytes:
    """Escapes names and values per version (none for 1.0, and never for CONNECTED); appends
    `content-length:<len(body)>` when the body is non-empty and no content-length was given; ends with NUL.

    CONNECT is not escaped either, as the parser does not unescape it. Where nothing is escaped
    a LF in a name or value, or a colon in a name, would change the frame's meaning: ValueError.
    """
    if version not in _UNESCAPES:
        raise ValueError(f"STOMP version {version!r} is not one of {', '.join(VERSIONS)}")
    escaped = version != "1.0" and command not in _UNESCAPED_COMMANDS
    items = headers.items() if isinstance(headers, Mapping) else headers
    parts = [command]
    has_length = False
    for name, value in items:
        if name == "content-length":
            has_length = True
        if escaped:
            name = escape_header(name, version)
            value = escape_header(value, version)
        elif "\n" in name or ":" in name or "\n" in value:
            raise ValueError(f"STOMP header {name!r} cannot be sent unescaped in a {command} frame of {version}")
        parts.append(f"{name}:{value}")
    if body and not has_length:
        parts.append(f"content-length:{len(body)}")
    parts.append("\n")
    return b"".join(("\n".join(parts).encode(), body, b"\x00"))
