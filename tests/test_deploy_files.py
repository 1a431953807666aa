"""The deployment examples (deploy/) do what docs/deploy.md says when followed as written:
systemd's units restart their node however often it stops, an edge listens on its own
instance's port, and the environment file shared by every node says nothing that only
one machine can use (where to listen)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
PER_MACHINE = ("HTTP_HOST", "HTTP_PORT", "STOMP_PORT")


def unit_settings(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a systemd unit, in order, comments left out."""
    section, found = "", []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key, value))
    return found


def test_there_are_units_for_router_candidates_and_edges() -> None:
    assert [unit.name for unit in UNITS] == ["broker-edge@.service", "broker-router.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_a_unit_restarts_its_node_however_often_it_stops(unit: Path) -> None:
    """While PostgreSQL or Redis is down a start-up fails within a second or two; with
    systemd's default start limit (5 in 10 s) the unit would stay stopped after it."""
    settings = unit_settings(unit)
    assert ("Unit", "StartLimitIntervalSec", "0") in settings
    assert ("Service", "Restart", "always") in settings


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_a_unit_reads_the_machine_s_settings_after_the_cluster_s(unit: Path) -> None:
    files = [value for section, key, value in unit_settings(unit) if key == "EnvironmentFile"]
    assert files == ["/etc/broker/broker.env", "-/etc/broker/node.env"]


def test_an_edge_listens_on_its_instance_s_port() -> None:
    """On the command line: an environment file's HTTP_PORT wins over `Environment=`."""
    settings = unit_settings(DEPLOY / "systemd" / "broker-edge@.service")
    (command,) = [value for _, key, value in settings if key == "ExecStart"]
    assert command.endswith("manage.py runbroker --edge --port %i")
    assert not [value for _, key, value in settings if key == "Environment" and value.startswith("HTTP_PORT=")]


def test_the_shared_environment_says_nothing_only_one_machine_can_use() -> None:
    shared = (DEPLOY / "systemd" / "broker.env.example").read_text(encoding="utf-8")
    assigned = set(re.findall(r"^([A-Z_]+)=", shared, flags=re.MULTILINE))
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"} <= assigned
    assert not assigned & set(PER_MACHINE)
    machine = (DEPLOY / "systemd" / "node.env.example").read_text(encoding="utf-8")
    assert set(re.findall(r"^([A-Z_]+)=", machine, flags=re.MULTILINE)) == {"HTTP_HOST", "HTTP_PORT"}
