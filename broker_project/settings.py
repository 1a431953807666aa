"""Django settings, all from the environment.

One settings module for every deployment: environments differ only by their
variables (or a `.env` file in the working directory). Values are read only
through broker_project.env, which fails loudly on a bad value. Every variable
is parsed before anything is written to disk (the generated SECRET_KEY file),
so a typo never leaves a stray file behind.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from broker import __version__
from broker.protocol.publish import FRAME_OVERHEAD
from broker.runtime.memory import machine_bytes, parse_memory_limit
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
)
from common.redact import without_password

BASE_DIR = Path(__file__).resolve().parent.parent

# Django's generic classes (ModelAdmin[Queue], ...) subscriptable at run time, as in the type stubs.
django_stubs_ext.monkeypatch()

load_dotenv()

# --- the environment (the README's configuration table, in its order) ---------

HTTP_PORT = env_int("HTTP_PORT", default=8060, min=1, max=65535)
# STOMP over plain TCP on its own port (RabbitMQ's is 61613); 0: off. STOMP over
# WebSocket is always on, at /ws, by subprotocol.
STOMP_PORT = env_int("STOMP_PORT", default=0, min=0, max=65535)
# The STOMP heart-beat the server offers (ms): it sends and expects one at least this often
# when the client asks for heart-beats; 0: none.
STOMP_HEARTBEAT_MS = env_int("STOMP_HEARTBEAT_MS", default=10_000, min=0)
HTTP_HOST = env_str("HTTP_HOST", default="127.0.0.1")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
DATABASE_NAME = env_str("DATABASE_NAME", default="pub-sub") or "pub-sub"
DATABASE_URL = env_str("DATABASE_URL", default="")
MAX_MESSAGE_BYTES = env_int("MAX_MESSAGE_BYTES", default=1_048_576, min=1)
REDIS_URL = env_redis_url("REDIS_URL", default="")  # "" = in-memory channel layer
DO_MIGRATIONS = env_bool("DO_MIGRATIONS", default=True)
CHECKPOINT_IN_SECONDS = env_float("CHECKPOINT_IN_SECONDS", default=10.0)
if CHECKPOINT_IN_SECONDS <= 0:
    raise ImproperlyConfigured(
        f"CHECKPOINT_IN_SECONDS={CHECKPOINT_IN_SECONDS!r} must be greater than 0"
    )
DEBUG = env_bool("DEBUG", default=False)
_SECRET_KEY_ENV = env_str("SECRET_KEY", default="")


# Anonymous clients are safe only while nobody else can connect.
BROKER_ALLOW_ANONYMOUS = env_bool(
    "BROKER_ALLOW_ANONYMOUS", default=is_loopback_host(HTTP_HOST)
)
# Said outright, not derived from HTTP_HOST: runbroker --host may move off loopback.
BROKER_ALLOW_ANONYMOUS_SET = env_str("BROKER_ALLOW_ANONYMOUS", default="").strip() != ""
# Where `manage.py runhandlers` connects: this machine's runbroker unless told (a cluster's
# edges, comma-separated, are tried in turn).
_LOCAL_HOST = "127.0.0.1" if HTTP_HOST in ("", "0.0.0.0", "::") else HTTP_HOST
HANDLERS_BROKER_URLS = env_list(
    "HANDLERS_BROKER_URLS",
    default=[f"ws://{f'[{_LOCAL_HOST}]' if ':' in _LOCAL_HOST else _LOCAL_HOST}:{HTTP_PORT}/ws"],
)

# --- limits that protect the process (README, "Limits") ---------------------

# Origins allowed to open a WebSocket; empty: any scheme and port of an ALLOWED_HOSTS host.
ALLOWED_ORIGINS = env_origins("ALLOWED_ORIGINS", default=[])
# Well above what one connection reaches in the benchmarks (a consumer acking 76k
# messages/s one by one on 2 cores), with room for faster machines: only a flooding
# client meets it.
WS_MAX_FRAMES_PER_SECOND = env_int("WS_MAX_FRAMES_PER_SECOND", default=200_000, min=1)
WS_MAX_FRAMES_BURST = env_int("WS_MAX_FRAMES_BURST", default=WS_MAX_FRAMES_PER_SECOND, min=1)
# Unsent data a WebSocket connection may hold before it is closed as a slow consumer.
WS_MAX_BUFFERED_BYTES = env_int("WS_MAX_BUFFERED_BYTES", default=4 * 1024 * 1024, min=1024)
# permessage-deflate under runbroker: off, as in RabbitMQ's Web-STOMP. It costs a
# compression per frame and per subscriber (a fanout compresses each delivery again),
# and a compressed connection leaves broker/transport/wsprotocol.py's fast path.
WS_PER_MESSAGE_DEFLATE = env_bool("WS_PER_MESSAGE_DEFLATE", default=False)
MAX_CONNECTIONS_PER_IP = env_int("MAX_CONNECTIONS_PER_IP", default=1000, min=0)  # 0: no limit
MAX_CONNECTIONS_PER_USER = env_int("MAX_CONNECTIONS_PER_USER", default=1000, min=0)  # 0: no limit
MAX_QUEUES = env_int("MAX_QUEUES", default=100_000, min=0)  # 0: no limit
MAX_BINDINGS = env_int("MAX_BINDINGS", default=100_000, min=0)  # 0: no limit
# Private queues (exchange subscriptions', STOMP temporary queues) one connection may hold:
# they count against MAX_QUEUES, which one client must not fill for everyone. A thousand
# is far above what a subscriber needs, and a thousand connections of it still fit.
MAX_PRIVATE_QUEUES_PER_CONNECTION = env_int("MAX_PRIVATE_QUEUES_PER_CONNECTION", default=1000, min=0)  # 0: none
# Messages of each durable queue kept in memory (its head); the rest wait in the
# database and are read in as consumers take messages. 0: keep them all in memory.
QUEUE_WINDOW = env_int("QUEUE_WINDOW", default=2_000, min=0)
# The process's memory limit, as RabbitMQ's memory high watermark: above it, publishers
# are held back until memory falls. A share of the machine's memory, or a size.
try:
    MEMORY_LIMIT = parse_memory_limit(env_str("MEMORY_LIMIT", default="40%"), machine=machine_bytes())
except ValueError as error:
    raise ImproperlyConfigured(f"MEMORY_LIMIT={error}") from None
# The unsent data of all WebSocket connections together; past it the largest are closed
# as slow consumers. At most a quarter of the memory limit.
WS_TOTAL_BUFFERED_BYTES = min(
    env_int("WS_TOTAL_BUFFERED_BYTES", default=256 * 1024 * 1024, min=1024 * 1024), MEMORY_LIMIT // 4
)
# Cookies only over HTTPS, except on the zero-setup http://127.0.0.1.
SECURE_COOKIES = env_bool("SECURE_COOKIES", default=not is_loopback_host(HTTP_HOST))
# A TLS proxy on another machine says https in X-Forwarded-Proto; off by default, as a
# client could send the header itself (runbroker's server already trusts a loopback proxy).
TRUST_X_FORWARDED_PROTO = env_bool("TRUST_X_FORWARDED_PROTO", default=False)
# Proxies whose X-Forwarded-For runbroker's server believes (uvicorn's forwarded_allow_ips):
# behind one on another machine, every client would otherwise share the proxy's address,
# and MAX_CONNECTIONS_PER_IP would cap the whole node.
FORWARDED_ALLOW_IPS = env_str("FORWARDED_ALLOW_IPS", default="127.0.0.1,::1")

# --- database ---------------------------------------------------------------

_SQLITE_OPTIONS: dict[str, Any] = {
    # WAL lets the API read while the store writer commits; synchronous=FULL
    # because a confirmed message must survive power loss (docs/protocol.md, "Durability").
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
    # IMMEDIATE takes the write lock at BEGIN, so two writers queue on `timeout`
    # instead of one failing with "database is locked" when it upgrades a read.
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}


def _database() -> dict[str, Any]:
    if DATABASE_URL:
        try:
            db: dict[str, Any] = dict(dj_database_url.parse(DATABASE_URL))
        except ValueError as exc:
            raise ImproperlyConfigured(f"DATABASE_URL={without_password(DATABASE_URL)!r} is not valid: {exc}") from None
    else:
        # Built directly rather than as "sqlite:///<name>.sqlite3" so that a
        # DATABASE_NAME containing '#', '?' or '%' is not mangled by URL parsing.
        db = {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{DATABASE_NAME}.sqlite3"}
    if db["ENGINE"] == "django.db.backends.sqlite3":
        name = str(db.get("NAME") or "")
        if name and name != ":memory:" and not name.startswith("file:"):
            # Absolute, so a later chdir (daemonising servers) cannot move the data.
            db["NAME"] = str(Path(name).resolve())
        db["OPTIONS"] = dict(_SQLITE_OPTIONS)
        # A file, not pytest-django's default in-memory database, so tests whose
        # ORM calls run in worker threads share one database; named per process
        # (pytest-django creates it once per run), so two runs never share one.
        db["TEST"] = {
            "NAME": os.path.join(
                tempfile.gettempdir(), f"test-{Path(DATABASE_NAME).name}-{os.getpid()}.sqlite3"
            )
        }
    elif db["ENGINE"].startswith("django.db.backends.postgresql"):
        # No persistent connections: under ASGI each request may run in a new
        # thread, and a kept connection per thread piles up until the server's
        # limit is reached.
        db["CONN_MAX_AGE"] = 0
        # Keep options given in the URL's query (?sslmode=require), over the keepalives.
        given = dict(db.get("OPTIONS") or {})
        server_side = " ".join(filter(None, [_POSTGRES_SERVER_KEEPALIVES, given.pop("options", "")]))
        db["OPTIONS"] = {**_POSTGRES_KEEPALIVES, "options": server_side, **given}
    return db


# Keepalives both ways on every PostgreSQL connection: a connection that the network cut
# off is noticed in seconds by this process (libpq's keepalives and user timeout) and by the
# server (the same, asked for per session), which then ends the session and with it what it
# held: a cluster router's lease, or the lock of a commit under way, which a standby would
# otherwise wait for until the link came back (docs/deploy.md, "Faults tried").
_POSTGRES_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 11_000,
}
_POSTGRES_SERVER_KEEPALIVES = (
    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 -c tcp_user_timeout=11000"
)


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- secret key (generated once, kept beside the data, owner-only) ----------


def _secret_key_path() -> Path:
    db = DATABASES["default"]
    name = str(db.get("NAME") or "")
    if db["ENGINE"] == "django.db.backends.sqlite3" and name and name != ":memory:":
        directory = Path(name.removeprefix("file:").split("?", 1)[0]).resolve().parent
    else:
        directory = Path.cwd()
    return directory / f"{Path(DATABASE_NAME).name}.secret_key"


def _read_or_create_secret_key(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of two processes starting at once, exactly one writes the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # The other process may still be writing: wait briefly for content.
        deadline = time.monotonic() + 2.0
        while True:
            key = path.read_text(encoding="utf-8").strip()
            if key:
                return key
            if time.monotonic() > deadline:
                raise ImproperlyConfigured(
                    f"SECRET_KEY file {str(path)!r} is empty; delete it to generate a new key"
                ) from None
            time.sleep(0.05)
    key = secrets.token_urlsafe(50)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return key


SECRET_KEY = _SECRET_KEY_ENV or _read_or_create_secret_key(_secret_key_path())

# --- applications -----------------------------------------------------------

INSTALLED_APPS = [
    # daphne is not listed: runbroker embeds uvicorn, and daphne's runserver
    # override is not wanted.
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "exchanges",
    "queues",
    "bindings",
    "subscriptions",
    "access",
    "storage",  # no models: the topology signals (storage/signals.py)
    "pubsub",  # publishing from Django code: the outbox
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "broker_project.urls"
ASGI_APPLICATION = "broker_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []

# --- channels ---------------------------------------------------------------

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # channels-redis passes a host dict to
                # redis.asyncio.ConnectionPool.from_url(address, **rest): the
                # pool takes max_connections, each Connection the rest. Under
                # redis-py 8 the defaults (5 s socket timeout, 100 connections)
                # kill busy consumers: a slow reply times out, and the pool
                # runs dry under many sockets.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 30,
                        "socket_connect_timeout": 5,
                        "retry_on_timeout": True,
                        "max_connections": 1000,
                    }
                ],
                # group_send silently drops a message for a channel holding
                # `capacity` messages (the default 100 is reached in a burst).
                "capacity": 1000,
                "expiry": 60,
                "group_expiry": 86400,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            # Same capacity as with Redis, for the same reason (silent drops).
            "CONFIG": {"capacity": 1000, "expiry": 60},
        }
    }

# --- REST API ---------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "common.parsers.JSONParser",  # DRF's, with deep nesting a 400
        # Form parsers only so the browsable API's HTML forms work.
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # One error shape for every endpoint (docs/protocol.md, "Errors").
    "EXCEPTION_HANDLER": "common.api_errors.exception_handler",
    # Bearer first: its WWW-Authenticate makes an unauthenticated request a 401 (access/drf.py).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.drf.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Authenticated users, or anyone while BROKER_ALLOW_ANONYMOUS is on; views
    # check the configure/write/read permissions per name.
    "DEFAULT_PERMISSION_CLASSES": ["access.drf.BrokerAccess"],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Pub/Sub broker API",
    "VERSION": __version__,  # pyproject.toml's, through the installed package's metadata
    "DESCRIPTION": (
        "The broker's HTTP calls: exchanges, queues and bindings under `/api/`, the original "
        "service's calls (`/ping`, `/exchanges`, `/queues`, `/bindings`, `/publish`) and "
        "`GET /health`. Errors have one shape, `{\"error\": {\"code\", \"message\", \"fields\"}}`.\n\n"
        "Messages are delivered over the WebSocket at `/ws`, which OpenAPI cannot describe: its "
        "frames, acknowledgements and close codes, and the delivery and durability guarantees "
        "behind every call here, are in `docs/protocol.md` of the broker's source, the contract "
        "this document follows."
    ),
    "TAGS": [
        {"name": "exchanges", "description": "Declare, list and delete exchanges; publish over HTTP"},
        {"name": "queues", "description": "Declare, list, purge and delete queues; take messages over HTTP"},
        {"name": "bindings", "description": "Bind queues to exchanges"},
        {"name": "original service", "description": "The original Go service's calls, unchanged for its clients"},
        {"name": "health", "description": "For load balancers and supervisors"},
    ],
    # drf-spectacular's enum hook, then the paths served outside DRF (common/openapi_paths.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "common.openapi_paths.add_paths_outside_drf",
    ],
    # Served from the sidecar package: the UI works without internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The document describes the broker's API (docs/protocol.md), not /api/schema/ itself,
    # whose `format` and `lang` parameters are drf-spectacular's (an unknown format is a 404).
    "SERVE_INCLUDE_SCHEMA": False,
}

# A request may carry one full message plus its JSON envelope (routing key,
# headers); anything larger is refused with 413 (docs/protocol.md, size limit).
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_MESSAGE_BYTES + FRAME_OVERHEAD

# --- logging ----------------------------------------------------------------

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        # The project's own namespaces; `broker` for code that names its logger
        # explicitly, the app packages for logging.getLogger(__name__).
        **{
            name: {"handlers": ["console"], "level": "INFO", "propagate": False}
            for name in (
                "broker",
                "broker_project",
                "exchanges",
                "queues",
                "bindings",
                "subscriptions",
                "access",
                "storage",
                "pubsub",
                "common",
                "legacy",
                "console",
            )
        },
        "django": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}

# --- security ---------------------------------------------------------------

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    # The web UI's JavaScript reads the CSRF cookie to send X-CSRFToken.
    CSRF_COOKIE_HTTPONLY = False
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
    SECURE_REFERRER_POLICY = "same-origin"

SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
if TRUST_X_FORWARDED_PROTO:
    # So request.is_secure() (and CSRF's Origin and Referer checks) see the browser's https.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
