"""The published API description, and a property-based fuzzer run against it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

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
    for path, method in [
        ("/schedules", "post"),
        ("/schedules", "get"),
        ("/schedules/{schedule_id}", "get"),
        ("/schedules/{schedule_id}", "patch"),
        ("/schedules/{schedule_id}", "delete"),
        ("/schedules/{schedule_id}/pause", "post"),
        ("/schedules/{schedule_id}/resume", "post"),
        ("/schedules/{schedule_id}/run", "post"),
    ]:
        assert (path, method) in operations, (path, method)
    assert "204" in doc["paths"]["/schedules/{schedule_id}"]["delete"]["responses"]
    schedule = doc["components"]["schemas"]["CreateSchedule"]
    kinds = schedule["properties"]["mission"]["oneOf"]
    assert kinds == [
        {"$ref": "#/components/schemas/CreateMission"},
        {"$ref": "#/components/schemas/ScheduledRecipe"},
    ]
    listed = doc["paths"]["/missions"]["get"]["parameters"]
    assert "schedule_id" in {p["name"] for p in listed}
    for path, method in [
        ("/recipes", "get"),
        ("/recipes", "post"),
        ("/recipes/{recipe_id}", "get"),
        ("/recipes/{recipe_id}", "put"),
        ("/recipes/{recipe_id}", "delete"),
        ("/recipes/{recipe_id}/missions", "post"),
        ("/missions/{mission_id}/save-as-recipe", "post"),
        ("/missions/{mission_id}/feedback", "post"),
        ("/stats/tools", "get"),
    ]:
        assert (path, method) in operations, (path, method)
    rating = doc["components"]["schemas"]["RateMission"]["properties"]["rating"]
    assert (rating["minimum"], rating["maximum"]) == (1, 5)
    param = doc["components"]["schemas"]["ParamSpec"]["properties"]["type"]
    assert param["enum"] == ["string", "integer", "number", "url"]


@pytest.fixture
def fuzzer(alice: User) -> Iterator[User]:
    """The fuzzing user; the schedules it made are deleted after, so they stop firing."""
    yield alice
    for schedule in alice.call("GET", "/schedules").json()["schedules"]:
        alice.call("DELETE", f"/schedules/{schedule['schedule_id']}")


# Bodies with rules JSON Schema cannot state: a cron's fields and an IANA zone (`5-1 * * * *`,
# `0 0 30 2 *`, `Mars/Base` fit the pattern of one and the type of the other), a recipe's
# templates (each placeholder must name a declared param), a recipe's params (typed by the
# recipe, not the description) and the mission fields a saved recipe may make params of.
BEYOND_SCHEMA = {
    ("POST", "/schedules"),
    ("PATCH", "/schedules/{schedule_id}"),
    ("POST", "/recipes"),
    ("PUT", "/recipes/{recipe_id}"),
    ("POST", "/recipes/{recipe_id}/missions"),
    ("POST", "/missions/{mission_id}/save-as-recipe"),
}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_no_5xx_and_match_the_description(case, fuzzer: User) -> None:  # type: ignore[no-untyped-def]
    """Generated requests never get a 5xx, and every answer matches the description.

    Some bodies are checked for more than their schema says (BEYOND_SCHEMA), so for them a
    422 for data the schema allows is expected; every other check still holds."""
    excluded = []
    if (case.operation.method.upper(), case.operation.path) in BEYOND_SCHEMA:
        excluded.append(positive_data_acceptance)
    headers = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    if headers is not None and headers.mode == GenerationMode.NEGATIVE:
        # Its one header is the token, which this test sends whatever the case made of it:
        # the request that goes out is not the negative one that was generated.
        excluded.append(negative_data_rejection)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzzer.token}"}, excluded_checks=excluded
    )
