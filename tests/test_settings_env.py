"""broker_project.env: typed environment readers that fail loudly, and settings at start."""

from __future__ import annotations

import ast
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from broker.transport.loopback import is_loopback_host
from broker_project.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_origins,
    env_redis_url,
    env_str,
    load_dotenv,
    parse_dotenv,
)

MANAGE_PY = Path(__file__).resolve().parent.parent / "manage.py"
VAR = "BROKER_TEST_VARIABLE"


# --- env_str / env_int / env_float -----------------------------------------


def test_str_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR, raising=False)
    assert env_str(VAR, default="x") == "x"


def test_str_keeps_an_empty_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "")
    assert env_str(VAR, default="x") == ""


def test_int_parses_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, " 8061 ")
    assert env_int(VAR, default=1) == 8061
    monkeypatch.setenv(VAR, "")
    assert env_int(VAR, default=7) == 7
    monkeypatch.delenv(VAR)
    assert env_int(VAR, default=7) == 7


def test_int_bad_value_names_variable_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PORT", "abc")
    with pytest.raises(ImproperlyConfigured, match=r"^HTTP_PORT='abc' is not an integer$"):
        env_int("HTTP_PORT", default=8060)


@pytest.mark.parametrize("value", ["0", "65536", "-1"])
def test_int_out_of_range(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HTTP_PORT", value)
    with pytest.raises(ImproperlyConfigured, match=rf"HTTP_PORT={value}"):
        env_int("HTTP_PORT", default=8060, min=1, max=65535)


def test_int_range_bounds_are_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "65535")
    assert env_int(VAR, default=1, min=1, max=65535) == 65535


def test_float_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "2.5")
    assert env_float(VAR, default=10.0) == 2.5


@pytest.mark.parametrize("value", ["ten", "nan", "inf"])
def test_float_bad_value(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(VAR, value)
    with pytest.raises(ImproperlyConfigured, match=rf"{VAR}='{value}'"):
        env_float(VAR, default=10.0)


def test_float_below_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "-1")
    with pytest.raises(ImproperlyConfigured, match=VAR):
        env_float(VAR, default=1.0, min=0.0)


# --- env_bool / env_list ----------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", "on", " On "])
def test_bool_true(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(VAR, value)
    assert env_bool(VAR, default=False) is True


@pytest.mark.parametrize("value", ["0", "false", "False", "NO", "off"])
def test_bool_false(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(VAR, value)
    assert env_bool(VAR, default=True) is False


def test_bool_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR, raising=False)
    assert env_bool(VAR, default=True) is True


def test_bool_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG", default=False)


def test_list_splits_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, " a.example, b.example ,,[::1]")
    assert env_list(VAR, default=[]) == ["a.example", "b.example", "[::1]"]


def test_list_default_is_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR, raising=False)
    default = ["localhost"]
    result = env_list(VAR, default=default)
    assert result == default and result is not default


# --- .env files -------------------------------------------------------------


def test_parse_dotenv() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "A=1",
            "export B = two ",
            "C='quoted # not a comment'",
            'D="double"',
            "E=value # trailing comment",
            "F=",
        ]
    )
    assert parse_dotenv(text) == {
        "A": "1",
        "B": "two",
        "C": "quoted # not a comment",
        "D": "double",
        "E": "value",
        "F": "",
    }


def test_parse_dotenv_rejects_a_line_without_equals() -> None:
    with pytest.raises(ImproperlyConfigured, match="line 2"):
        parse_dotenv("A=1\nNOT A SETTING\n")


def test_load_dotenv_real_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("A=from-file\nB=from-file\n", encoding="utf-8")
    environ = {"A": "from-env"}
    load_dotenv(tmp_path / ".env", environ)
    assert environ == {"A": "from-env", "B": "from-file"}


def test_load_dotenv_reads_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(f"{VAR}=42\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(VAR, raising=False)
    load_dotenv()
    assert env_int(VAR, default=0) == 42
    monkeypatch.delenv(VAR)  # load_dotenv wrote os.environ directly


def test_load_dotenv_without_file_is_a_no_op(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    load_dotenv(tmp_path / ".env", environ)
    assert environ == {}


@pytest.mark.parametrize(
    "value",
    ["*", "https://app.example.com", "http://localhost:8060/", "HTTPS://App.Example.com:8443",
     "http://[::1]:8060", "example.com", ".example.com", "127.0.0.1", "[::1]", " https://a.example , b.example ",
     "http://my_service:8080"],
)
def test_origins_of_every_kind_are_taken(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(VAR, value)
    assert env_origins(VAR, default=[]) == [item.strip() for item in value.split(",")]


@pytest.mark.parametrize(
    "item",
    ["bad//x", "https://", "https://app.example.com/path", "app.example.com:8060", "https://a.example:99999",
     "https://user@a.example", "//a.example", "*.example.com", "https://a.example?x=1", "a b"],
)
def test_an_origin_that_is_none_of_them_names_the_variable(monkeypatch: pytest.MonkeyPatch, item: str) -> None:
    monkeypatch.setenv(VAR, f"https://ok.example,{item}")
    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR}={re.escape(repr(item))} is not an origin: "):
        env_origins(VAR, default=[])


@pytest.mark.parametrize(
    "value",
    ["", "redis://127.0.0.1:6379/0", "rediss://:pw@redis.internal:6380/2", "unix:///run/redis.sock?db=1", "redis:///3"],
)
def test_redis_urls_of_every_kind_are_taken(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(VAR, value)
    assert env_redis_url(VAR, default="") == value


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("redis://:s3cret@[::1", "redis://:***@[::1' is not a valid URL: "),
        ("redis://u:s3cret@h:abc/0", "redis://u:***@h:abc/0' is not a valid URL: "),
        ("http://:s3cret@h/0", "http://:***@h/0' is not a Redis URL: use redis://, rediss://, unix://"),
        ("127.0.0.1:6379", "127.0.0.1:6379' is not a Redis URL: "),
        ("redis://:pa#s3cret@redis.internal:6379/0", "redis://:***@redis.internal:6379/0' is not a valid URL: "),
    ],
)
def test_a_redis_url_that_is_none_names_the_variable_without_its_password(
    monkeypatch: pytest.MonkeyPatch, value: str, said: str
) -> None:
    monkeypatch.setenv(VAR, value)
    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR}='{re.escape(said)}") as refused:
        env_redis_url(VAR, default="")
    assert "s3cret" not in str(refused.value)


# --- settings, in a fresh process ------------------------------------------

_OURS = (
    "HTTP_PORT",
    "HTTP_HOST",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "DATABASE_NAME",
    "MAX_MESSAGE_BYTES",
    "REDIS_URL",
    "DO_MIGRATIONS",
    "CHECKPOINT_IN_SECONDS",
    "SECRET_KEY",
    "DEBUG",
    "BROKER_ALLOW_ANONYMOUS",
    "ALLOWED_ORIGINS",
)


def _manage(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in _OURS}
    environ["DJANGO_SETTINGS_MODULE"] = "broker_project.settings"
    environ.update(env)
    return subprocess.run(
        [sys.executable, str(MANAGE_PY), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_port_stops_manage_py(tmp_path: Path) -> None:
    result = _manage(tmp_path, "check", HTTP_PORT="abc")
    assert result.returncode != 0
    assert result.stderr.strip() == "configuration error: HTTP_PORT='abc' is not an integer"  # one line
    assert list(tmp_path.iterdir()) == []  # failed before writing a secret key


def test_a_bad_origin_stops_manage_py(tmp_path: Path) -> None:
    result = _manage(tmp_path, "check", ALLOWED_ORIGINS="https://app.example.com,bad//x")
    assert result.returncode != 0
    assert result.stderr.strip().startswith("configuration error: ALLOWED_ORIGINS='bad//x' is not an origin: ")


def test_a_database_url_that_does_not_parse_stops_manage_py_without_its_password(tmp_path: Path) -> None:
    result = _manage(tmp_path, "check", DATABASE_URL="postgres://alice:s3cret@[::1/broker")
    assert result.returncode != 0
    assert result.stderr.strip().startswith("configuration error: DATABASE_URL='postgres://alice:***@[::1/broker' is not valid: ")
    assert "s3cret" not in result.stderr


def test_a_bad_redis_url_stops_manage_py(tmp_path: Path) -> None:
    result = _manage(tmp_path, "check", REDIS_URL="redis://:s3cret@[::1")
    assert result.returncode != 0
    assert result.stderr.strip().startswith("configuration error: REDIS_URL='redis://:***@[::1' is not a valid URL: ")
    assert "s3cret" not in result.stderr


def test_non_positive_checkpoint_is_refused(tmp_path: Path) -> None:
    result = _manage(tmp_path, "check", CHECKPOINT_IN_SECONDS="0")
    assert result.returncode != 0
    assert "CHECKPOINT_IN_SECONDS" in result.stderr


def test_secret_key_is_generated_once_owner_only(tmp_path: Path) -> None:
    show = ["shell", "--no-imports", "-c", "from django.conf import settings; print(settings.SECRET_KEY)"]
    first = _manage(tmp_path, *show, DATABASE_NAME="data")
    second = _manage(tmp_path, *show, DATABASE_NAME="data")
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "data.secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.stdout.strip() == second.stdout.strip() == key_file.read_text().strip()
    assert len(first.stdout.strip()) >= 50


def test_secret_key_lives_beside_the_database(tmp_path: Path) -> None:
    show = ["shell", "--no-imports", "-c", "from django.conf import settings; print(settings.DATABASES['default']['NAME'])"]
    result = _manage(tmp_path, *show, DATABASE_NAME="var/broker")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "var" / "broker.sqlite3")
    assert (tmp_path / "var" / "broker.secret_key").exists()


@pytest.mark.parametrize(("host", "anonymous"), [("127.0.0.1", "True"), ("0.0.0.0", "False")])
def test_anonymous_default_follows_loopback(tmp_path: Path, host: str, anonymous: str) -> None:
    show = ["shell", "--no-imports", "-c", "from django.conf import settings; print(settings.BROKER_ALLOW_ANONYMOUS)"]
    result = _manage(tmp_path, *show, HTTP_HOST=host, SECRET_KEY="test")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == anonymous


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("broker.example", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


# runbroker off loopback: tests/api/test_access.py (in process, without serving).


def test_postgresql_connections_ask_for_keepalives_both_ways_and_keep_the_url_s_options(tmp_path: Path) -> None:
    show = ["shell", "--no-imports", "-c", "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'])"]
    url = "postgres://u@db.example/broker?sslmode=require&options=-c%20statement_timeout%3D5s"
    result = _manage(tmp_path, *show, DATABASE_URL=url, SECRET_KEY="k" * 50)
    assert result.returncode == 0, result.stderr
    options = ast.literal_eval(result.stdout)  # a dict's repr
    assert options["sslmode"] == "require"
    assert (options["keepalives"], options["keepalives_idle"], options["tcp_user_timeout"]) == (1, 5, 11_000)
    # The server's side, asked for per session; the URL's own options after them.
    assert options["options"] == (
        "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
        " -c tcp_user_timeout=11000 -c statement_timeout=5s"
    )
