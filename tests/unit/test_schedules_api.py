"""The schedules' HTTP routes and the scheduler function, through functions/main.py over the
fakes: statuses, refusals, and what a client reads back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import flask.testing
import pytest

from buddy import bootstrap

from .fakes import FakeClock, FakeScheduleStore
from .test_entrypoints import ALICE, BOB, client, error_of

BODY = {
    "name": "weekday report",
    "cron": "0 9 * * 1-5",
    "timezone": "Europe/Berlin",
    "mission": {"objective": "calculate 6*7"},
}


@pytest.fixture
def app(make_app: Any) -> Iterator[bootstrap.App]:
    with bootstrap.installed(make_app(interval=0)) as instance:
        yield instance


@pytest.fixture
def api(app: bootstrap.App) -> flask.testing.FlaskClient:
    return client("api")


def created(api: flask.testing.FlaskClient, **fields: Any) -> dict[str, Any]:
    response = api.post("/schedules", json={**BODY, **fields}, headers=ALICE)
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def test_a_schedule_is_created_with_its_next_five_fires_in_utc_and_local_time(
    api: flask.testing.FlaskClient,
) -> None:
    schedule = created(api)
    assert (schedule["overlap"], schedule["catchup_window_seconds"]) == ("skip", 0)
    assert (schedule["pause_after_failures"], schedule["paused"]) == (3, False)
    assert schedule["description"] == "At 09:00 on Monday through Friday"
    upcoming = schedule["upcoming"]
    assert len(upcoming) == 5 and upcoming[0]["utc"] == schedule["next_fire_at"]
    assert all(u["local"].endswith("+01:00") and "T09:00:00" in u["local"] for u in upcoming)
    assert schedule["mission"]["objective"] == "calculate 6*7"
    assert schedule["mission"]["budget_usd"] == 1.0  # the create body's defaults, stored
    listed = api.get("/schedules", headers=ALICE).get_json()["schedules"]
    assert [s["schedule_id"] for s in listed] == [schedule["schedule_id"]]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "0 9 * * 1-5 2026"}, "cron: '0 9 * * 1-5 2026' has 6 fields"),
        ({"cron": "every day"}, "cron: 'every day' has 2 fields"),
        ({"timezone": "CEST"}, "timezone: 'CEST' is not an IANA time zone"),
        ({"overlap": "queue"}, "overlap"),
        ({"catchup_window_seconds": -1}, "catchup_window_seconds"),
        ({"pause_after_failures": 1.5}, "pause_after_failures"),
        ({"name": " "}, "name"),
        ({"mission": {"objective": "x", "budget_usd": 0}}, "mission.budget_usd"),
        ({"mission": {"objective": "x", "evil": 1}}, "mission.evil"),
        ({"every": "minute"}, "every"),
    ],
)
def test_a_bad_schedule_is_a_422_naming_what_is_wrong_and_stores_nothing(
    api: flask.testing.FlaskClient,
    schedule_store: FakeScheduleStore,
    fields: dict[str, Any],
    message: str,
) -> None:
    response = api.post("/schedules", json={**BODY, **fields}, headers=ALICE)
    assert error_of(response) == (422, "validation_failed")
    assert message in response.get_json()["error"]["message"]
    assert schedule_store.schedules == {}


def test_another_users_schedule_is_not_found_on_every_route(
    api: flask.testing.FlaskClient,
) -> None:
    schedule_id = created(api)["schedule_id"]
    path = f"/schedules/{schedule_id}"
    for method, route, body in [
        ("GET", path, None),
        ("PATCH", path, {"name": "mine"}),
        ("POST", f"{path}/pause", None),
        ("POST", f"{path}/resume", None),
        ("POST", f"{path}/run", None),
        ("DELETE", path, None),
    ]:
        response = api.open(route, method=method, json=body, headers=BOB)
        assert error_of(response) == (404, "not_found"), (method, route)
    assert api.get(path, headers=ALICE).status_code == 200
    assert error_of(api.get("/schedules/sch_nope", headers=ALICE)) == (404, "not_found")
    assert error_of(api.get("/schedules/a%0Ab", headers=ALICE)) == (404, "not_found")


def test_pause_resume_edit_run_and_delete(api: flask.testing.FlaskClient, clock: FakeClock) -> None:
    schedule_id = created(api)["schedule_id"]
    path = f"/schedules/{schedule_id}"
    paused = api.post(f"{path}/pause", headers=ALICE).get_json()
    assert (paused["paused"], paused["next_fire_at"], paused["upcoming"]) == (True, None, [])
    assert paused["pause_reason"] == "Paused by its owner"
    resumed = api.post(f"{path}/resume", headers=ALICE).get_json()
    assert resumed["paused"] is False and len(resumed["upcoming"]) == 5
    edited = api.patch(path, json={"cron": "*/5 * * * *", "timezone": "UTC"}, headers=ALICE)
    assert edited.status_code == 200
    assert edited.get_json()["description"] == "Every fifth minute of every hour"
    bad = api.patch(path, json={"cron": None}, headers=ALICE)
    assert error_of(bad) == (422, "validation_failed")
    ran = api.post(f"{path}/run", headers=ALICE)
    assert ran.status_code == 202 and ran.get_json()["status"] == "queued"
    mission_id = ran.get_json()["mission_id"]
    listed = api.get(f"/missions?schedule_id={schedule_id}", headers=ALICE).get_json()
    assert [m["mission_id"] for m in listed["missions"]] == [mission_id]
    assert listed["missions"][0]["schedule_id"] == schedule_id
    deleted = api.delete(path, headers=ALICE)
    assert deleted.status_code == 204 and deleted.data == b""
    assert error_of(api.get(path, headers=ALICE)) == (404, "not_found")
    assert api.get(f"/missions/{mission_id}", headers=ALICE).status_code == 200  # it stays


def test_the_scheduler_function_fires_what_is_due_and_says_what_it_did(
    api: flask.testing.FlaskClient, clock: FakeClock
) -> None:
    schedule = created(api, cron="* * * * *", timezone="UTC")
    scheduler = client("scheduler")
    assert scheduler.post("/").get_json() == {
        "ticked": {"due": 0, "fired": 0, "skipped": 0, "failed": 0}
    }
    clock.advance(70)
    assert scheduler.post("/").get_json()["ticked"]["fired"] == 1
    missions = api.get(f"/missions?schedule_id={schedule['schedule_id']}", headers=ALICE)
    (mission,) = missions.get_json()["missions"]
    assert mission["status"] == "queued" and mission["scheduled_for"] is not None
    shown = api.get(f"/schedules/{schedule['schedule_id']}", headers=ALICE).get_json()
    assert shown["history"][0]["mission_id"] == mission["mission_id"]
    assert shown["last_fire_at"] == mission["scheduled_for"]
    clock.advance(timedelta(minutes=1).total_seconds())
    assert scheduler.post("/").get_json()["ticked"]["skipped"] == 1  # the last one is queued


def test_a_bad_schedule_id_filter_is_a_422(api: flask.testing.FlaskClient) -> None:
    response = api.get("/missions?schedule_id=a/b", headers=ALICE)
    assert error_of(response) == (422, "validation_failed")


@pytest.mark.parametrize(
    ("value", "status"), [(3600.0, 201), (3600, 201), (3600.5, 422), ("3600", 422)]
)
def test_a_whole_number_is_an_integer_however_it_is_written(
    api: flask.testing.FlaskClient, value: Any, status: int
) -> None:
    """JSON (and JSON Schema) count 3600.0 as the integer 3600; 3600.5 or "3600" are not."""
    response = api.post("/schedules", json={**BODY, "catchup_window_seconds": value}, headers=ALICE)
    assert response.status_code == status, response.get_json()
    if status == 201:
        assert response.get_json()["catchup_window_seconds"] == 3600


def test_run_now_over_the_active_limit_is_a_429_and_the_history_says_why(
    make_app: Any,
) -> None:
    with bootstrap.installed(make_app(max_active_missions=1, interval=0)):
        api = client("api")
        busy = api.post("/missions", json={"objective": "calculate 1"}, headers=ALICE)
        busy_id = busy.get_json()["mission_id"]
        api.post(f"/missions/{busy_id}/approve", headers=ALICE)
        assert api.post(f"/missions/{busy_id}/execute", headers=ALICE).status_code == 202
        schedule_id = created(api)["schedule_id"]
        response = api.post(f"/schedules/{schedule_id}/run", headers=ALICE)
        assert error_of(response) == (429, "too_many_active_missions")
        (fire,) = api.get(f"/schedules/{schedule_id}", headers=ALICE).get_json()["history"]
        mission = api.get(f"/missions/{fire['mission_id']}", headers=ALICE).get_json()
        assert mission["status"] == "cancelled"
        assert fire["outcome"] == "cancelled"
