"""Schemathesis against the real broker's OpenAPI schema (in CI).

Every operation of /api/schema/ gets generated requests, valid and invalid, sent
to the real `runbroker` process; every answer must be no 5xx, a documented status,
content type, headers and body shape.

The schema is generated in-process at collection, so each operation is a test of
its own; `test_served_schema_is_the_one_fuzzed` checks it is the one the broker
serves. (Schemathesis' lazy `from_fixture` loader would fetch it from the process,
but it does not run under pytest 9.)
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.harness import BrokerProcess

# alone: schemathesis' cases share one test id, which pytest-xdist would run once.
pytestmark = [pytest.mark.e2e, pytest.mark.fuzz, pytest.mark.alone]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

# JSON round trip: the document exactly as a client reads it.
SCHEMA: dict[str, Any] = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True)))

schema = schemathesis.openapi.from_dict(SCHEMA)


def test_served_schema_is_the_one_fuzzed(broker: BrokerProcess) -> None:
    response = httpx.get(f"{broker.url}/api/schema/", params={"format": "json"}, timeout=10)
    assert response.status_code == 200
    assert response.json() == SCHEMA


@schema.parametrize()
# Bounded for CI (some 20 s for the file) and derandomized: every run sends the same requests.
# Schemathesis generates valid and invalid input; with the Bearer scheme in the schema it
# also sends made-up tokens, so the 401s are exercised though anonymous access is on.
@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: Any, broker: BrokerProcess) -> None:
    case.call_and_validate(base_url=broker.url, checks=CHECKS, timeout=10)
