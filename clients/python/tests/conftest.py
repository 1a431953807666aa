"""Fixtures for the client's tests: the real broker (`manage.py runbroker`), started by the
repository's end-to-end harness (tests/e2e/harness.py), and clients connected to it.

These tests need no Django in this process: only the broker process runs it.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # the harness lives in the repository's tests package
    sys.path.insert(0, str(ROOT))

from pubsub_client import Backoff, Client  # noqa: E402
from tests.e2e.harness import BrokerProcess  # noqa: E402

# Reconnect quickly in tests: the broker comes back within a second or two.
FAST_BACKOFF = Backoff(initial=0.05, maximum=0.5)


def unique(prefix: str) -> str:
    """A fresh name, so tests that share a broker never see each other's objects."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for a module's tests (each uses names of its own)."""
    process = BrokerProcess(tmp_path_factory.mktemp("client-broker"))
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
async def client(broker: BrokerProcess) -> AsyncIterator[Client]:
    async with Client(broker.url, backoff=FAST_BACKOFF, publish_timeout=10) as connected:
        yield connected
