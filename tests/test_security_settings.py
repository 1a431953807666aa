"""Secure cookies follow the listening address; the limits' variables are read and checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MANAGE_PY = Path(__file__).resolve().parent.parent / "manage.py"
SHOW = "from django.conf import settings as s; print({names})"


def show(tmp_path: Path, names: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY")}
    environ.update(DJANGO_SETTINGS_MODULE="broker_project.settings", SECRET_KEY="test", **env)
    return subprocess.run(
        [sys.executable, str(MANAGE_PY), "shell", "--no-imports", "-c", SHOW.format(names=names)],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HTTP_HOST": "127.0.0.1"}, "False False False"),  # zero-setup http://127.0.0.1 keeps its cookies
        ({"HTTP_HOST": "0.0.0.0", "BROKER_ALLOW_ANONYMOUS": "true"}, "True True False"),
        ({"HTTP_HOST": "127.0.0.1", "SECURE_COOKIES": "true", "TRUST_X_FORWARDED_PROTO": "yes"}, "True True True"),
        ({"HTTP_HOST": "0.0.0.0", "SECURE_COOKIES": "false"}, "False False False"),
    ],
)
def test_secure_cookies(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    names = "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, bool(getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
    result = show(tmp_path, f"*({names},)", **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_limits_have_defaults_and_take_the_environment(tmp_path: Path) -> None:
    names = (
        "s.WS_MAX_FRAMES_PER_SECOND, s.WS_MAX_FRAMES_BURST, s.WS_MAX_BUFFERED_BYTES, s.MAX_CONNECTIONS_PER_IP,"
        " s.MAX_QUEUES, s.MAX_BINDINGS, s.MAX_PRIVATE_QUEUES_PER_CONNECTION, s.ALLOWED_ORIGINS"
    )
    defaults = show(tmp_path, f"*({names},)")
    assert defaults.stdout.strip() == "200000 200000 4194304 1000 100000 100000 1000 []", defaults.stderr
    given = show(
        tmp_path, f"*({names},)", WS_MAX_FRAMES_PER_SECOND="10", WS_MAX_BUFFERED_BYTES="65536",
        MAX_CONNECTIONS_PER_IP="0", MAX_QUEUES="5", MAX_BINDINGS="6", MAX_PRIVATE_QUEUES_PER_CONNECTION="0",
        ALLOWED_ORIGINS="https://a.example, b.example",
    )
    assert given.stdout.strip() == "10 10 65536 0 5 6 0 ['https://a.example', 'b.example']", given.stderr


def test_a_bad_limit_stops_start_up(tmp_path: Path) -> None:
    result = show(tmp_path, "s.MAX_QUEUES", WS_MAX_FRAMES_PER_SECOND="lots")
    assert result.returncode != 0
    assert "WS_MAX_FRAMES_PER_SECOND='lots' is not an integer" in result.stderr
