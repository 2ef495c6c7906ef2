"""Recipes, ratings and tool statistics in BuddyClient and the `buddy` CLI, over
httpx.MockTransport (and the fake listener of test_client for the missions they run)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import typer

from buddy import cli
from buddy.client import BuddyClient, BuddyError, Conflict, InvalidRequest, MissionNotFound

from .test_client import CALCULATE_RUN, FakeListener, client_with, error, invoke


def param(name: str, kind: str, default: Any = None, description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "required": default is None,
        "default": default,
        "description": description,
    }


def recipe(recipe_id: str, name: str, **fields: Any) -> dict[str, Any]:
    builtin = recipe_id.startswith("builtin-")
    return {
        "recipe_id": recipe_id,
        "owner_uid": "builtin" if builtin else "u_1",
        "builtin": builtin,
        "name": name,
        "description": "",
        "version": 1,
        "latest_version": 1,
        "objective": name,
        "params": [],
        "scope": {"allowed_domains": []},
        "budget_usd": 1.0,
        "tool": None,
        "inputs": {},
        "on_limit": "fail",
        "uses": 0,
        "completed": 0,
        "failed": 0,
        "created_at": "2026-12-01T16:00:00Z",
        "updated_at": "2026-12-01T16:00:00Z",
        "version_created_at": "2026-12-01T16:00:00Z",
        **fields,
    }


CALCULATE = recipe(
    "builtin-calculate",
    "Calculate",
    description="Evaluate an arithmetic expression",
    objective="Calculate {expression}",
    params=[param("expression", "string", description="e.g. 2*(3+4)")],
    tool="calculate",
    inputs={"expression": "{expression}"},
    uses=3,
    completed=2,
    failed=1,
)
SEARCH = recipe(
    "builtin-search-web",
    "Search the web",
    objective="Search the web for {query}",
    params=[param("query", "string"), param("max_results", "integer", 5, "How many results")],
    tool="web_search",
    inputs={"query": "{query}", "max_results": "{max_results}"},
)
SUMS = recipe(
    "rcp_sums",
    "Sums",
    objective="Calculate {expression}",
    params=[param("expression", "string", "6*7")],
    budget_usd="{budget}",
    version=2,
    latest_version=2,
    on_limit="ask",
)


class RecipeApi:
    """Answers as the API does; records each request as (method, path, query, JSON body)."""

    def __init__(self, recipes: list[dict[str, Any]] | None = None) -> None:
        self.recipes = [CALCULATE, SEARCH, SUMS] if recipes is None else recipes
        self.mission: dict[str, Any] = {
            "mission_id": "m_1",
            "owner_uid": "u_1",
            "objective": "Calculate 6*7",
            "scope": {"allowed_domains": []},
            "budget_usd": 1.0,
            "tool": "calculate",
            "inputs": {"expression": "6*7"},
            "status": "completed",
            "created_at": "2026-12-01T16:00:00Z",
            "updated_at": "2026-12-01T16:00:00Z",
            "on_limit": "fail",
            "recipe": None,
            "feedback": None,
            "execution_record": None,
        }
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        method, path = request.method, request.url.path
        self.requests.append((method, path, dict(request.url.params), body))
        by_id = {r["recipe_id"]: r for r in self.recipes}
        parts = path.strip("/").split("/")
        if path == "/recipes" and method == "GET":
            return httpx.Response(200, json={"recipes": self.recipes})
        if path == "/recipes" and method == "POST":
            return httpx.Response(201, json=recipe("rcp_new", body["name"]))
        if parts[0] == "recipes" and len(parts) == 2:
            if method == "DELETE":
                return httpx.Response(204)
            shown = by_id[parts[1]]
            if "version" in request.url.params:
                shown = {**shown, "version": int(request.url.params["version"])}
            return httpx.Response(200, json=shown)
        if parts[0] == "recipes" and parts[2] == "missions":
            version = (body or {}).get("version") or by_id[parts[1]]["latest_version"]
            made = {"recipe_id": parts[1], "version": version, "params": body["params"]}
            return httpx.Response(201, json={**self.mission, "status": "proposed", "recipe": made})
        if path.endswith("/save-as-recipe"):
            name = (body or {}).get("name", "Calculate 6*7")
            return httpx.Response(201, json={**SUMS, "recipe_id": "rcp_saved", "name": name})
        if path.endswith("/feedback"):
            feedback = {**body, "at": "2026-12-01T17:00:00Z"}
            return httpx.Response(200, json={**self.mission, "feedback": feedback})
        if path == "/stats/tools":
            return httpx.Response(200, json={"tools": STATS})
        if path.endswith("/execute"):
            return httpx.Response(202, json={"mission_id": "m_1", "status": "queued"})
        return httpx.Response(200, json=self.mission)

    def changes(self) -> list[tuple[str, str, Any]]:
        """The requests that change something: (method, path, body)."""
        return [(m, p, b) for m, p, _, b in self.requests if m != "GET"]


def summary(**fields: Any) -> dict[str, Any]:
    return {
        "missions": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "success_rate": None,
        "median_duration_seconds": None,
        "mean_cost_usd": None,
        "ratings": 0,
        "mean_rating": None,
        "daily": [],
        **fields,
    }


STATS = [
    {
        "tool": "calculate",
        "mine": summary(
            missions=3,
            completed=3,
            success_rate=1.0,
            median_duration_seconds=1.84,
            mean_cost_usd=0.0001,
            ratings=1,
            mean_rating=5.0,
        ),
        "everyone": summary(
            missions=12,
            completed=10,
            failed=1,
            cancelled=1,
            success_rate=0.909,
            median_duration_seconds=1.8,
            mean_cost_usd=0.000133333,
            ratings=5,
            mean_rating=4.2,
        ),
        "adjustments": [
            {"intent": "calculate", "adjustment": 0.06, "ratings": 23, "mean_rating": 4.4},
            {"intent": "unit_conversion", "adjustment": -0.03, "ratings": 1, "mean_rating": 1.0},
        ],
    },
    {"tool": "web_extract", "mine": summary(), "everyone": summary(), "adjustments": []},
]


# BuddyClient: one request per call, as the contract spells it

CLIENT_CALLS: list[tuple[str, Callable[[BuddyClient], Any], str, str, dict[str, str], Any]] = [
    ("recipes", lambda c: c.recipes(), "GET", "/recipes", {}, None),
    ("recipe", lambda c: c.recipe("rcp_sums"), "GET", "/recipes/rcp_sums", {}, None),
    (
        "recipe-version",
        lambda c: c.recipe("rcp_sums", version=1),
        "GET",
        "/recipes/rcp_sums",
        {"version": "1"},
        None,
    ),
    (
        "create-recipe",
        lambda c: c.create_recipe("Sums", "Calculate {expression}"),
        "POST",
        "/recipes",
        {},
        {
            "name": "Sums",
            "description": "",
            "objective": "Calculate {expression}",
            "params": [],
            "scope": {"allowed_domains": []},
            "on_limit": "fail",
            "budget_usd": 1.0,
        },
    ),
    (
        "create-recipe-full",
        lambda c: c.create_recipe(
            "Page",
            "Extract {url}",
            description="One page",
            params=[param("url", "url"), param("budget", "number", 0.5)],
            allowed_domains=["{url.host}"],
            budget_usd="{budget}",
            tool="web_extract",
            inputs={"url": "{url}"},
            on_limit="ask",
        ),
        "POST",
        "/recipes",
        {},
        {
            "name": "Page",
            "description": "One page",
            "objective": "Extract {url}",
            "params": [param("url", "url"), param("budget", "number", 0.5)],
            "scope": {"allowed_domains": ["{url.host}"]},
            "tool": "web_extract",
            "inputs": {"url": "{url}"},
            "on_limit": "ask",
            "budget_usd": "{budget}",
        },
    ),
    (
        "update-recipe",
        lambda c: c.update_recipe("rcp_sums", "Sums", "Add up {expression}", budget_usd=0.5),
        "PUT",
        "/recipes/rcp_sums",
        {},
        {
            "name": "Sums",
            "description": "",
            "objective": "Add up {expression}",
            "params": [],
            "scope": {"allowed_domains": []},
            "on_limit": "fail",
            "budget_usd": 0.5,
        },
    ),
    (
        "delete-recipe",
        lambda c: c.delete_recipe("rcp_sums"),
        "DELETE",
        "/recipes/rcp_sums",
        {},
        None,
    ),
    (
        "mission-from-recipe",
        lambda c: c.mission_from_recipe("builtin-calculate", {"expression": "6*7"}),
        "POST",
        "/recipes/builtin-calculate/missions",
        {},
        {"params": {"expression": "6*7"}},
    ),
    (
        "mission-from-recipe-version",
        lambda c: c.mission_from_recipe("rcp_sums", {}, version=1),
        "POST",
        "/recipes/rcp_sums/missions",
        {},
        {"params": {}, "version": 1},
    ),
    (
        "save-as-recipe",
        lambda c: c.save_as_recipe("m_1"),
        "POST",
        "/missions/m_1/save-as-recipe",
        {},
        None,
    ),
    (
        "save-as-recipe-full",
        lambda c: c.save_as_recipe("m_1", "Sums", "Adds", ["inputs.expression", "budget_usd"]),
        "POST",
        "/missions/m_1/save-as-recipe",
        {},
        {"name": "Sums", "description": "Adds", "params": ["inputs.expression", "budget_usd"]},
    ),
    ("rate", lambda c: c.rate("m_1", 4), "POST", "/missions/m_1/feedback", {}, {"rating": 4}),
    (
        "rate-comment",
        lambda c: c.rate("m_1", 5, "spot on"),
        "POST",
        "/missions/m_1/feedback",
        {},
        {"rating": 5, "comment": "spot on"},
    ),
    ("tool-stats", lambda c: c.tool_stats(), "GET", "/stats/tools", {}, None),
]


@pytest.mark.parametrize(
    ("call", "method", "path", "query", "body"),
    [row[1:] for row in CLIENT_CALLS],
    ids=[row[0] for row in CLIENT_CALLS],
)
def test_each_call_is_one_request_to_its_route_with_the_documented_body(
    call: Callable[[BuddyClient], Any],
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
) -> None:
    """Every recipe, rating and stats call sends one request: its method, path, query and
    body as the contract spells them (optional fields only when given)."""
    api = RecipeApi()
    call(client_with(api))
    assert api.requests == [(method, path, query, body)]


def test_calls_answer_the_api_documents() -> None:
    """Lists come back as lists, single documents as dicts, a deletion as None."""
    client = client_with(RecipeApi())
    assert [r["recipe_id"] for r in client.recipes()] == [
        "builtin-calculate",
        "builtin-search-web",
        "rcp_sums",
    ]
    assert client.recipe("rcp_sums", version=1)["version"] == 1
    assert client.tool_stats() == STATS
    assert client.delete_recipe("rcp_sums") is None
    made = client.mission_from_recipe("builtin-calculate", {"expression": "6*7"})
    assert (made["status"], made["recipe"]["params"]) == ("proposed", {"expression": "6*7"})
    assert client.rate("m_1", 5)["feedback"]["rating"] == 5


@pytest.mark.parametrize(
    ("call", "status", "api_message", "kind", "message"),
    [
        (
            lambda c: c.recipe("rcp_x"),
            404,
            "Recipe rcp_x not found",
            MissionNotFound,
            "Recipe rcp_x not found",
        ),
        (
            lambda c: c.recipe("rcp_x", version=3),
            404,
            "Recipe rcp_x version 3 not found",
            MissionNotFound,
            "Recipe rcp_x version 3 not found",
        ),
        (
            lambda c: c.update_recipe("builtin-calculate", "Mine", "Calculate {x}"),
            404,
            "Recipe builtin-calculate not found",
            MissionNotFound,
            "Recipe builtin-calculate not found",
        ),
        (
            lambda c: c.mission_from_recipe("builtin-calculate", {}),
            422,
            "params.expression: Field required",
            InvalidRequest,
            "invalid request: params.expression: Field required",
        ),
        (
            lambda c: c.create_recipe("Bad", "Calculate {nope}"),
            422,
            "objective: {nope} is not a param (params: none)",
            InvalidRequest,
            "invalid request: objective: {nope} is not a param (params: none)",
        ),
        (
            lambda c: c.save_as_recipe("m_x"),
            404,
            "Mission m_x not found",
            MissionNotFound,
            "Mission m_x not found",
        ),
        (
            lambda c: c.rate("m_x", 5),
            409,
            "Cannot rate a mission that is running",
            Conflict,
            "Mission m_x can't do that now: Cannot rate a mission that is running",
        ),
        (
            lambda c: c.rate("m_x", 9),
            422,
            "rating: Input should be less than or equal to 5",
            InvalidRequest,
            "invalid request: rating: Input should be less than or equal to 5",
        ),
    ],
    ids=[
        "unknown-recipe",
        "unknown-version",
        "builtin-edit",
        "missing-param",
        "bad-template",
        "save-unknown-mission",
        "rate-running",
        "rate-out-of-range",
    ],
)
def test_errors_are_typed_and_say_what_was_not_found_or_refused(
    call: Callable[[BuddyClient], Any],
    status: int,
    api_message: str,
    kind: type[BuddyError],
    message: str,
) -> None:
    """A recipe's 404 says "Recipe … not found", a mission's "Mission … not found"; a bad
    param is an InvalidRequest naming it; rating a mission that has not ended is a Conflict
    naming the mission."""
    client = client_with(error(status, "some_code", api_message))
    with pytest.raises(kind) as caught:
        call(client)
    assert str(caught.value) == message
    assert caught.value.status == status


# Resolving NAME: an id, or a name


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("rcp_sums", "rcp_sums"),
        ("builtin-calculate", "builtin-calculate"),
        ("Sums", "rcp_sums"),
        ("search THE web", "builtin-search-web"),
    ],
    ids=["own-id", "builtin-id", "name", "name-any-case"],
)
def test_a_recipe_is_found_by_its_id_or_its_name_in_any_case(name: str, found: str) -> None:
    """NAME is a recipe's id, or its name whatever the case."""
    assert cli.find_recipe([CALCULATE, SEARCH, SUMS], name)["recipe_id"] == found


def test_an_id_wins_over_a_name_and_a_name_is_matched_whole() -> None:
    """An id is taken before a recipe named like it; a part of a name matches nothing."""
    named_like_an_id = recipe("rcp_other", "rcp_sums")
    assert cli.find_recipe([named_like_an_id, SUMS], "rcp_sums")["recipe_id"] == "rcp_sums"
    with pytest.raises(MissionNotFound):
        cli.find_recipe([SEARCH], "search")


def test_an_unknown_or_ambiguous_name_is_a_clear_error() -> None:
    """No match says the recipe was not found and where to look; two recipes of that name
    list their ids to choose from."""
    with pytest.raises(MissionNotFound) as unknown:
        cli.find_recipe([CALCULATE, SUMS], "Products")
    assert str(unknown.value) == (
        "Recipe 'Products' not found: no recipe of yours or built-in has that id or name "
        "(buddy recipe list shows them)"
    )
    twin = recipe("rcp_sums2", "SUMS")
    with pytest.raises(BuddyError) as ambiguous:
        cli.find_recipe([CALCULATE, SUMS, twin], "sums")
    assert str(ambiguous.value) == "2 recipes are named 'sums' (rcp_sums, rcp_sums2): give its id"


@pytest.mark.parametrize(
    ("args", "output"),
    [
        (
            ["recipe", "run", "Products"],
            "error: Recipe 'Products' not found: no recipe of yours or built-in has that id or "
            "name (buddy recipe list shows them)",
        ),
        (
            ["recipe", "show", "sums"],
            "error: 2 recipes are named 'sums' (rcp_sums, rcp_sums2): give its id",
        ),
    ],
    ids=["unknown", "ambiguous"],
)
def test_cli_an_unresolved_name_is_one_error_line_exit_1_and_nothing_made(
    monkeypatch: pytest.MonkeyPatch, args: list[str], output: str
) -> None:
    """An unknown or ambiguous NAME exits 1 with one `error:` line, as a mission not found
    does, and creates nothing."""
    api = RecipeApi([CALCULATE, SUMS, recipe("rcp_sums2", "SUMS")])
    result = invoke(monkeypatch, client_with(api), args)
    assert result.exit_code == 1
    assert result.output.strip() == output
    assert api.changes() == []


# --param


def test_params_are_typed_like_inputs_but_string_params_keep_their_text() -> None:
    """--param values are JSON when they parse (max_results=3 is 3), except for the recipe's
    string and url params, which get the text typed (query=42 is "42", not 42)."""
    pairs = ["query=42", "max_results=3", "extra=true", "note=hello world"]
    assert cli.parse_params(pairs, SEARCH) == {
        "query": "42",
        "max_results": 3,
        "extra": True,  # not the recipe's: the API names it in its refusal
        "note": "hello world",
    }
    assert cli.parse_params(["expression=2*(3+4)", "x="], CALCULATE) == {
        "expression": "2*(3+4)",
        "x": "",
    }


def test_a_param_that_is_not_key_value_is_a_usage_error_naming_param(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--param expression` (no `=`) is refused before anything is made: exit 2, --param named."""
    with pytest.raises(typer.BadParameter):
        cli.parse_params(["=3"], CALCULATE)
    api = RecipeApi()
    result = invoke(monkeypatch, client_with(api), ["recipe", "run", "calculate", "--param", "x"])
    assert result.exit_code == 2
    assert "'x' is not key=value" in result.output and "--param" in result.output
    assert api.changes() == []


# buddy recipe list / show


def test_cli_recipe_list_is_a_table_of_ids_names_versions_and_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`buddy recipe list` shows each recipe's id, name, whether it is built in, its latest
    version, and its missions made / completed / failed (an id whole, however long: the
    name wraps instead); --json the API's answer."""
    api = RecipeApi()
    result = invoke(monkeypatch, client_with(api), ["recipe", "list"])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert re.sub(r"\s+", " ", lines[0]) == "recipe name built-in version uses completed failed"
    assert re.fullmatch(r"builtin-calculate\s+Calculate\s+yes\s+1\s+3\s+2\s+1", lines[1])
    assert re.fullmatch(r"builtin-search-web\s+Search the web\s+yes\s+1\s+0\s+0\s+0", lines[2])
    assert re.fullmatch(r"rcp_sums\s+Sums\s+2\s+0\s+0\s+0", lines[3])
    as_json = invoke(monkeypatch, client_with(api), ["recipe", "list", "--json"])
    assert json.loads(as_json.output) == {"recipes": [CALCULATE, SEARCH, SUMS]}
    long_id = "rcp_" + "x" * 16  # as long as the API makes them
    narrow = RecipeApi([recipe(long_id, "A name long enough to have to wrap somewhere " * 2)])
    wrapped = invoke(monkeypatch, client_with(narrow), ["recipe", "list"])
    assert re.search(rf"^{long_id}\s+A name", wrapped.output, re.MULTILINE), wrapped.output
    empty = invoke(monkeypatch, client_with(RecipeApi([])), ["recipe", "list"])
    assert (empty.exit_code, empty.output) == (0, "No recipes.\n")


def test_cli_recipe_show_lists_params_with_types_defaults_and_templates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`buddy recipe show NAME` shows its params (type, required or default, description),
    its templates, how its missions went, and the command that runs it."""
    api = RecipeApi()
    result = invoke(monkeypatch, client_with(api), ["recipe", "show", "search the web"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "Recipe builtin-search-web: Search the web (built-in, v1)",
        "  params",
        "    query (string, required)",
        "    max_results (integer, default 5) — How many results",
        "  objective  Search the web for {query}",
        "  budget     $1",
        "  tool       web_search",
        '  inputs     {"query": "{query}", "max_results": "{max_results}"}',
        "  missions   0 made: 0 completed, 0 failed",
        "  run it     buddy recipe run builtin-search-web --param query=<string>",
    ]
    assert api.requests[-1][:3] == ("GET", "/recipes/builtin-search-web", {})


def test_cli_recipe_show_of_an_older_version_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--version 1` asks for that version and says it is not the latest; a budget template
    and an ask-on-limit recipe show as such."""
    api = RecipeApi()
    result = invoke(monkeypatch, client_with(api), ["recipe", "show", "Sums", "--version", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Recipe rcp_sums: Sums (yours, v1 of 2)"
    assert "    expression (string, default 6*7)" in lines
    assert "  budget     {budget}" in lines
    assert "  on limit   ask (pause instead of failing)" in lines
    assert lines[-1] == "  run it     buddy recipe run rcp_sums"
    assert api.requests[-1][:3] == ("GET", "/recipes/rcp_sums", {"version": "1"})


# buddy recipe run


def test_cli_recipe_run_makes_approves_executes_and_follows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`buddy recipe run calculate --param expression=6*7` makes the mission from the
    recipe, approves and executes it, and shows every step and the result as `buddy run`
    does (exit 0)."""
    api = RecipeApi()
    client = client_with(api, listener=FakeListener(CALCULATE_RUN))
    args = ["recipe", "run", "calculate", "--param", "expression=6*7"]
    result = invoke(monkeypatch, client, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Mission m_1 created from Calculate v1"
    assert [line.split("Step ")[1][:3] for line in lines if "] Step " in line] == [
        f"{i}/7" for i in range(1, 8)
    ]
    assert lines[-2:] == [
        "Completed in 1.5s: 2*(3+4) = 14",
        "Artifact: 2*(3+4) = 14 (buddy show m_1)",
    ]
    assert api.changes() == [
        ("POST", "/recipes/builtin-calculate/missions", {"params": {"expression": "6*7"}}),
        ("POST", "/missions/m_1/approve", None),
        ("POST", "/missions/m_1/execute", None),
    ]


def test_cli_recipe_run_of_a_version_sends_it_and_types_params_by_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--version 1` makes the mission from that version, its params typed by that
    version's declarations; with --json only JSON lines are printed."""
    api = RecipeApi()
    client = client_with(api, listener=FakeListener(CALCULATE_RUN))
    args = ["--json", "recipe", "run", "sums", "--version", "1", "--param", "expression=12"]
    result = invoke(monkeypatch, client, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert rows[-1]["status"] == "completed"
    assert ("GET", "/recipes/rcp_sums", {"version": "1"}, None) in api.requests
    assert api.changes()[0] == (
        "POST",
        "/recipes/rcp_sums/missions",
        {"params": {"expression": "12"}, "version": 1},
    )


def test_cli_recipe_run_with_a_bad_param_says_which_and_runs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API's refusal of a param is one error line naming it, exit 1, nothing approved."""
    refusal = error(422, "validation_failed", "params.expression: Field required")
    recipes = RecipeApi()

    def api(request: httpx.Request) -> httpx.Response:
        return refusal(request) if request.method == "POST" else recipes(request)

    result = invoke(monkeypatch, client_with(api), ["recipe", "run", "builtin-calculate"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: invalid request: params.expression: Field required"


# buddy recipe save / delete


def test_cli_recipe_save_sends_name_and_fields_and_shows_the_new_recipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`buddy recipe save m_1 --name Sums --param inputs.expression` saves the mission as a
    recipe with that param and shows it; without options it sends no body."""
    api = RecipeApi()
    args = ["recipe", "save", "m_1", "--name", "Sums", "--param", "inputs.expression"]
    result = invoke(monkeypatch, client_with(api), args)
    assert result.exit_code == 0, result.output
    assert api.changes() == [
        ("POST", "/missions/m_1/save-as-recipe", {"name": "Sums", "params": ["inputs.expression"]})
    ]
    lines = result.output.splitlines()
    assert lines[0] == "Recipe rcp_saved: Sums (yours, v2)"
    assert lines[-1] == "  run it     buddy recipe run rcp_saved"
    bare = invoke(monkeypatch, client_with(api), ["recipe", "save", "m_1"])
    assert bare.exit_code == 0, bare.output
    assert api.changes()[-1] == ("POST", "/missions/m_1/save-as-recipe", None)


def test_cli_recipe_delete_by_name_deletes_that_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy recipe delete sums` deletes the recipe of that name and says so."""
    api = RecipeApi()
    result = invoke(monkeypatch, client_with(api), ["recipe", "delete", "sums"])
    assert result.exit_code == 0, result.output
    assert result.output == "Recipe rcp_sums (Sums) deleted (its missions stay)\n"
    assert api.changes() == [("DELETE", "/recipes/rcp_sums", None)]


# buddy rate


def test_cli_rate_sends_the_rating_and_shows_it_on_the_mission(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`buddy rate m_1 5 --comment "spot on"` rates it and shows the mission with its rating."""
    api = RecipeApi()
    result = invoke(monkeypatch, client_with(api), ["rate", "m_1", "5", "--comment", "spot on"])
    assert result.exit_code == 0, result.output
    assert api.changes() == [
        ("POST", "/missions/m_1/feedback", {"rating": 5, "comment": "spot on"})
    ]
    lines = result.output.splitlines()
    assert lines[0] == "Mission m_1: completed (0%)"
    assert "  rating     5/5 — spot on" in lines


@pytest.mark.parametrize(
    ("rating", "limit"),
    [
        ("0", "greater than or equal to 1"),
        ("-1", "greater than or equal to 1"),
        ("6", "less than or equal to 5"),
    ],
    ids=["zero", "negative", "six"],
)
def test_cli_rate_outside_1_to_5_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch, rating: str, limit: str
) -> None:
    """A rating outside 1..5 is a usage error (exit 2) saying the limit it broke; the API
    is not called."""
    api = RecipeApi()
    result = invoke(monkeypatch, client_with(api), ["rate", "m_1", "--", rating])
    assert result.exit_code == 2
    assert f"Invalid value for 'rating': Input should be {limit}" in result.output
    assert api.requests == []


def test_cli_rate_of_a_running_mission_is_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rating a mission that has not ended is refused by the API: one line, exit 1."""
    client = client_with(error(409, "conflict", "Cannot rate a mission that is running"))
    result = invoke(monkeypatch, client, ["rate", "m_1", "4"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: Mission m_1 can't do that now: Cannot rate a mission that is running"
    )


# buddy stats


def test_cli_stats_shows_yours_and_everyones_per_tool_and_the_adjustments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`buddy stats` prints per tool a You / Everyone table (missions, success rate, median
    duration, mean cost, ratings, mean rating) and each intent's adjustment as tool
    selection says it; a tool without missions shows dashes."""
    result = invoke(monkeypatch, client_with(RecipeApi()), ["stats"])
    assert result.exit_code == 0, result.output
    lines = [re.sub(r"\s{2,}", "  ", line.strip()) for line in result.output.splitlines()]
    assert lines[:6] == [
        "calculate  missions  success  median time  mean cost  ratings  mean rating",
        "You  3  100%  1.8s  $0.0001  1  5.0",
        "Everyone  12  91%  1.8s  $0.000133  5  4.2",
        "selection for calculate: +0.06 from 23 ratings (mean 4.4)",
        "selection for unit_conversion: -0.03 from 1 rating (mean 1.0)",
        "",
    ]
    assert lines[6:] == [
        "web_extract  missions  success  median time  mean cost  ratings  mean rating",
        "You  0  -  -  -  0  -",
        "Everyone  0  -  -  -  0  -",
        "selection: not adjusted by ratings yet",
    ]


def test_cli_stats_json_prints_the_api_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy stats --json` prints GET /stats/tools as it came."""
    result = invoke(monkeypatch, client_with(RecipeApi()), ["stats", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"tools": STATS}
