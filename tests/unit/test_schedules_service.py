"""Schedules as their owner and the ticks see them, over the fakes: the real service, runner
and composition root (a fired mission runs on the real runner and its end is counted)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from buddy import bootstrap
from buddy.domain.mission import Status
from buddy.errors import ScheduleNotFound, TooManySchedules, ValidationFailed
from buddy.schemas import CreateMission, CreateSchedule
from buddy.tools import ToolError, ToolRegistry
from buddy.tools.calculate import CalculateTool

from .fakes import FakeClock, FakeMissionStore, FakePublisher, FakeScheduleStore, FakeTool

HOURLY = {"name": "hourly sums", "cron": "0 * * * *", "mission": {"objective": "calculate 1+2"}}


@pytest.fixture
def app(make_app: Callable[..., bootstrap.App]) -> bootstrap.App:
    return make_app(interval=0)


def schedule_of(body: dict[str, Any]) -> CreateSchedule:
    return CreateSchedule.model_validate(body)


def at_next_fire(clock: FakeClock, app: bootstrap.App, schedule_id: str) -> datetime:
    """Moves the clock 10 s past the schedule's next fire; returns that fire."""
    fire_at = app.schedules.get("alice", schedule_id).next_fire_at
    assert fire_at is not None
    clock.now = fire_at + timedelta(seconds=10)
    return fire_at


# ---- the owner's ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "0 9 * *"}, "4 fields; give five"),
        ({"cron": "0 25 * * *"}, "Bad hour"),
        ({"timezone": "Europe/Atlantis"}, "not an IANA time zone"),
        ({"mission": {"objective": "calculate 1", "tool": "nope"}}, "Unknown tool"),
        (
            {"mission": {"objective": "x", "tool": "calculate", "inputs": {"url": "y"}}},
            "inputs don't fit",
        ),
    ],
)
def test_a_schedule_it_could_not_run_is_refused_and_nothing_stored(
    app: bootstrap.App, schedule_store: FakeScheduleStore, fields: dict, message: str
) -> None:
    with pytest.raises(ValidationFailed, match=message):
        app.schedules.create("alice", schedule_of({**HOURLY, **fields}))
    assert schedule_store.schedules == {}


def test_an_owner_has_at_most_max_schedules(make_app: Callable[..., bootstrap.App]) -> None:
    app = make_app(max_schedules=2)
    for _ in range(2):
        app.schedules.create("alice", schedule_of(HOURLY))
    with pytest.raises(TooManySchedules, match="already have 2 schedules"):
        app.schedules.create("alice", schedule_of(HOURLY))
    app.schedules.create("bob", schedule_of(HOURLY))  # another owner's count is their own


def test_another_users_schedule_is_not_found_for_every_action(app: bootstrap.App) -> None:
    schedule_id = app.schedules.create("alice", schedule_of(HOURLY)).schedule_id
    service = app.schedules
    actions: list[Callable[[], Any]] = [
        lambda: service.get("bob", schedule_id),
        lambda: service.modify("bob", schedule_id, {"name": "mine now"}),
        lambda: service.pause("bob", schedule_id),
        lambda: service.resume("bob", schedule_id),
        lambda: service.run_now("bob", schedule_id),
        lambda: service.delete("bob", schedule_id),
    ]
    for action in actions:
        with pytest.raises(ScheduleNotFound):
            action()
    assert service.get("alice", schedule_id).name == "hourly sums"
    assert service.schedules_of("bob") == []


def test_the_view_shows_the_cron_in_words_and_the_next_fires_in_both_zones(
    app: bootstrap.App, clock: FakeClock
) -> None:
    clock.now = datetime(2026, 12, 4, 17, tzinfo=UTC)  # a Friday
    weekdays = {**HOURLY, "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}
    view = app.schedules.view(app.schedules.create("alice", schedule_of(weekdays)))
    assert view["description"] == "At 09:00 on Monday through Friday"
    assert [u["local"] for u in view["upcoming"]][:2] == [
        "2026-12-07T09:00:00+01:00",
        "2026-12-08T09:00:00+01:00",
    ]
    assert view["upcoming"][0]["utc"] == datetime(2026, 12, 7, 8, tzinfo=UTC)
    assert len(view["upcoming"]) == 5


def test_an_edit_recomputes_the_next_fire_and_a_bad_one_changes_nothing(
    app: bootstrap.App, clock: FakeClock
) -> None:
    schedule = app.schedules.create("alice", schedule_of(HOURLY))
    edited = app.schedules.modify("alice", schedule.schedule_id, {"cron": "30 */2 * * *"})
    assert edited.next_fire_at == datetime(2025, 1, 1, 12, 30, tzinfo=UTC)
    with pytest.raises(ValidationFailed, match="Bad minute"):
        app.schedules.modify("alice", schedule.schedule_id, {"cron": "99 * * * *"})
    assert app.schedules.get("alice", schedule.schedule_id) == edited


# ---- ticks and their missions -----------------------------------------------------------------


def test_a_tick_fires_an_approved_queued_mission_once_and_it_runs_to_completion(
    app: bootstrap.App, clock: FakeClock, store: FakeMissionStore, publisher: FakePublisher
) -> None:
    schedule_id = app.schedules.create("alice", schedule_of(HOURLY)).schedule_id
    fire_at = at_next_fire(clock, app, schedule_id)
    assert app.schedules.tick() == {"due": 1, "fired": 1, "skipped": 0, "failed": 0}
    assert app.schedules.tick()["due"] == 0  # a second tick in the same minute: nothing due
    (mission,) = app.missions.missions_of("alice", None, 10, schedule_id)
    assert (mission.status, mission.schedule_id, mission.scheduled_for) == (
        Status.QUEUED,
        schedule_id,
        fire_at,
    )
    assert mission.approved_at is not None and publisher.published == [mission.mission_id]
    assert store.event_types(mission.mission_id) == [
        "mission_created",
        "mission_approved",
        "mission_queued",
    ]
    assert app.runner.run(mission.mission_id).value == "completed"
    schedule = app.schedules.get("alice", schedule_id)
    assert schedule.history[0].outcome == Status.COMPLETED
    assert schedule.next_fire_at == fire_at + timedelta(hours=1)
    assert (schedule.last_mission_id, schedule.last_fire_at) == (mission.mission_id, fire_at)


def test_three_failed_missions_pause_the_schedule_and_it_says_why(
    make_app: Callable[..., bootstrap.App], clock: FakeClock
) -> None:
    def broken() -> None:
        raise ToolError("the site is down")

    app = make_app(ToolRegistry([CalculateTool(), FakeTool(on_run=broken)]), interval=0)
    body = {**HOURLY, "mission": {"objective": "calculate 1+2", "tool": "fake"}}
    schedule_id = app.schedules.create("alice", schedule_of(body)).schedule_id
    for _ in range(3):
        at_next_fire(clock, app, schedule_id)
        app.schedules.tick()
        last = app.schedules.get("alice", schedule_id).last_mission_id
        assert last is not None and app.runner.run(last).value == "failed"
    schedule = app.schedules.get("alice", schedule_id)
    assert schedule.paused and schedule.consecutive_failures == 3
    assert "3 failed missions in a row" in str(schedule.pause_reason)
    clock.advance(3 * 3600)
    assert app.schedules.tick()["due"] == 0
    resumed = app.schedules.resume("alice", schedule_id)
    assert (resumed.paused, resumed.consecutive_failures) == (False, 0)


def test_a_lost_end_report_is_counted_by_the_next_tick(
    app: bootstrap.App, clock: FakeClock, store: FakeMissionStore
) -> None:
    schedule_id = app.schedules.create("alice", schedule_of(HOURLY)).schedule_id
    at_next_fire(clock, app, schedule_id)
    app.schedules.tick()
    store.ended.clear()  # the end is written, but its report to the schedule is lost
    last = app.schedules.get("alice", schedule_id).last_mission_id
    assert last is not None
    app.missions.cancel("alice", last)
    assert app.schedules.get("alice", schedule_id).history[0].outcome is None
    at_next_fire(clock, app, schedule_id)
    app.schedules.tick()
    history = app.schedules.get("alice", schedule_id).history
    assert [e.outcome for e in history] == [None, Status.CANCELLED]


def test_overlap_skip_records_the_fire_while_the_last_mission_is_queued(
    app: bootstrap.App, clock: FakeClock
) -> None:
    schedule_id = app.schedules.create("alice", schedule_of(HOURLY)).schedule_id
    at_next_fire(clock, app, schedule_id)
    app.schedules.tick()
    at_next_fire(clock, app, schedule_id)
    assert app.schedules.tick()["skipped"] == 1
    latest = app.schedules.get("alice", schedule_id).history[0]
    assert latest.status == "skipped" and "has not finished (overlap: skip)" in str(latest.reason)
    assert len(app.missions.missions_of("alice", None, 10, schedule_id)) == 1


def test_a_fire_over_the_active_limit_ends_its_mission_saying_so(
    make_app: Callable[..., bootstrap.App], clock: FakeClock, publisher: FakePublisher
) -> None:
    app = make_app(max_active_missions=1, interval=0)
    busy = app.missions.create("alice", CreateMission(objective="calculate 9*9")).mission_id
    app.missions.approve("alice", busy)
    app.missions.execute("alice", busy)
    schedule_id = app.schedules.create("alice", schedule_of(HOURLY)).schedule_id
    at_next_fire(clock, app, schedule_id)
    app.schedules.tick()
    (mission,) = app.missions.missions_of("alice", None, 10, schedule_id)
    assert mission.status == Status.CANCELLED
    assert (
        "already had 1 missions queued or running"
        in app.missions.events("alice", mission.mission_id, 0)[-1].message
    )
    assert publisher.published == [busy]  # the refused one was never sent to a worker


def test_a_publish_that_fails_leaves_the_fire_queued_for_the_sweeper(
    app: bootstrap.App, clock: FakeClock, publisher: FakePublisher
) -> None:
    schedule_id = app.schedules.create("alice", schedule_of(HOURLY)).schedule_id
    at_next_fire(clock, app, schedule_id)
    publisher.down = True
    assert app.schedules.tick()["fired"] == 1
    (mission,) = app.missions.missions_of("alice", None, 10, schedule_id)
    assert mission.status == Status.QUEUED
    publisher.down = False
    clock.advance(600)  # past BUDDY_QUEUE_TIMEOUT_SECONDS: the sweeper sends it
    assert app.recovery.sweep()["republished"] == 1
    assert publisher.published == [mission.mission_id]


def test_run_now_fires_outside_the_cron_and_delete_keeps_the_missions(
    app: bootstrap.App, clock: FakeClock, schedule_store: FakeScheduleStore
) -> None:
    schedule_id = app.schedules.create("alice", schedule_of(HOURLY)).schedule_id
    first = app.schedules.run_now("alice", schedule_id)
    clock.advance(1)
    second = app.schedules.run_now("alice", schedule_id)  # overlap rules don't hold it back
    listed = app.missions.missions_of("alice", None, 10, schedule_id)
    assert [m.mission_id for m in listed] == [second.mission_id, first.mission_id]
    app.schedules.delete("alice", schedule_id)
    assert schedule_store.schedules == {}
    assert len(app.missions.missions_of("alice", None, 10, schedule_id)) == 2
    app.runner.run(first.mission_id)  # its end finds no schedule to count it: no error
    assert app.missions.get("alice", first.mission_id).status == Status.COMPLETED


def test_a_schedule_that_cannot_count_an_end_never_fails_the_write_that_ended_it(
    app: bootstrap.App,
    clock: FakeClock,
    schedule_store: FakeScheduleStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schedule_id = app.schedules.create("alice", schedule_of(HOURLY)).schedule_id
    at_next_fire(clock, app, schedule_id)
    app.schedules.tick()
    last = app.schedules.get("alice", schedule_id).last_mission_id
    assert last is not None

    def broken(*_: Any) -> None:
        raise RuntimeError("a corrupt schedule document")

    monkeypatch.setattr(schedule_store, "update", broken)
    assert app.runner.run(last).value == "completed"
    assert app.missions.get("alice", last).status == Status.COMPLETED
