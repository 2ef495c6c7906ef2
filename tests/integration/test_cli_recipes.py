"""`buddy recipe`, `buddy rate` and `buddy stats` against the real stack: the CLI as a
subprocess, each test as a local user of its own (see test_cli)."""

from __future__ import annotations

import json
import re

from . import test_cli
from .test_cli import Buddy

# The same fixture as test_cli's: `buddy(*args)` runs the CLI as this test's user.
buddy = test_cli.buddy

BUILTINS = {
    "builtin-extract-page": "Extract a page",
    "builtin-calculate": "Calculate",
    "builtin-search-web": "Search the web",
    "builtin-research": "Research a topic",
}


def ran(buddy: Buddy, *args: str) -> tuple[str, str]:
    """Runs `buddy recipe run ARGS` to completion; its mission's id and its output."""
    done = buddy("recipe", "run", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    made = re.search(r"^Mission (\S+) created from ", done.stdout, re.MULTILINE)
    assert made, done.stdout
    return made.group(1), done.stdout


def test_recipe_list_shows_the_builtins_first(buddy: Buddy) -> None:
    """`buddy recipe list` shows the built-in recipes, marked built-in, before any of the
    user's own."""
    done = buddy("recipe", "list")
    assert done.returncode == 0, done.stderr
    for recipe_id, name in BUILTINS.items():
        # A name may wrap in its column ("Research a" / "topic"): its first word is on the line.
        first = name.split()[0]
        assert re.search(rf"^\s*{recipe_id}\s+{first}\b.*\byes\s+\d+", done.stdout, re.M), (
            done.stdout
        )
    listed = json.loads(buddy("--json", "recipe", "list").stdout)["recipes"]
    assert {r["recipe_id"]: r["name"] for r in listed if r["builtin"]} == BUILTINS
    assert {r["recipe_id"] for r in listed[: len(BUILTINS)]} == set(BUILTINS)
    assert all(r["builtin"] and r["owner_uid"] == "builtin" for r in listed[: len(BUILTINS)])


def test_recipe_run_of_calculate_completes_with_42(buddy: Buddy) -> None:
    """`buddy recipe run builtin-calculate --param expression=6*7` shows every step and
    `= 42`, exits 0, and its mission names the recipe and the params it was made with."""
    mission_id, output = ran(buddy, "builtin-calculate", "--param", "expression=6*7")
    assert f"Mission {mission_id} created from Calculate v1" in output
    steps = set(re.findall(r"^\[\s*\d+%\] Step (\d)/7 ", output, re.MULTILINE))
    assert steps == {str(k) for k in range(1, 8)}, output
    assert "6*7 = 42" in output and "Completed in" in output
    mission = json.loads(buddy("--json", "show", mission_id).stdout)["mission"]
    assert mission["status"] == "completed"
    assert mission["recipe"] == {
        "recipe_id": "builtin-calculate",
        "version": 1,
        "params": {"expression": "6*7"},
    }


def test_a_saved_mission_runs_again_as_a_recipe_by_its_name(buddy: Buddy) -> None:
    """`buddy recipe save` turns a finished mission into a recipe whose param defaults to
    the mission's input; `buddy recipe run <its name in any case> --param expression=2+3`
    runs it with a new value; the recipe then counts the mission it made."""
    mission_id, _ = ran(buddy, "calculate", "--param", "expression=6*7")
    done = buddy("recipe", "save", mission_id, "--name", "Weekly Sums")
    assert done.returncode == 0, done.stderr
    header = re.search(r"^Recipe (\S+): Weekly Sums \(yours, v1\)$", done.stdout, re.MULTILINE)
    assert header, done.stdout
    recipe_id = header.group(1)
    assert "    expression (string, default 6*7)" in done.stdout.splitlines()
    second, output = ran(buddy, "weekly sums", "--param", "expression=2+3")
    assert f"Mission {second} created from Weekly Sums v1" in output
    assert "2+3 = 5" in output
    shown = buddy("recipe", "show", recipe_id)
    assert shown.returncode == 0, shown.stderr
    assert "  missions   1 made: 1 completed, 0 failed" in shown.stdout.splitlines()
    listed = json.loads(buddy("--json", "recipe", "list").stdout)["recipes"]
    assert [r["recipe_id"] for r in listed if not r["builtin"]] == [recipe_id]


def test_an_unknown_recipe_name_is_one_error_line(buddy: Buddy) -> None:
    """A NAME that is no visible recipe's id or name exits 1 with one clear line."""
    done = buddy("recipe", "run", "no such recipe", "--param", "x=1")
    assert done.returncode == 1
    assert done.stderr.startswith("error: Recipe 'no such recipe' not found")
    assert "Traceback" not in done.stderr


def test_a_rating_counts_in_the_users_tool_stats(buddy: Buddy) -> None:
    """`buddy rate MISSION 5` shows the rating on the mission; `buddy stats` then counts
    this user's calculate mission and its rating in the You row."""
    mission_id, _ = ran(buddy, "builtin-calculate", "--param", "expression=6*7")
    rated = buddy("rate", mission_id, "5", "--comment", "spot on")
    assert rated.returncode == 0, rated.stderr
    assert "  rating     5/5 — spot on" in rated.stdout.splitlines()
    tools = json.loads(buddy("--json", "stats").stdout)["tools"]
    calculate = next(t for t in tools if t["tool"] == "calculate")
    mine = calculate["mine"]
    assert (mine["missions"], mine["completed"], mine["failed"]) == (1, 1, 0)
    assert (mine["ratings"], mine["mean_rating"], mine["success_rate"]) == (1, 5.0, 1.0)
    assert calculate["everyone"]["ratings"] >= 1
    table = buddy("stats")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["calculate"])
    you = lines[header + 1].split()
    assert (you[0], you[1], you[2], you[-2], you[-1]) == ("You", "1", "100%", "1", "5.0")


def test_rating_a_mission_that_has_not_ended_is_refused(buddy: Buddy) -> None:
    """`buddy rate` of a mission still proposed exits 1 saying the mission can't be rated
    yet; a version the recipe doesn't have is not found."""
    mission_id = test_cli.created(buddy, "calculate 1+1")["mission_id"]
    done = buddy("rate", mission_id, "4")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: Mission {mission_id} can't do that now: "), done.stderr
    shown = buddy("recipe", "show", "Calculate", "--version", "99")
    assert shown.returncode == 1
    assert shown.stderr.strip() == "error: Recipe builtin-calculate version 99 not found"


def test_a_schedule_of_a_recipe_from_the_command_line(buddy: Buddy) -> None:
    """`buddy schedule create NAME CRON --recipe calculate --param expression=20+22` shows
    the recipe it runs; run now completes with 42; OBJECTIVE and --recipe together are a
    usage error."""
    done = buddy(
        "schedule", "create", "yearly", "0 0 1 1 *", "--recipe", "calculate",
        "--param", "expression=20+22",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  runs       recipe builtin-calculate v1 (expression=20+22)" in done.stdout
    schedule_id = re.search(r"Schedule (sch_\S+):", done.stdout).group(1)  # type: ignore[union-attr]
    ran = buddy("schedule", "run", schedule_id, "--watch")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "20+22 = 42" in ran.stdout
    both = buddy("schedule", "create", "x", "0 0 1 1 *", "calculate 1", "--recipe", "calculate")
    assert both.returncode == 2 and "give an OBJECTIVE or --recipe NAME, not both" in both.stderr
    assert buddy("schedule", "delete", schedule_id).returncode == 0
