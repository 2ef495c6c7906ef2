"""Recipes, feedback and tool statistics through the HTTP routes over the fakes: what a
client sends, what it reads back, and what is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flask.testing
import pytest

from buddy import bootstrap
from buddy.domain.recipe import BUILTINS

from .fakes import FakeToolStats
from .test_entrypoints import ALICE, BOB, client, error_of

CALC = {
    "name": "sum of two",
    "objective": "calculate {a}+{b}",
    "params": [
        {"name": "a", "type": "integer"},
        {"name": "b", "type": "number", "default": 1.5, "description": "the second"},
    ],
    "tool": "calculate",
    "inputs": {"expression": "{a}+{b}"},
}


@pytest.fixture
def app(make_app: Any) -> Iterator[bootstrap.App]:
    with bootstrap.installed(make_app(interval=0)) as instance:
        yield instance


@pytest.fixture
def api(app: bootstrap.App) -> flask.testing.FlaskClient:
    return client("api")


def created(api: flask.testing.FlaskClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.post("/recipes", json=body or CALC, headers=ALICE)
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def made(
    api: flask.testing.FlaskClient, recipe_id: str, headers: dict[str, str] = ALICE, **body: Any
) -> dict[str, Any]:
    response = api.post(f"/recipes/{recipe_id}/missions", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def ran(app: bootstrap.App, api: flask.testing.FlaskClient, mission_id: str) -> dict[str, Any]:
    """Approves, executes and runs the mission to its end, as a worker would."""
    assert api.post(f"/missions/{mission_id}/approve", headers=ALICE).status_code == 200
    assert api.post(f"/missions/{mission_id}/execute", headers=ALICE).status_code == 202
    app.runner.run(mission_id)
    return dict(api.get(f"/missions/{mission_id}", headers=ALICE).get_json())


# ---- recipes -------------------------------------------------------------------------------


def test_built_in_recipes_are_listed_for_every_user_before_their_own(
    api: flask.testing.FlaskClient,
) -> None:
    mine = created(api)
    alice = api.get("/recipes", headers=ALICE).get_json()["recipes"]
    bob = api.get("/recipes", headers=BOB).get_json()["recipes"]
    builtins = [
        "builtin-extract-page",
        "builtin-calculate",
        "builtin-search-web",
        "builtin-research",
    ]
    assert [r["recipe_id"] for r in alice] == [*builtins, mine["recipe_id"]]
    assert [r["recipe_id"] for r in bob] == builtins
    assert all(r["builtin"] and r["owner_uid"] == "builtin" for r in bob)


def test_a_recipe_makes_a_proposed_mission_with_typed_params_and_its_defaults(
    api: flask.testing.FlaskClient,
) -> None:
    recipe = created(api)
    assert (recipe["version"], recipe["latest_version"], recipe["uses"]) == (1, 1, 0)
    assert recipe["params"][0] == {
        "name": "a",
        "type": "integer",
        "required": True,
        "default": None,
        "description": "",
    }
    assert recipe["params"][1]["required"] is False
    mission = made(api, recipe["recipe_id"], params={"a": 4.0})  # 4.0 is the integer 4
    assert mission["status"] == "proposed"
    assert mission["objective"] == "calculate 4+1.5"
    assert mission["inputs"] == {"expression": "4+1.5"}
    assert mission["recipe"] == {
        "recipe_id": recipe["recipe_id"],
        "version": 1,
        "params": {"a": 4, "b": 1.5},
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "params.a: Field required"),
        ({"a": "4"}, "params.a: Input should be a valid integer"),
        ({"a": 4.5}, "params.a: Input should be a valid integer"),
        ({"a": True}, "params.a: Input should be a valid integer"),
        ({"a": 1, "b": "x"}, "params.b: Input should be a valid number"),
        ({"a": 1, "c": 2}, "params.c: Extra inputs are not permitted"),
    ],
)
def test_a_param_that_does_not_fit_its_type_is_a_422_naming_it(
    api: flask.testing.FlaskClient, params: dict[str, Any], message: str
) -> None:
    recipe = created(api)
    response = api.post(
        f"/recipes/{recipe['recipe_id']}/missions", json={"params": params}, headers=ALICE
    )
    assert error_of(response) == (422, "validation_failed")
    assert message in response.get_json()["error"]["message"]
    listed = api.get("/missions", headers=ALICE).get_json()["missions"]
    assert listed == []  # nothing was made


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"url": "ftp://example.com/x"}, "params.url: give an http(s) URL"),
        ({"url": "https://"}, "params.url: give an http(s) URL"),
        ({"url": ""}, "params.url: give an http(s) URL"),
        ({"url": 3}, "params.url: Input should be a valid string"),
    ],
)
def test_a_url_param_must_be_an_http_url(
    api: flask.testing.FlaskClient, params: dict[str, Any], message: str
) -> None:
    response = api.post(
        "/recipes/builtin-extract-page/missions", json={"params": params}, headers=ALICE
    )
    assert error_of(response) == (422, "validation_failed")
    assert message in response.get_json()["error"]["message"]


def test_the_extract_recipe_allows_its_pages_host(api: flask.testing.FlaskClient) -> None:
    mission = made(api, "builtin-extract-page", params={"url": "https://Docs.Example.org/a?b=1"})
    assert mission["scope"]["allowed_domains"] == ["docs.example.org"]
    assert mission["inputs"] == {"url": "https://Docs.Example.org/a?b=1"}
    assert mission["tool"] == "web_extract"


def test_a_string_param_is_text_even_when_it_looks_like_a_number(
    api: flask.testing.FlaskClient,
) -> None:
    mission = made(api, "builtin-calculate", params={"expression": "6*7"})
    assert mission["inputs"] == {"expression": "6*7"}
    wrong = api.post(
        "/recipes/builtin-calculate/missions", json={"params": {"expression": 42}}, headers=ALICE
    )
    assert (
        "params.expression: Input should be a valid string" in wrong.get_json()["error"]["message"]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"objective": "calculate {c}"}, "objective: {c} is not a param (params: a, b)"),
        ({"objective": "calculate {a} {"}, "objective: a lone '{'"),
        ({"inputs": {"expression": "{a}.host"}}, None),  # literal text after a placeholder
        ({"inputs": {"expression": "{a.host}"}}, "{a.host} needs a url param"),
        ({"budget_usd": "{a}{b}"}, "budget_usd: give a number, or one placeholder"),
        ({"budget_usd": "{missing}"}, "budget_usd: {missing} is not a param"),
        (
            {"params": [{"name": "a", "type": "integer"}, {"name": "a", "type": "string"}]},
            "params: 'a' is declared twice",
        ),
        (
            {"params": [{"name": "a", "type": "integer", "default": "x"}]},
            "params.a.default: Input should be a valid integer",
        ),
        (
            {"params": [{"name": "a", "type": "integer", "required": True, "default": 3}]},
            "params.a: a param with a default is not required",
        ),
        (
            {"params": [{"name": "a", "type": "integer", "required": False}]},
            "params.a: an optional param needs a default",
        ),
        ({"params": [{"name": "A", "type": "integer"}]}, "params.0.name: String should match"),
        ({"params": [{"name": "a", "type": "date"}]}, "params.0.type: Input should be"),
        ({"tool": "teleport"}, "Unknown tool 'teleport'"),
        ({"inputs": {"url": "{a}"}}, "inputs don't fit calculate"),
        ({"objective": "   "}, "objective: the objective is blank"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_a_recipe_that_could_not_make_a_mission_is_refused_when_saved(
    api: flask.testing.FlaskClient, change: dict[str, Any], message: str | None
) -> None:
    if "params" in change:  # templates of the one param `a`
        change = {"objective": "calculate {a}", "inputs": {"expression": "{a}"}, **change}
    response = api.post("/recipes", json={**CALC, **change}, headers=ALICE)
    if message is None:
        assert response.status_code == 201, response.get_json()
        return
    assert error_of(response) == (422, "validation_failed"), response.get_json()
    assert message in response.get_json()["error"]["message"]
    ids = [r["recipe_id"] for r in api.get("/recipes", headers=ALICE).get_json()["recipes"]]
    assert len(ids) == len(BUILTINS)  # the built-ins only: nothing was stored


def test_braces_are_written_double_and_come_out_single(api: flask.testing.FlaskClient) -> None:
    recipe = created(api, {**CALC, "objective": "calculate {{{a}}} then {b}"})
    mission = made(api, recipe["recipe_id"], params={"a": 2, "b": 3})
    assert mission["objective"] == "calculate {2} then 3"


def test_a_budget_can_be_a_param(api: flask.testing.FlaskClient) -> None:
    body = {
        **CALC,
        "params": [*CALC["params"], {"name": "budget", "type": "number", "default": 0.5}],
        "budget_usd": "{budget}",
    }
    recipe = created(api, body)
    assert made(api, recipe["recipe_id"], params={"a": 1})["budget_usd"] == 0.5
    too_much = api.post(
        f"/recipes/{recipe['recipe_id']}/missions",
        json={"params": {"a": 1, "budget": 500}},
        headers=ALICE,
    )
    assert error_of(too_much) == (422, "validation_failed")
    assert (
        "budget_usd: Input should be less than or equal to 100"
        in (too_much.get_json()["error"]["message"])
    )


def test_versions_are_immutable_and_earlier_ones_stay_usable(
    api: flask.testing.FlaskClient,
) -> None:
    recipe = created(api)
    rid = recipe["recipe_id"]
    second = api.put(
        f"/recipes/{rid}", json={**CALC, "objective": "compute {a}+{b}"}, headers=ALICE
    )
    assert second.status_code == 200
    assert (second.get_json()["version"], second.get_json()["latest_version"]) == (2, 2)
    assert api.get(f"/recipes/{rid}", headers=ALICE).get_json()["objective"] == "compute {a}+{b}"
    first = api.get(f"/recipes/{rid}?version=1", headers=ALICE).get_json()
    assert (first["version"], first["latest_version"], first["objective"]) == (
        1,
        2,
        "calculate {a}+{b}",
    )
    assert made(api, rid, params={"a": 1}, version=1)["objective"] == "calculate 1+1.5"
    assert made(api, rid, params={"a": 1})["objective"] == "compute 1+1.5"
    for bad in ("0", "-1", "two"):
        refused = api.get(f"/recipes/{rid}?version={bad}", headers=ALICE)
        assert error_of(refused) == (422, "validation_failed"), bad
    missing = api.get(f"/recipes/{rid}?version=3", headers=ALICE)
    assert error_of(missing) == (404, "not_found")
    assert f"Recipe {rid} version 3 not found" == missing.get_json()["error"]["message"]
    unmade = api.post(f"/recipes/{rid}/missions", json={"version": 9}, headers=ALICE)
    assert error_of(unmade) == (404, "not_found")


def test_another_users_recipe_is_404_everywhere(api: flask.testing.FlaskClient) -> None:
    rid = created(api)["recipe_id"]
    attempts = [
        api.get(f"/recipes/{rid}", headers=BOB),
        api.get(f"/recipes/{rid}?version=1", headers=BOB),
        api.put(f"/recipes/{rid}", json=CALC, headers=BOB),
        api.delete(f"/recipes/{rid}", headers=BOB),
        api.post(f"/recipes/{rid}/missions", json={"params": {"a": 1}}, headers=BOB),
    ]
    assert [error_of(r) for r in attempts] == [(404, "not_found")] * len(attempts)
    assert all(rid in r.get_json()["error"]["message"] for r in attempts)
    scheduled = api.post(
        "/schedules",
        json={"name": "x", "cron": "0 9 * * *", "mission": {"recipe_id": rid, "params": {"a": 1}}},
        headers=BOB,
    )
    assert error_of(scheduled) == (422, "validation_failed")  # its body names no recipe of Bob's
    assert scheduled.get_json()["error"]["message"] == f"mission.recipe_id: Recipe {rid} not found"
    assert api.get("/schedules", headers=BOB).get_json()["schedules"] == []
    assert rid not in str(api.get("/recipes", headers=BOB).get_json())
    assert api.get(f"/recipes/{rid}", headers=ALICE).get_json()["version"] == 1  # unchanged


def test_built_in_recipes_cannot_be_changed_or_deleted(api: flask.testing.FlaskClient) -> None:
    for response in (
        api.put("/recipes/builtin-calculate", json=CALC, headers=ALICE),
        api.delete("/recipes/builtin-calculate", headers=ALICE),
    ):
        assert error_of(response) == (404, "not_found")
    assert api.get("/recipes/builtin-calculate", headers=BOB).status_code == 200


def test_a_deleted_recipe_is_gone_and_its_missions_stay(api: flask.testing.FlaskClient) -> None:
    rid = created(api)["recipe_id"]
    mission = made(api, rid, params={"a": 1})
    assert api.delete(f"/recipes/{rid}", headers=ALICE).status_code == 204
    assert error_of(api.get(f"/recipes/{rid}", headers=ALICE)) == (404, "not_found")
    kept = api.get(f"/missions/{mission['mission_id']}", headers=ALICE).get_json()
    assert kept["recipe"]["recipe_id"] == rid


def test_save_as_recipe_turns_inputs_into_params_and_runs_again_with_others(
    app: bootstrap.App, api: flask.testing.FlaskClient
) -> None:
    mission = api.post(
        "/missions",
        json={"objective": "calculate 6*7", "inputs": {"expression": "6*7"}, "budget_usd": 2.0},
        headers=ALICE,
    ).get_json()
    first = ran(app, api, mission["mission_id"])
    assert first["status"] == "completed"
    response = api.post(
        f"/missions/{mission['mission_id']}/save-as-recipe",
        json={"name": "times"},
        headers=ALICE,
    )
    assert response.status_code == 201, response.get_json()
    recipe = response.get_json()
    assert recipe["name"] == "times"
    assert recipe["objective"] == "calculate {expression}"
    assert recipe["params"] == [
        {
            "name": "expression",
            "type": "string",
            "required": False,
            "default": "6*7",
            "description": "",
        }
    ]
    assert (recipe["budget_usd"], recipe["inputs"]) == (2.0, {"expression": "{expression}"})
    again = made(api, recipe["recipe_id"], params={"expression": "2+3"})
    assert (again["objective"], again["inputs"]) == ("calculate 2+3", {"expression": "2+3"})
    done = ran(app, api, again["mission_id"])
    assert done["execution_record"]["result_summary"].endswith("= 5")
    defaulted = made(api, recipe["recipe_id"])
    assert defaulted["objective"] == "calculate 6*7"


def test_save_as_recipe_of_a_page_mission_makes_its_url_and_host_a_param(
    api: flask.testing.FlaskClient,
) -> None:
    mission = api.post(
        "/missions",
        json={
            "objective": "Extract https://a.example.com/x {literally}",
            "scope": {"allowed_domains": ["a.example.com", "cdn.example.com"]},
            "inputs": {"url": "https://a.example.com/x", "max_pages": 2},
        },
        headers=ALICE,
    ).get_json()
    recipe = api.post(f"/missions/{mission['mission_id']}/save-as-recipe", headers=ALICE).get_json()
    assert recipe["objective"] == "Extract {url} {{literally}}"
    assert {p["name"]: (p["type"], p["default"]) for p in recipe["params"]} == {
        "url": ("url", "https://a.example.com/x"),
        "max_pages": ("integer", 2),
    }
    assert recipe["scope"]["allowed_domains"] == ["{url.host}", "cdn.example.com"]
    assert recipe["name"].startswith("Extract https://a.example.com/x")
    other = made(
        api, recipe["recipe_id"], params={"url": "https://b.example.org/y", "max_pages": 1}
    )
    assert other["objective"] == "Extract https://b.example.org/y {literally}"
    assert other["scope"]["allowed_domains"] == ["b.example.org", "cdn.example.com"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["inputs.nope"], "params: 'inputs.nope' is not a field of the mission"),
        (["scope"], "params: 'scope' is not a field of the mission"),
    ],
)
def test_save_as_recipe_refuses_fields_the_mission_does_not_have(
    api: flask.testing.FlaskClient, params: list[str], message: str
) -> None:
    mid = api.post("/missions", json={"objective": "calculate 1+1"}, headers=ALICE).get_json()[
        "mission_id"
    ]
    response = api.post(f"/missions/{mid}/save-as-recipe", json={"params": params}, headers=ALICE)
    assert error_of(response) == (422, "validation_failed")
    assert message in response.get_json()["error"]["message"]
    other = api.post(f"/missions/{mid}/save-as-recipe", headers=BOB)
    assert error_of(other) == (404, "not_found")


def test_save_as_recipe_without_inputs_makes_the_objective_the_param(
    api: flask.testing.FlaskClient,
) -> None:
    mid = api.post("/missions", json={"objective": "calculate 1+1"}, headers=ALICE).get_json()[
        "mission_id"
    ]
    recipe = api.post(f"/missions/{mid}/save-as-recipe", headers=ALICE).get_json()
    assert recipe["objective"] == "{objective}"
    assert made(api, recipe["recipe_id"], params={"objective": "calculate 2*2"})["objective"] == (
        "calculate 2*2"
    )


def test_usage_counts_each_mission_once_by_how_it_ended(
    app: bootstrap.App, api: flask.testing.FlaskClient
) -> None:
    good = made(api, "builtin-calculate", params={"expression": "1+1"})
    bad = made(api, "builtin-calculate", params={"expression": "1/0"})
    waiting = made(api, "builtin-calculate", params={"expression": "2+2"})
    assert ran(app, api, good["mission_id"])["status"] == "completed"
    assert ran(app, api, bad["mission_id"])["status"] == "failed"
    app.runner.run(good["mission_id"])  # a redelivery changes nothing
    recipe = api.get("/recipes/builtin-calculate", headers=BOB).get_json()
    assert (recipe["uses"], recipe["completed"], recipe["failed"]) == (3, 1, 1)
    assert api.post(f"/missions/{waiting['mission_id']}/cancel", headers=ALICE).status_code == 200
    # A retried failure is counted by how its next run ends, not twice.
    assert api.post(f"/missions/{bad['mission_id']}/retry", headers=ALICE).status_code == 202
    recipe = api.get("/recipes/builtin-calculate", headers=ALICE).get_json()
    assert (recipe["uses"], recipe["completed"], recipe["failed"]) == (3, 1, 0)


def test_running_a_recipes_mission_again_counts_as_a_use_and_a_changed_one_does_not(
    api: flask.testing.FlaskClient,
) -> None:
    mid = made(api, "builtin-calculate", params={"expression": "1+1"})["mission_id"]
    again = api.post(f"/missions/{mid}/clone", headers=ALICE).get_json()
    assert again["recipe"]["recipe_id"] == "builtin-calculate"
    richer = api.post(f"/missions/{mid}/clone", json={"budget_usd": 2.0}, headers=ALICE)
    assert richer.get_json()["recipe"]["recipe_id"] == "builtin-calculate"  # only its limit
    changed = api.post(f"/missions/{mid}/clone", json={"objective": "calculate 2"}, headers=ALICE)
    assert changed.get_json()["recipe"] is None
    assert api.get("/recipes/builtin-calculate", headers=ALICE).get_json()["uses"] == 3
    # An edit of what it does makes it a mission of its own: no longer a use of the recipe.
    edited = api.patch(f"/missions/{mid}", json={"inputs": {"expression": "2+2"}}, headers=ALICE)
    assert edited.get_json()["recipe"] is None
    assert api.get("/recipes/builtin-calculate", headers=ALICE).get_json()["uses"] == 2


# ---- feedback ------------------------------------------------------------------------------


def test_feedback_is_for_finished_missions_replaceable_and_owner_only(
    app: bootstrap.App, api: flask.testing.FlaskClient
) -> None:
    mid = made(api, "builtin-calculate", params={"expression": "1+1"})["mission_id"]
    early = api.post(f"/missions/{mid}/feedback", json={"rating": 5}, headers=ALICE)
    assert error_of(early) == (409, "conflict")
    assert "Cannot rate a mission that is proposed" in early.get_json()["error"]["message"]
    ran(app, api, mid)
    for bad in ({"rating": 0}, {"rating": 6}, {"rating": 4.5}, {"rating": "5"}, {}):
        response = api.post(f"/missions/{mid}/feedback", json=bad, headers=ALICE)
        assert error_of(response) == (422, "validation_failed"), bad
    long = api.post(
        f"/missions/{mid}/feedback", json={"rating": 3, "comment": "x" * 2001}, headers=ALICE
    )
    assert error_of(long) == (422, "validation_failed")
    assert error_of(api.post(f"/missions/{mid}/feedback", json={"rating": 5}, headers=BOB)) == (
        404,
        "not_found",
    )
    first = api.post(
        f"/missions/{mid}/feedback", json={"rating": 2, "comment": "slow"}, headers=ALICE
    )
    assert first.status_code == 200
    assert first.get_json()["feedback"]["rating"] == 2
    assert first.get_json()["feedback"]["comment"] == "slow"
    second = api.post(f"/missions/{mid}/feedback", json={"rating": 5}, headers=ALICE).get_json()
    assert (second["feedback"]["rating"], second["feedback"]["comment"]) == (5, None)
    events = api.get(f"/missions/{mid}/events", headers=ALICE).get_json()["events"]
    rated = [e["message"] for e in events if e["type"] == "mission_rated"]
    assert rated == ["Rated 2 of 5: slow", "Rated 5 of 5 (was 2)"]
    stats = tool(api.get("/stats/tools", headers=ALICE).get_json(), "calculate")
    assert (stats["everyone"]["ratings"], stats["everyone"]["mean_rating"]) == (1, 5.0)


# ---- statistics and confidence -------------------------------------------------------------


def tool(stats: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in stats["tools"] if t["tool"] == name)


def test_tool_statistics_separate_the_callers_missions_from_everyones(
    app: bootstrap.App, api: flask.testing.FlaskClient
) -> None:
    for expression in ("1+1", "2+2", "1/0"):
        ran(
            app,
            api,
            made(api, "builtin-calculate", params={"expression": expression})["mission_id"],
        )
    mid = made(api, "builtin-calculate", params={"expression": "3+3"})["mission_id"]
    ran(app, api, mid)
    api.post(f"/missions/{mid}/feedback", json={"rating": 4, "comment": "secret"}, headers=ALICE)
    alice = tool(api.get("/stats/tools", headers=ALICE).get_json(), "calculate")
    bob_view = api.get("/stats/tools", headers=BOB).get_json()
    bob = tool(bob_view, "calculate")
    assert [t["tool"] for t in bob_view["tools"]] == [
        "calculate",
        "research",
        "web_extract",
        "web_search",
    ]
    mine = alice["mine"]
    assert (mine["missions"], mine["completed"], mine["failed"], mine["cancelled"]) == (4, 3, 1, 0)
    assert mine["success_rate"] == 0.75
    assert mine["median_duration_seconds"] is not None
    assert mine["mean_cost_usd"] is not None and mine["mean_cost_usd"] >= 0
    assert (mine["ratings"], mine["mean_rating"]) == (1, 4.0)
    assert mine["daily"] == [
        {"date": "2025-01-01", "completed": 3, "failed": 1, "ratings": 1, "mean_rating": 4.0}
    ]
    assert bob["everyone"] == mine  # Bob sees everyone's figures, all Alice's here
    assert bob["mine"]["missions"] == 0 and bob["mine"]["success_rate"] is None
    assert "secret" not in str(bob_view) and mid not in str(bob_view)
    assert alice["adjustments"] == [
        {"intent": "calculate", "adjustment": 0.0091, "ratings": 1, "mean_rating": 4.0}
    ]


def rate_many(app: bootstrap.App, api: flask.testing.FlaskClient, rating: int, count: int) -> None:
    for _ in range(count):
        mid = api.post("/missions", json={"objective": "calculate 2+2"}, headers=ALICE)
        mid = mid.get_json()["mission_id"]
        assert ran(app, api, mid)["status"] == "completed"
        rated = api.post(f"/missions/{mid}/feedback", json={"rating": rating}, headers=ALICE)
        assert rated.status_code == 200


def selection_of(app: bootstrap.App, api: flask.testing.FlaskClient) -> tuple[float, str]:
    mid = api.post("/missions", json={"objective": "calculate 2+2"}, headers=ALICE)
    mission = ran(app, api, mid.get_json()["mission_id"])
    steps = mission["execution_record"]["progress_tracker"]["completed_steps"]
    message = next(s["message"] for s in steps if s["step_name"] == "tool_selection")
    return mission["execution_record"]["tool_confidence"], message


@pytest.mark.parametrize(("rating", "change"), [(5, "+0.05"), (1, "-0.13")])
def test_twenty_ratings_move_the_next_selections_confidence_and_its_message(
    app: bootstrap.App, api: flask.testing.FlaskClient, rating: int, change: str
) -> None:
    """The message says what the ratings changed, as applied: 0.95 + 0.13 stops at 1.00."""
    before, said = selection_of(app, api)
    assert said == "Selected calculate (confidence 0.95)"
    rate_many(app, api, rating, 20)
    after, said = selection_of(app, api)
    assert said == f"Selected calculate (confidence {after:.2f}, {change} from 20 ratings)"
    if rating == 5:
        assert after >= before * 1.05 or after == 1.0
    else:
        assert after <= before * 0.95


def test_selection_goes_on_without_ratings_when_the_statistics_are_down(
    app: bootstrap.App, api: flask.testing.FlaskClient, tool_stats: FakeToolStats
) -> None:
    rate_many(app, api, 1, 3)
    tool_stats.down = True
    confidence, said = selection_of(app, api)
    assert (confidence, said) == (0.95, "Selected calculate (confidence 0.95)")


def test_low_ratings_lower_a_weak_match_and_say_so(
    app: bootstrap.App, api: flask.testing.FlaskClient
) -> None:
    rate_many(app, api, 1, 30)
    weak = api.post("/missions", json={"objective": "compute it"}, headers=ALICE)
    mission = ran(app, api, weak.get_json()["mission_id"])
    steps = mission["execution_record"]["progress_tracker"]["completed_steps"]
    said = next(s["message"] for s in steps if s["step_name"] == "tool_selection")
    # "a calculation verb without an expression" scores 0.40; 30 ratings of 1 take 0.15 off.
    assert said == "Selected calculate (confidence 0.25, -0.15 from 30 ratings)"


@pytest.mark.parametrize("name", ["model_dump", "model_config", "_x", "_", "model_post_init"])
def test_a_param_may_be_called_anything_its_pattern_allows(
    api: flask.testing.FlaskClient, name: str
) -> None:
    body = {
        "name": "n",
        "objective": "calculate {" + name + "}",
        "params": [{"name": name, "type": "string"}],
        "tool": "calculate",
        "inputs": {"expression": "{" + name + "}"},
    }
    recipe = created(api, body)
    mission = made(api, recipe["recipe_id"], params={name: "1+2"})
    assert mission["inputs"] == {"expression": "1+2"}
    missing = api.post(f"/recipes/{recipe['recipe_id']}/missions", json={}, headers=ALICE)
    assert error_of(missing) == (422, "validation_failed")
    assert f"params.{name}: Field required" in missing.get_json()["error"]["message"]


def test_deeply_nested_inputs_are_a_422(api: flask.testing.FlaskClient) -> None:
    deep: Any = "x"
    for _ in range(700):
        deep = [deep]
    response = api.post("/recipes", json={**CALC, "inputs": {"a": deep}}, headers=ALICE)
    assert error_of(response) == (422, "validation_failed")
    assert "inputs: nested deeper than 16 levels" in response.get_json()["error"]["message"]


def test_a_number_default_is_kept_as_a_number(api: flask.testing.FlaskClient) -> None:
    body = {
        **CALC,
        "params": [*CALC["params"][:1], {"name": "b", "type": "number", "default": 10**20}],
    }
    recipe = created(api, body)
    assert recipe["params"][1]["default"] == 1e20
    assert isinstance(recipe["params"][1]["default"], float)


def test_save_as_recipe_replaces_an_input_only_where_it_stands_alone(
    api: flask.testing.FlaskClient,
) -> None:
    mid = api.post(
        "/missions",
        json={"objective": "Search the web for a cat", "inputs": {"query": "a"}},
        headers=ALICE,
    ).get_json()["mission_id"]
    recipe = api.post(f"/missions/{mid}/save-as-recipe", headers=ALICE).get_json()
    assert recipe["objective"] == "Search the web for {query} cat"
    broken = api.post(
        "/missions",
        json={"objective": "look up http://[oops", "inputs": {"query": "http://[oops"}},
        headers=ALICE,
    ).get_json()["mission_id"]
    saved = api.post(f"/missions/{broken}/save-as-recipe", headers=ALICE)
    assert saved.status_code == 201
    assert saved.get_json()["params"][0]["type"] == "string"
    fixed = api.post(f"/missions/{mid}/save-as-recipe", json={"params": []}, headers=ALICE)
    assert fixed.get_json()["params"] == []  # no params: it makes this very mission
    assert fixed.get_json()["objective"] == "Search the web for a cat"
