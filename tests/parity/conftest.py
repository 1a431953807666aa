"""`target`: each parity test runs once against ours and once against the real RabbitMQ
(127.0.0.1, guest/guest, with its `rabbitmq_stomp` plugin: .ci/run enables it). Without
RabbitMQ the RabbitMQ half fails under CI and is skipped elsewhere."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import BrokerProcess, free_port

from .targets import RABBITMQ_STOMP_PORT, Ours, RabbitMQ, Target

pytestmark = pytest.mark.e2e


def _rabbitmq_problem() -> str | None:
    for port, what in ((5672, "AMQP"), (RABBITMQ_STOMP_PORT, "STOMP (rabbitmq-plugins enable rabbitmq_stomp)")):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError as error:
            return f"RabbitMQ's {what} is not reachable on 127.0.0.1:{port}: {error}"
    return None


@pytest.fixture(scope="module")
def ours_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    workdir: Path = tmp_path_factory.mktemp("parity")
    process = BrokerProcess(workdir, extra_env={"STOMP_PORT": str(free_port())})
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(params=["ours", "rabbitmq"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    chosen: Target
    if request.param == "ours":
        chosen = Ours(request.getfixturevalue("ours_broker"))
    else:
        problem = _rabbitmq_problem()
        if problem is not None:
            if os.environ.get("CI") == "true":
                pytest.fail(problem)
            pytest.skip(problem)
        chosen = RabbitMQ()
    try:
        yield chosen
    finally:
        chosen.close()
