"""The published API description, and a property-based fuzzer run against it."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from .conftest import Stack, User

schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def api_schema(stack: Stack):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(stack.api_url + "/openapi.json")


def test_openapi_describes_every_route(stack: Stack) -> None:
    """GET /openapi.json is OpenAPI 3.1 and lists each route with its errors."""
    doc = requests.get(stack.api_url + "/openapi.json", timeout=10).json()
    assert doc["openapi"] == "3.1.0"
    operations = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert ("/missions", "post") in operations and ("/missions/create", "post") in operations
    suffixes = ["", "/approve", "/execute", "/cancel", "/progress", "/events", "/artifact"]
    suffixes += ["/pause", "/resume", "/retry", "/clone"]
    for suffix in suffixes:
        path = "/missions/{mission_id}" + suffix
        assert any(p == path for p, _ in operations), path
    assert ("/missions/{mission_id}", "patch") in operations
    resume = doc["paths"]["/missions/{mission_id}/resume"]["post"]["responses"]
    assert {"202", "401", "404", "409", "429", "503"} <= set(resume)
    retry = doc["paths"]["/missions/{mission_id}/retry"]["post"]
    assert retry["requestBody"]["required"] is False  # a retry may amend nothing
    edit = doc["components"]["schemas"]["ModifyMission"]
    assert edit["additionalProperties"] is False and "budget_usd" in edit["properties"]
    execute = doc["paths"]["/missions/{mission_id}/execute"]["post"]["responses"]
    assert {"202", "401", "404", "409", "429", "503"} <= set(execute)
    create = doc["components"]["schemas"]["CreateMission"]
    assert create["additionalProperties"] is False
    assert create["properties"]["objective"]["maxLength"] == 2000


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_no_5xx_and_match_the_description(case, alice: User) -> None:  # type: ignore[no-untyped-def]
    """Generated requests never get a 5xx, and every answer matches the description."""
    case.call_and_validate(headers={"Authorization": f"Bearer {alice.token}"})
