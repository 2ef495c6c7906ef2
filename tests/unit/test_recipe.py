"""Recipe templates (domain.recipe): placeholders, filling in, and recipes made from
missions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from buddy.domain import lifecycle, recipe
from buddy.domain.recipe import BUILTINS, Param
from buddy.errors import ValidationFailed

from .fakes import START


def made(**body: Any) -> recipe.Recipe:
    fields = {"name": "r", "objective": "do {x}", "params": [Param("x", "string")], **body}
    return recipe.new("rcp_1", "alice", START, fields)


def test_text_placeholders_take_the_values_text_and_whole_ones_their_type() -> None:
    template = made(
        objective="fetch {page} from {page.host} ({n} times, {{literally}})",
        params=[Param("page", "url"), Param("n", "integer"), Param("w", "number")],
        inputs={"url": "{page}", "max_pages": "{n}", "nested": ["{w}", {"k": "{n}x"}]},
        budget_usd="{w}",
        scope={"allowed_domains": ["{page.host}", "static.example.com"]},
    )
    values = {"page": "https://www.Example.com:8443/a", "n": 3, "w": 2.0}
    body = recipe.mission_body(template, values)
    assert body["objective"] == (
        "fetch https://www.Example.com:8443/a from www.example.com (3 times, {literally})"
    )
    assert body["inputs"] == {
        "url": "https://www.Example.com:8443/a",
        "max_pages": 3,
        "nested": [2.0, {"k": "3x"}],
    }
    assert body["budget_usd"] == 2.0
    assert body["scope"]["allowed_domains"] == ["www.example.com", "static.example.com"]


def test_defaults_fill_in_what_is_not_given() -> None:
    template = made(params=[Param("x", "string"), Param("y", "integer", False, 7)])
    assert recipe.resolved(template, {"x": "a"}) == {"y": 7, "x": "a"}
    assert recipe.resolved(template, {"x": "a", "y": 1}) == {"y": 1, "x": "a"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"objective": "do {y}"}, "objective: {y} is not a param (params: x)"),
        ({"objective": "do }"}, "objective: a lone '}'"),
        ({"inputs": {"a": ["{x}", "{z}"]}}, "inputs.a.1: {z} is not a param"),
        ({"scope": {"allowed_domains": ["{x.host}"]}}, "{x.host} needs a url param"),
        ({"budget_usd": "{x}"}, "budget_usd: give a number, or one placeholder"),
        ({"params": [Param("x", "string")] * 2}, "params: 'x' is declared twice"),
        ({"params": [Param(f"p{i}", "string") for i in range(21)]}, "params: at most 20"),
    ],
)
def test_templates_that_cannot_be_filled_are_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        made(**body)
    assert message in str(refused.value)


def test_a_new_version_keeps_the_recipe_and_counts_on() -> None:
    first = made()
    second = recipe.next_version(first, START, {"name": "r2", "objective": "redo {x}"})
    assert (second.version, second.latest_version, second.created_at) == (2, 2, START)
    assert (second.name, second.objective, first.objective) == ("r2", "redo {x}", "do {x}")


def test_the_built_ins_are_readable_by_everyone_and_make_valid_bodies() -> None:
    assert [r.recipe_id for r in BUILTINS] == [
        "builtin-extract-page",
        "builtin-calculate",
        "builtin-search-web",
        "builtin-research",
    ]
    for builtin in BUILTINS:
        recipe.check(builtin)
        assert builtin.visible_to("anyone") and builtin.builtin
        body = recipe.mission_body(builtin, recipe.sample_params(builtin))
        assert body["tool"] == builtin.tool and "{" not in body["objective"]


def test_a_mission_becomes_a_recipe_with_its_values_as_defaults() -> None:
    mission = lifecycle.proposed(
        "m_1",
        "alice",
        "calculate 6*7 {not a param}",
        (),
        2.5,
        "calculate",
        {"expression": "6*7"},
        START,
    )
    body = recipe.from_mission(mission, None)
    assert body["objective"] == "calculate {expression} {{not a param}}"
    assert body["params"] == [Param("expression", "string", False, "6*7")]
    assert body["inputs"] == {"expression": "{expression}"}
    saved = recipe.new("rcp_2", "alice", START, {**body, "name": "n"})
    assert recipe.mission_body(saved, {"expression": "1+2"})["objective"] == (
        "calculate 1+2 {not a param}"
    )
    chosen = recipe.from_mission(mission, ["objective", "budget_usd"])
    assert [p.name for p in chosen["params"]] == ["objective", "budget_usd"]
    assert (chosen["objective"], chosen["budget_usd"]) == ("{objective}", "{budget_usd}")


@pytest.mark.parametrize(
    ("inputs", "fields", "message"),
    [
        ({"flag": True}, None, "inputs.flag is not text or a number"),
        ({"items": [1, 2]}, None, "inputs.items is not text or a number"),
        ({}, ["inputs.url"], "'inputs.url' is not a field of the mission"),
        ({}, ["tool"], "'tool' is not a field of the mission"),
    ],
)
def test_only_text_and_number_fields_become_params(
    inputs: dict[str, Any], fields: list[str] | None, message: str
) -> None:
    base = lifecycle.proposed("m_1", "alice", "x", (), 1.0, None, {}, START)
    with pytest.raises(ValidationFailed, match=message):
        recipe.from_mission(replace(base, inputs=inputs), fields)
