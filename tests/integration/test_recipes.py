"""Recipes, ratings and tool statistics against the real emulators: versions and privacy in
Firestore and its rules, usage counted once per mission under concurrency, fifty ratings at
once all counted, ratings moving the next selection's confidence, a schedule naming a
recipe."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from google.cloud import firestore

from .conftest import MissionWatcher, User, wait_until
from .test_rules import as_user, rest

SUM = {
    "name": "sum",
    "objective": "calculate {a}+{b}",
    "params": [{"name": "a", "type": "integer"}, {"name": "b", "type": "integer", "default": 1}],
    "tool": "calculate",
    "inputs": {"expression": "{a}+{b}"},
}


def recipe_of(user: User, recipe_id: str, query: str = "") -> dict[str, Any]:
    response = user.call("GET", f"/recipes/{recipe_id}{query}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def again_if_busy(send: Callable[[], requests.Response]) -> requests.Response:
    """Sends again after a 503, as a client would: a burst on one emulator (its documents
    shared by every request, on two CPUs) may find it too busy for the moment, and a 503
    wrote nothing (an execute's is checked: User.execute)."""
    for _ in range(2):
        answer = send()
        if answer.status_code != 503:
            return answer
    return send()


def run_recipe(user: User, recipe_id: str, **params: Any) -> str:
    """A mission from the recipe, approved and executed; its id."""
    made = again_if_busy(
        lambda: user.call("POST", f"/recipes/{recipe_id}/missions", json={"params": params})
    )
    assert made.status_code == 201, made.text
    mission_id = str(made.json()["mission_id"])
    assert user.call("POST", f"/missions/{mission_id}/approve").status_code == 200
    executed = user.execute(mission_id)
    assert executed.status_code == 202, executed.text
    return mission_id


def finished(user: User, mission_id: str, timeout: float = 60) -> dict[str, Any]:
    def ended() -> bool:
        status = user.call("GET", f"/missions/{mission_id}").json()["status"]
        return status in {"completed", "failed", "cancelled"}

    wait_until(ended, f"mission {mission_id} ending", timeout)
    return dict(user.call("GET", f"/missions/{mission_id}").json())


def tool_stats(user: User, tool: str) -> dict[str, Any]:
    response = user.call("GET", "/stats/tools")
    assert response.status_code == 200, response.text
    return next(t for t in response.json()["tools"] if t["tool"] == tool)


def selection_message(mission: dict[str, Any]) -> str:
    steps = mission["execution_record"]["progress_tracker"]["completed_steps"]
    return str(next(s["message"] for s in steps if s["step_name"] == "tool_selection"))


def test_versions_are_kept_in_firestore_and_only_the_owner_reads_them(
    alice: User, bob: User
) -> None:
    created = alice.call("POST", "/recipes", json=SUM)
    assert created.status_code == 201, created.text
    rid = created.json()["recipe_id"]
    second = alice.call("PUT", f"/recipes/{rid}", json={**SUM, "objective": "add {a} and {b}"})
    assert second.status_code == 200 and second.json()["version"] == 2
    assert recipe_of(alice, rid)["objective"] == "add {a} and {b}"
    assert recipe_of(alice, rid, "?version=1")["objective"] == "calculate {a}+{b}"
    listed = [r["recipe_id"] for r in alice.call("GET", "/recipes").json()["recipes"]]
    assert listed[:4] == [
        "builtin-extract-page",
        "builtin-calculate",
        "builtin-search-web",
        "builtin-research",
    ]
    assert listed[4:] == [rid]
    assert bob.call("GET", f"/recipes/{rid}").status_code == 404
    assert rid not in bob.call("GET", "/recipes").text
    for path in (f"/recipes/{rid}", f"/recipes/{rid}/versions/1"):
        assert requests.get(rest(path), headers=as_user(alice), timeout=10).status_code == 200
        assert requests.get(rest(path), headers=as_user(bob), timeout=10).status_code == 403
    # Counters and statistics sum everyone's missions: no client reads them directly.
    for path in ("/recipe_counts/builtin-calculate~0", "/tool_stats/calculate~calculate~0"):
        assert requests.get(rest(path), headers=as_user(alice), timeout=10).status_code == 403
    mission_id = run_recipe(alice, rid, a=2)
    mission = finished(alice, mission_id)
    assert mission["status"] == "completed"
    assert mission["recipe"] == {"recipe_id": rid, "version": 2, "params": {"a": 2, "b": 1}}
    assert alice.call("DELETE", f"/recipes/{rid}").status_code == 204
    assert alice.call("GET", f"/recipes/{rid}?version=1").status_code == 404
    assert alice.call("GET", f"/missions/{mission_id}").json()["recipe"]["recipe_id"] == rid


def test_usage_counts_every_mission_once_under_concurrency(
    make_user: Callable[[], User],
) -> None:
    """Three users run the built-in calculate recipe ten times each, all at once: every
    use and every outcome is counted, none twice."""
    users = [make_user() for _ in range(3)]
    before = recipe_of(users[0], "builtin-calculate")
    expressions = [f"{n}+1" for n in range(9)] + ["1/0"]  # one of each ten fails

    def run_all(user: User) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(10) as pool:
            ids = list(
                pool.map(lambda e: run_recipe(user, "builtin-calculate", expression=e), expressions)
            )
        return [finished(user, i) for i in ids]

    with ThreadPoolExecutor(3) as pool:
        ended = [m for ms in pool.map(run_all, users) for m in ms]
    assert sorted(m["status"] for m in ended).count("failed") == 3
    after = recipe_of(users[0], "builtin-calculate")
    assert after["uses"] - before["uses"] == 30
    assert after["completed"] - before["completed"] == 27
    assert after["failed"] - before["failed"] == 3


def test_fifty_ratings_at_once_are_all_counted(make_user: Callable[[], User]) -> None:
    users = [make_user() for _ in range(5)]
    missions = []
    for user in users:  # ten each: the per-user limit of missions in flight
        with ThreadPoolExecutor(10) as pool:
            ids = list(pool.map(lambda n, u=user: u.launch(f"calculate {n}*2"), range(10)))
        missions += [(user, i) for i in ids]
    for user, mission_id in missions:
        assert finished(user, mission_id)["status"] == "completed"
    before = tool_stats(users[0], "calculate")["everyone"]
    start = threading.Barrier(50)

    def rate(pair: tuple[User, str]) -> int:
        user, mission_id = pair
        start.wait()
        rating = {"rating": 3}
        path = f"/missions/{mission_id}/feedback"
        return again_if_busy(lambda: user.call("POST", path, json=rating)).status_code

    with ThreadPoolExecutor(50) as pool:
        assert list(pool.map(rate, missions)) == [200] * 50
    after = tool_stats(users[0], "calculate")
    assert after["everyone"]["ratings"] - before["ratings"] == 50
    assert after["mine"]["ratings"] == 10 and after["mine"]["mean_rating"] == 3.0
    assert after["mine"]["missions"] == 10 and after["mine"]["success_rate"] == 1.0
    assert after["mine"]["median_duration_seconds"] is not None
    today = after["mine"]["daily"][-1]
    assert (today["completed"], today["ratings"], today["mean_rating"]) == (10, 10, 3.0)


def test_twenty_ratings_move_the_next_selections_confidence(alice: User) -> None:
    ids: list[str] = []
    for wave in (1, 2):  # ten at a time: the limit of missions in flight
        objectives = [f"calculate {n}*{wave}" for n in range(10)]
        with ThreadPoolExecutor(10) as pool:
            launched = list(pool.map(alice.launch, objectives))
        assert [finished(alice, i)["status"] for i in launched] == ["completed"] * 10
        ids += launched
    for mission_id in ids:
        rated = alice.call("POST", f"/missions/{mission_id}/feedback", json={"rating": 5})
        assert rated.status_code == 200, rated.text
    ratings = tool_stats(alice, "calculate")["adjustments"]
    (calculate,) = [a for a in ratings if a["intent"] == "calculate"]
    after = finished(alice, alice.launch("calculate 8*6"))
    confidence = after["execution_record"]["tool_confidence"]
    # What the ratings changed, as applied to the intent's own confidence (the result stays
    # within 0 to 1). Everyone's ratings count, other tests' too: the emulator is shared.
    base = after["execution_record"]["intent"]["confidence"]
    applied = min(base + calculate["adjustment"], 1.0) - base
    said = re.fullmatch(
        r"Selected calculate \(confidence (\d\.\d\d), ([+-]\d\.\d\d) from (\d+) ratings\)",
        selection_message(after),
    )
    assert said is not None, selection_message(after)
    # Each figure as shown, to two places (the adjustment above was rounded to four).
    assert float(said[1]) == pytest.approx(confidence, abs=0.0051)
    assert float(said[2]) == pytest.approx(applied, abs=0.0051)
    assert int(said[3]) == calculate["ratings"] >= 20
    assert calculate["adjustment"] > 0 and confidence > base
    assert confidence == pytest.approx(min(base + calculate["adjustment"], 1.0), abs=0.0001)


def test_a_schedule_can_name_a_recipe_and_its_missions_count_as_uses(
    alice: User, watch: Callable[[str], MissionWatcher], db: firestore.Client
) -> None:
    before = recipe_of(alice, "builtin-calculate")["uses"]
    body = {
        "name": "yearly sum",
        "cron": "0 0 1 1 *",
        "mission": {"recipe_id": "builtin-calculate", "params": {"expression": "20+22"}},
    }
    created = alice.call("POST", "/schedules", json=body)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["mission"] == {
        "recipe_id": "builtin-calculate",
        "version": 1,
        "params": {"expression": "20+22"},
    }
    bad = alice.call(
        "POST",
        "/schedules",
        json={**body, "mission": {"recipe_id": "builtin-calculate", "params": {}}},
    )
    assert bad.status_code == 422 and "params.expression: Field required" in bad.text
    ran = alice.call("POST", f"/schedules/{schedule['schedule_id']}/run")
    assert ran.status_code == 202, ran.text
    final = watch(ran.json()["mission_id"]).wait_terminal()
    assert final["status"] == "completed"
    assert final["recipe"]["recipe_id"] == "builtin-calculate"
    assert final["execution_record"]["result_summary"].endswith("= 42")
    assert recipe_of(alice, "builtin-calculate")["uses"] == before + 1
    alice.call("DELETE", f"/schedules/{schedule['schedule_id']}")


def test_feedback_waits_for_the_end_and_is_stored_with_the_mission(
    alice: User, watch: Callable[[str], MissionWatcher], db: firestore.Client
) -> None:
    proposed = alice.create("calculate 1+1")["mission_id"]
    early = alice.call("POST", f"/missions/{proposed}/feedback", json={"rating": 4})
    assert early.status_code == 409, early.text
    mission_id = alice.launch("calculate 2+2")
    watch(mission_id).wait_terminal()
    rated = alice.call(
        "POST", f"/missions/{mission_id}/feedback", json={"rating": 4, "comment": "good"}
    )
    assert rated.status_code == 200, rated.text
    stored = db.collection("missions").document(mission_id).get().to_dict() or {}
    assert (stored["feedback"]["rating"], stored["feedback"]["comment"]) == (4, "good")
    again = alice.call("POST", f"/missions/{mission_id}/feedback", json={"rating": 2})
    assert again.json()["feedback"] == {**again.json()["feedback"], "rating": 2, "comment": None}
