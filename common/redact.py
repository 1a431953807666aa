"""Connection URLs as they may be shown: in an error, a log line, a start-up message."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# scheme://user:password@ of a URL that urlsplit refuses (an unclosed IPv6 bracket, say):
# up to the last @, so a password holding an @ is hidden whole.
_USER_AND_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/]*):.*@")


def without_password(url: str) -> str:
    """`url` with the password of its user part, if any, shown as ***, whether or not
    the rest of it is a valid URL."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _USER_AND_PASSWORD.sub(r"\1:***@", url, count=1)
    if password is None:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
