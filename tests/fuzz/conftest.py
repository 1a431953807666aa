"""Fixtures for the fuzz runs: one real `runbroker` process per test module (tests/e2e/harness.py).

A module may set `BROKER_ENV` (a dict) for its broker's environment.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import BrokerProcess


@pytest.fixture(scope="module")
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("fuzz-broker"), extra_env=getattr(request.module, "BROKER_ENV", None))
    process.start()
    try:
        yield process
    finally:
        process.close()
