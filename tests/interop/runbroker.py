"""What the interoperability tests ask of a running `runbroker` besides STOMP:
users and API tokens, made as an operator makes them (`manage.py` with the broker
process's environment, so on its database), and queue counts over the HTTP API.

A STOMP client logs in with `login` = the username and `passcode` = a token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from tests.e2e.harness import BrokerProcess
from tests.eventually import eventually_sync


@dataclass(frozen=True, slots=True)
class Credentials:
    login: str
    passcode: str


# A user with one broker permission row (access/models.py: RabbitMQ's three patterns).
_LIMITED_USER = """
from django.contrib.auth.models import User
from access.models import BrokerPermission
user = User.objects.create_user({name!r}, {email!r})
BrokerPermission.objects.create(user=user, configure={configure!r}, write={write!r}, read={read!r})
"""


def manage(broker: BrokerProcess, *args: str) -> str:
    """`python manage.py ARGS` on the broker's database; what it printed, stripped."""
    return broker.manage(*args).strip()


def superuser(broker: BrokerProcess, name: str) -> Credentials:
    """A superuser (no password: it logs in with its token only) and a new token of theirs."""
    manage(broker, "createsuperuser", "--noinput", "--username", name, "--email", f"{name}@example.invalid")
    return Credentials(name, manage(broker, "createtoken", name, "--name", "stomp"))


def limited_user(broker: BrokerProcess, name: str, *, configure: str, write: str, read: str) -> Credentials:
    """A user with these permission patterns (matched against whole names) and a new token."""
    email = f"{name}@example.invalid"
    manage(
        broker, "shell", "-c", _LIMITED_USER.format(name=name, email=email, configure=configure, write=write, read=read)
    )
    return Credentials(name, manage(broker, "createtoken", name, "--name", "stomp"))


@contextmanager
def api_client(broker: BrokerProcess, credentials: Credentials) -> Iterator[httpx.Client]:
    """The HTTP API as this user: its token as a Bearer token."""
    headers = {"Authorization": f"Bearer {credentials.passcode}"}
    with httpx.Client(base_url=broker.url, headers=headers, timeout=10) as client:
        yield client


def queue_counts(http: httpx.Client, name: str) -> tuple[int, int]:
    """(messages, messages_unacknowledged) of queue `name`: live counts (docs/protocol.md)."""
    body = http.get(f"/api/queues/{name}/").raise_for_status().json()
    return body["messages"], body["messages_unacknowledged"]


def counts_become(http: httpx.Client, queue: str, expected: tuple[int, int]) -> None:
    """Wait until the queue's (messages, messages_unacknowledged) are `expected`."""
    eventually_sync(
        lambda: queue_counts(http, queue) == expected,
        interval=0.05,
        what=f"queue {queue}: (messages, messages_unacknowledged) == {expected}",
    )
