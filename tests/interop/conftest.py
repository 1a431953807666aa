"""Fixtures of the interoperability tests: one real `runbroker` per module with its
STOMP listener on (STOMP_PORT), a superuser and a limited user with API tokens,
and stomp.py clients over both transports, plain TCP and WebSocket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import BrokerProcess, free_port
from tests.interop.client import Client, Endpoint, Transport
from tests.interop.runbroker import Credentials, api_client, limited_user, superuser

# The limited user may publish to these exchanges only (patterns match whole names),
# and may declare and consume anything.
LIMITED_WRITE = r"amq\.topic|ix-open.*"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker per test module (a start costs a second or two); tests use their own names."""
    process = BrokerProcess(tmp_path_factory.mktemp("broker"), extra_env={"STOMP_PORT": str(free_port())})
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def endpoint(broker: BrokerProcess) -> Endpoint:
    return Endpoint("127.0.0.1", int(broker.env["STOMP_PORT"]), broker.port, "/ws")


@pytest.fixture(scope="module")
def admin(broker: BrokerProcess) -> Credentials:
    """A superuser: login its username, passcode an API token of theirs."""
    return superuser(broker, "ix-admin")


@pytest.fixture(scope="module")
def limited(broker: BrokerProcess) -> Credentials:
    """A user who may publish only to the exchanges LIMITED_WRITE matches."""
    return limited_user(broker, "ix-limited", configure=".*", write=LIMITED_WRITE, read=".*")


@pytest.fixture(scope="module")
def http(broker: BrokerProcess, admin: Credentials) -> Iterator[httpx.Client]:
    """Our HTTP API as the superuser."""
    with api_client(broker, admin) as client:
        yield client


@pytest.fixture(params=["tcp", "ws"])
def transport(request: pytest.FixtureRequest) -> Transport:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def open_client(endpoint: Endpoint, transport: Transport) -> Iterator[Callable[..., Client]]:
    """Make stomp.py clients over this test's transport; all are closed at the end."""
    clients: list[Client] = []

    def make(**options: Any) -> Client:
        client = Client(endpoint, transport, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def connect(open_client: Callable[..., Client], admin: Credentials) -> Callable[..., Client]:
    """A stomp.py client connected as the superuser (or as `credentials`)."""

    def make(credentials: Credentials | None = None, **options: Any) -> Client:
        client = open_client(**options)
        client.connect(credentials or admin)
        return client

    return make
