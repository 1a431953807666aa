"""Text as the database and the broker's headers keep it."""

from __future__ import annotations


def storable_text(text: str) -> str:
    """`text` with U+0000 written `\\x00` (PostgreSQL keeps no U+0000 in text, and the
    broker refuses it in headers) and a lone surrogate (text decoded with
    `surrogateescape`: file names, a program's output) written `\\udcff` (no UTF-8 text
    holds one): an exception's text or traceback, recorded as it is, failed every try."""
    text = text.replace("\x00", "\\x00")
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")
