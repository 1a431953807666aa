"""Connection URLs as they may be shown: in an error, a log line, a start-up message."""

from __future__ import annotations


def without_password(url: str) -> str:
    """`url` with the password of its user part, if any, shown as ***: whatever lies between
    the user's name and the last @ after `scheme://`. Read that way, not by urlsplit, so that
    a password holding `#`, `/`, `?` or `@` (the URL then does not parse) is hidden whole; a
    URL with an @ further on loses more than its password, never less."""
    scheme, separator, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not (separator and at and colon):
        return url
    return f"{scheme}://{user}:***@{host}"
