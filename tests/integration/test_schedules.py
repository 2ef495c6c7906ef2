"""Recurring missions against the real emulators: the routes and their refusals, ticks racing
on one fire, a `* * * * *` schedule firing on its own (the stack ticks as the local stack
does), run-now, the failure count, and the rules."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from google.cloud import firestore

from .conftest import MissionWatcher, Stack, User, wait_until
from .test_rules import as_user, rest

BODY = {
    "name": "every minute",
    "cron": "* * * * *",
    "mission": {"objective": "calculate 6*7"},
}


def created(user: User, **fields: Any) -> dict[str, Any]:
    response = user.call("POST", "/schedules", json={**BODY, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def missions_of(user: User, schedule_id: str) -> list[dict[str, Any]]:
    response = user.call("GET", f"/missions?schedule_id={schedule_id}")
    assert response.status_code == 200, response.text
    return list(response.json()["missions"])


def made_due(db: firestore.Client, schedule_id: str) -> datetime:
    """Moves the schedule's next fire to a minute that has just passed; returns it."""
    fire_at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    db.collection("schedules").document(schedule_id).update({"next_fire_at": fire_at})
    return fire_at


@pytest.fixture
def schedules_deleted(alice: User) -> Any:
    yield
    for schedule in alice.call("GET", "/schedules").json()["schedules"]:
        alice.call("DELETE", f"/schedules/{schedule['schedule_id']}")


pytestmark = pytest.mark.usefixtures("schedules_deleted")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "*/0 * * * *"}, "Bad minute"),
        ({"cron": "0 9 * * 1-5 *"}, "has 6 fields"),
        ({"timezone": "Berlin"}, "not an IANA time zone"),
        ({"overlap": "never"}, "overlap"),
        ({"mission": {"objective": "calculate 1", "tool": "no_such"}}, "Unknown tool"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_schedule_is_a_422_and_nothing_is_stored(
    alice: User, fields: dict[str, Any], message: str
) -> None:
    response = alice.call("POST", "/schedules", json={**BODY, **fields})
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]
    assert alice.call("GET", "/schedules").json()["schedules"] == []


def test_another_users_schedule_is_not_found_and_the_rules_let_only_its_owner_read_it(
    alice: User, bob: User
) -> None:
    schedule_id = created(alice)["schedule_id"]
    for method, suffix in [("GET", ""), ("POST", "/pause"), ("POST", "/run"), ("DELETE", "")]:
        response = bob.call(method, f"/schedules/{schedule_id}{suffix}")
        assert response.status_code == 404, (method, suffix, response.text)
    assert bob.call("PATCH", f"/schedules/{schedule_id}", json={"name": "x"}).status_code == 404
    assert missions_of(bob, schedule_id) == []
    path = f"/schedules/{schedule_id}"
    assert requests.get(rest(path), headers=as_user(alice), timeout=10).status_code == 200
    assert requests.get(rest(path), headers=as_user(bob), timeout=10).status_code == 403
    write = requests.patch(
        rest(path) + "?updateMask.fieldPaths=paused",
        json={"fields": {"paused": {"booleanValue": True}}},
        headers=as_user(alice),
        timeout=10,
    )
    assert write.status_code == 403  # its owner reads it; nobody writes it but the API


def test_racing_ticks_create_one_mission_per_fire(
    alice: User, db: firestore.Client, stack: Stack
) -> None:
    """Eight ticks at once (and the stack's own ticker) on one due fire: one mission. (A
    yearly cron, made due by hand: no other fire comes while the test runs.)"""
    schedule_id = created(alice, cron="0 0 1 1 *")["schedule_id"]
    fire_at = made_due(db, schedule_id)
    answers: list[int] = []

    def tick() -> None:
        answers.append(requests.post(stack.scheduler_url, timeout=30).status_code)

    racers = [threading.Thread(target=tick) for _ in range(8)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert answers == [200] * 8
    wait_until(lambda: len(missions_of(alice, schedule_id)) > 0, "the fire's mission")
    (mission,) = missions_of(alice, schedule_id)  # the background ticker raced them too
    assert mission["scheduled_for"] == fire_at.isoformat().replace("+00:00", "Z")
    history = alice.call("GET", f"/schedules/{schedule_id}").json()["history"]
    assert [(h["status"], h["mission_id"]) for h in history][-1] == (
        "fired",
        mission["mission_id"],
    )


def test_an_every_minute_schedule_fires_on_its_own_and_its_mission_completes(
    alice: User, watch: Any
) -> None:
    schedule = created(alice)
    next_fire = datetime.fromisoformat(schedule["next_fire_at"].replace("Z", "+00:00"))
    wait = (next_fire - datetime.now(UTC)).total_seconds()
    assert 0 < wait <= 60
    wait_until(
        lambda: len(missions_of(alice, schedule["schedule_id"])) > 0,
        "a mission fired by the ticker",
        timeout=wait + 30,
    )
    (mission,) = missions_of(alice, schedule["schedule_id"])
    watcher: MissionWatcher = watch(mission["mission_id"])
    final = watcher.wait_terminal()
    assert final["status"] == "completed"
    events = alice.call("GET", f"/missions/{mission['mission_id']}/events").json()["events"]
    assert events[0]["message"].startswith("Mission created by schedule 'every minute'")
    wait_until(
        lambda: (
            alice.call("GET", f"/schedules/{schedule['schedule_id']}").json()["history"][0][
                "outcome"
            ]
            == "completed"
        ),
        "the schedule counting its mission's end",
    )


def test_run_now_and_failures_in_a_row_pause_the_schedule(
    alice: User, watch: Any, site: Any
) -> None:
    """Two fires on a page that is not there fail their missions; with pause_after_failures
    2 the schedule pauses itself, saying why."""
    body = {
        "objective": f"extract {site.url('/gone-for-good')}",
        "scope": {"allowed_domains": ["127.0.0.1"]},
    }
    schedule = created(alice, cron="0 0 1 1 *", mission=body, pause_after_failures=2)
    schedule_id = schedule["schedule_id"]
    for _ in range(2):
        ran = alice.call("POST", f"/schedules/{schedule_id}/run")
        assert ran.status_code == 202, ran.text
        assert watch(ran.json()["mission_id"]).wait_terminal()["status"] == "failed"
    wait_until(
        lambda: alice.call("GET", f"/schedules/{schedule_id}").json()["paused"],
        "the schedule pausing after two failures",
    )
    shown = alice.call("GET", f"/schedules/{schedule_id}").json()
    assert "2 failed missions in a row" in shown["pause_reason"]
    assert shown["upcoming"] == [] and shown["next_fire_at"] is None
    assert [m["status"] for m in missions_of(alice, schedule_id)] == ["failed", "failed"]
    resumed = alice.call("POST", f"/schedules/{schedule_id}/resume").json()
    assert resumed["paused"] is False and resumed["consecutive_failures"] == 0
    assert alice.call("DELETE", f"/schedules/{schedule_id}").status_code == 204
    assert len(missions_of(alice, schedule_id)) == 2  # its missions stay
