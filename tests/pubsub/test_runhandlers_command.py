"""`manage.py runhandlers` in a project without handlers, as a new user runs it: listing
them and running them both say so, on stderr, with the same exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MANAGE_PY = Path(__file__).resolve().parents[2] / "manage.py"
NO_HANDLERS = "CommandError: no handlers: declare some with @pubsub.handler in an app's handlers.py"


def _runhandlers(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env["DATABASE_NAME"] = str(tmp_path / "broker")
    return subprocess.run(
        [sys.executable, str(MANAGE_PY), "runhandlers", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )


def test_listing_no_handlers_says_so_as_running_them_does(tmp_path: Path) -> None:
    listed, ran = _runhandlers(tmp_path, "--list"), _runhandlers(tmp_path)
    assert (ran.returncode, ran.stdout, ran.stderr.strip()) == (1, "", NO_HANDLERS)
    assert (listed.returncode, listed.stdout, listed.stderr.strip()) == (1, "", NO_HANDLERS)
