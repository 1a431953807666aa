"""Typed readers of the process environment: the only module that reads os.environ.

Settings call these helpers; nothing else in the project looks at the
environment. Settings first call load_dotenv(), which merges a `.env` file
from the working directory (real environment variables win), so a deployment can keep its configuration
in one file. A value that cannot be parsed raises ImproperlyConfigured naming
the variable and the value, so a typo stops the process at start instead of
surfacing later as odd behaviour.

Imports only the stdlib, django.core.exceptions and common.redact (no settings access).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from common.redact import without_password

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse KEY=VALUE lines; `#` starts a comment line, values may be quoted.

    Deliberately small: no interpolation, no multi-line values. An optional
    leading `export ` is accepted so the file can also be sourced by a shell.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ImproperlyConfigured(f".env line {number} is not KEY=VALUE: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            # An unquoted value may carry a trailing comment, as in shell files.
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def load_dotenv(
    path: Path | None = None, environ: MutableMapping[str, str] | None = None
) -> None:
    """Merge `path` (default: ./.env) into `environ`; existing variables win."""
    target = os.environ if environ is None else environ
    dotenv = Path.cwd() / ".env" if path is None else path
    try:
        text = dotenv.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for key, value in parse_dotenv(text).items():
        target.setdefault(key, value)


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    source = os.environ if environ is None else environ
    return source.get(name)


def env_str(name: str, *, default: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable as is; an empty value stays empty (REDIS_URL= means "none")."""
    value = _raw(name, environ)
    return default if value is None else value


REDIS_SCHEMES = ("redis", "rediss", "unix")


def env_redis_url(name: str, *, default: str, environ: Mapping[str, str] | None = None) -> str:
    """A Redis URL (redis://, rediss:// or unix://), or "" for none; one that does not
    parse is refused here, with its password hidden, rather than where it is first used."""
    value = env_str(name, default=default, environ=environ)
    if not value:
        return value
    shown = without_password(value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={shown!r} is not a valid URL: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ImproperlyConfigured(f"{name}={shown!r} is not a Redis URL: use {', '.join(f'{s}://' for s in REDIS_SCHEMES)}")
    return value


def env_int(
    name: str,
    *,
    default: int,
    min: int | None = None,
    max: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    # An empty numeric or boolean variable (`FOO=`) means "use the default".
    if value is None or value.strip() == "":
        result = default
    else:
        try:
            result = int(value.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    _check_range(name, result, min, max)
    return result


def env_float(
    name: str,
    *,
    default: float,
    min: float | None = None,
    max: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> float:
    value = _raw(name, environ)
    if value is None or value.strip() == "":
        result = default
    else:
        try:
            result = float(value.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
        if result != result or result in (float("inf"), float("-inf")):
            raise ImproperlyConfigured(f"{name}={value!r} is not a finite number")
    _check_range(name, result, min, max)
    return result


def env_bool(name: str, *, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None or value.strip() == "":
        return default
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean (use true/false, 1/0, yes/no, on/off)"
    )


def env_list(
    name: str, *, default: list[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """Comma-separated; blanks around items and empty items are dropped."""
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


# ALLOWED_ORIGINS' items (broker/transport/origins.py): a whole origin as browsers send it,
# scheme://host[:port] (a trailing / is tolerated), or a host as in ALLOWED_HOSTS, with a
# leading dot for its subdomains too and no port (it is matched on any port).
_HOST = r"(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])"  # `_`: container service names
_ORIGIN = re.compile(rf"[a-z][a-z0-9+.-]*://{_HOST}(?::(?P<port>[0-9]{{1,5}}))?/?", re.IGNORECASE)
_HOST_PATTERN = re.compile(rf"\.?{_HOST}", re.IGNORECASE)


def env_origins(
    name: str, *, default: list[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """env_list of web origins: `*`, `scheme://host[:port]`, or hosts (`example.com`,
    `.example.com`); anything else (`bad//x`, a host with a port) is refused."""
    items = env_list(name, default=default, environ=environ)
    for item in items:
        if item == "*" or _HOST_PATTERN.fullmatch(item):
            continue
        origin = _ORIGIN.fullmatch(item)
        if origin is not None and (origin["port"] is None or 0 < int(origin["port"]) < 65536):
            continue
        raise ImproperlyConfigured(
            f"{name}={item!r} is not an origin: use scheme://host[:port] (https://app.example.com), "
            "a host (example.com, .example.com for its subdomains too) or *"
        )
    return items


def _check_range(
    name: str, value: float, low: float | None, high: float | None
) -> None:
    if low is not None and value < low:
        raise ImproperlyConfigured(f"{name}={value!r} is below the minimum {low!r}")
    if high is not None and value > high:
        raise ImproperlyConfigured(f"{name}={value!r} is above the maximum {high!r}")
