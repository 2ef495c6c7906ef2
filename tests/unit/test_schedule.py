"""When schedules fire: cron in a time zone across the DST changes, ticks, catch-up, overlap
and pausing after failures — pure domain, time given by the test."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from buddy.domain import schedule as schedules
from buddy.domain.mission import Status
from buddy.domain.schedule import Cron, CronError, Schedule


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


def fires(cron: Cron, start: datetime, count: int) -> list[datetime]:
    return list(itertools.islice(cron.after(start), count))


def made(cron: str = "0 * * * *", now: datetime | None = None, **fields: object) -> Schedule:
    return schedules.new(
        "sch_1",
        "alice",
        now or utc(2026, 6, 1, 12, 0, 30),
        name="hourly",
        cron=cron,
        timezone=str(fields.pop("timezone", "UTC")),
        mission={"objective": "calculate 1+1"},
        **fields,  # type: ignore[arg-type]
    )


# ---- cron and time zones ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "zone", "message"),
    [
        ("* * * * * *", "UTC", "6 fields; give five"),
        ("@daily", "UTC", "1 fields; give five"),
        ("61 * * * *", "UTC", "Bad minute"),
        ("0 24 * * *", "UTC", "Bad hour"),
        ("0 0 30 2 *", "UTC", "Bad day-of-month"),
        ("*/0 * * * *", "UTC", "Bad minute"),
        ("0 9 * * 1-5", "Mars/Olympus", "not an IANA time zone"),
        ("0 9 * * 1-5", "../../etc/passwd", "not an IANA time zone"),
        ("0 9 * * 1-5", "", "not an IANA time zone"),
    ],
)
def test_a_cron_or_zone_it_cannot_use_is_refused_saying_why(
    cron: str, zone: str, message: str
) -> None:
    with pytest.raises(CronError, match=message):
        Cron(cron, zone)


def test_a_weekday_schedule_in_berlin_fires_at_nine_local_on_weekdays() -> None:
    cron = Cron("0 9 * * 1-5", "Europe/Berlin")
    friday_evening = utc(2026, 12, 4, 17, 0)
    local = [f.astimezone(cron.zone) for f in fires(cron, friday_evening, 5)]
    assert [(d.strftime("%a"), d.hour, d.minute) for d in local] == [
        ("Mon", 9, 0),
        ("Tue", 9, 0),
        ("Wed", 9, 0),
        ("Thu", 9, 0),
        ("Fri", 9, 0),
    ]
    assert fires(cron, friday_evening, 1) == [utc(2026, 12, 7, 8, 0)]  # CET is UTC+1
    assert cron.description == "At 09:00 on Monday through Friday"


# Europe/Berlin: 2026-03-29 02:00 CET → 03:00 CEST; 2026-10-25 03:00 CEST → 02:00 CET.
# America/New_York: 2026-03-08 02:00 EST → 03:00 EDT; 2026-11-01 02:00 EDT → 01:00 EST.
@pytest.mark.parametrize(
    ("cron", "zone", "start", "expected"),
    [
        # A daily time in the skipped hour fires once, at the first instant after the gap.
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 3, 27, 12),
            [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)],
        ),
        (
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 6, 12),
            [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)],
        ),
        # Every quarter hour of the skipped hour: all four are the same instant, fired once.
        (
            "*/15 2 * * *",
            "Europe/Berlin",
            utc(2026, 3, 28, 12),
            [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0), utc(2026, 3, 30, 0, 15)],
        ),
        # A daily time in the repeated hour fires once, at its first occurrence.
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 10, 23, 12),
            [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
        (
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 30, 12),
            [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],
        ),
        # Hourly: the repeated hour has no fire of its own (02:00 CET is 02:00 CEST's twin).
        (
            "0 * * * *",
            "Europe/Berlin",
            utc(2026, 10, 24, 22, 30),
            [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)],
        ),
        # Hourly over the gap: 02:00 does not exist and is 03:00's instant, fired once.
        (
            "0 * * * *",
            "America/New_York",
            utc(2026, 3, 8, 5, 30),
            [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)],
        ),
    ],
    ids=[
        "berlin-spring-daily",
        "new-york-spring-daily",
        "berlin-spring-quarters",
        "berlin-fall-daily",
        "new-york-fall-daily",
        "berlin-fall-hourly",
        "new-york-spring-hourly",
    ],
)
def test_dst_changes_neither_lose_nor_double_a_fire(
    cron: str, zone: str, start: datetime, expected: list[datetime]
) -> None:
    assert fires(Cron(cron, zone), start, len(expected)) == expected


# The instants each zone changes its clocks in 2026 (Lord Howe moves them by half an hour).
CHANGES = {
    "Europe/Berlin": [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)],
    "America/New_York": [utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)],
    "Australia/Lord_Howe": [utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30)],
    "UTC": [utc(2026, 6, 1)],
}


@pytest.mark.parametrize("zone", sorted(CHANGES))
@pytest.mark.parametrize("cron", ["*/15 * * * *", "30 2 * * *", "0 1,2,3 * * *", "5 0 * * 0"])
def test_the_latest_fire_and_the_next_agree_around_every_change_of_the_year(
    cron: str, zone: str
) -> None:
    """Walking forward and walking back name the same fires, strictly increasing, across
    both changes."""
    parsed = Cron(cron, zone)
    for change in CHANGES[zone]:
        found = fires(parsed, change - timedelta(hours=5), 40 if "/" in cron else 12)
        assert found == sorted(set(found))
        for earlier, later in itertools.pairwise(found):
            assert parsed.next_after(earlier) == later
            assert parsed.latest_until(later - timedelta(seconds=1)) == earlier
            assert parsed.latest_until(earlier) == earlier


def test_a_fire_creates_a_mission_whose_id_every_tick_derives_alike() -> None:
    """Two ticks that see the same fire name the same mission; another fire, another id."""
    first = schedules.mission_id_for("sch_1", utc(2026, 6, 1, 13))
    assert first == schedules.mission_id_for("sch_1", utc(2026, 6, 1, 13))
    assert first != schedules.mission_id_for("sch_1", utc(2026, 6, 1, 14))
    assert first != schedules.mission_id_for("sch_2", utc(2026, 6, 1, 13))
    assert first.startswith("s_") and len(first) <= 64


# ---- ticks ------------------------------------------------------------------------------------


def test_a_schedule_fires_when_due_once_and_moves_its_next_fire_on() -> None:
    schedule = made()
    assert schedule.next_fire_at == utc(2026, 6, 1, 13)
    early = schedules.due(schedule, utc(2026, 6, 1, 12, 59, 59), None)
    assert (early.fire_at, early.schedule) == (None, schedule)

    tick = schedules.due(schedule, utc(2026, 6, 1, 13, 0, 10), None)
    assert tick.fire_at == utc(2026, 6, 1, 13)
    assert tick.mission_id == schedules.mission_id_for("sch_1", utc(2026, 6, 1, 13))
    after = tick.schedule
    assert after.next_fire_at == utc(2026, 6, 1, 14)
    assert (after.last_fire_at, after.last_mission_id) == (tick.fire_at, tick.mission_id)
    assert [(e.status, e.mission_id) for e in after.history] == [("fired", tick.mission_id)]
    # A racing tick that reads the schedule as the first left it fires nothing more.
    assert schedules.due(after, utc(2026, 6, 1, 13, 0, 11), Status.QUEUED).fire_at is None


def test_fires_missed_while_the_ticker_was_down_are_skipped_without_a_catchup_window() -> None:
    schedule = made()  # hourly, next at 13:00
    tick = schedules.due(schedule, utc(2026, 6, 1, 16, 20), None)
    assert tick.fire_at is None
    assert tick.schedule.next_fire_at == utc(2026, 6, 1, 17)
    latest, earlier = tick.schedule.history
    assert (latest.fire_at, latest.status) == (utc(2026, 6, 1, 16), "skipped")
    assert "past the catch-up window (0 s)" in (latest.reason or "")
    assert (earlier.fire_at, earlier.reason) == (
        utc(2026, 6, 1, 15),
        "missed 3 fires while the scheduler was not running",
    )


def test_within_the_catchup_window_the_latest_missed_fire_runs_once() -> None:
    schedule = made(catchup_window_seconds=3600)
    tick = schedules.due(schedule, utc(2026, 6, 1, 16, 20), None)
    assert tick.fire_at == utc(2026, 6, 1, 16)
    assert [e.status for e in tick.schedule.history] == ["fired", "skipped"]
    again = schedules.due(tick.schedule, utc(2026, 6, 1, 16, 21), Status.RUNNING)
    assert again.fire_at is None  # caught up: 17:00 is next


def test_a_long_outage_of_a_busy_cron_is_counted_without_listing_every_fire() -> None:
    schedule = made("* * * * *")
    tick = schedules.due(schedule, utc(2026, 6, 20), None)
    assert tick.schedule.history[1].reason == (
        "missed more than 999 fires while the scheduler was not running"
    )
    assert tick.schedule.next_fire_at == utc(2026, 6, 20, 0, 1)


@pytest.mark.parametrize("previous", [Status.QUEUED, Status.RUNNING, Status.PAUSED])
def test_overlap_skip_records_a_fire_while_the_last_mission_has_not_finished(
    previous: Status,
) -> None:
    first = schedules.due(made(), utc(2026, 6, 1, 13), None).schedule
    tick = schedules.due(first, utc(2026, 6, 1, 14), previous)
    assert tick.fire_at is None
    entry = tick.schedule.history[0]
    assert entry.status == "skipped" and f"previous mission {first.last_mission_id} " in str(
        entry.reason
    )
    assert tick.schedule.next_fire_at == utc(2026, 6, 1, 15)


def test_overlap_allow_fires_while_the_last_mission_runs() -> None:
    first = schedules.due(made(overlap="allow"), utc(2026, 6, 1, 13), None).schedule
    tick = schedules.due(first, utc(2026, 6, 1, 14), Status.RUNNING)
    assert tick.fire_at == utc(2026, 6, 1, 14)


def test_overlap_buffer_one_keeps_the_newest_fire_until_the_last_mission_ends() -> None:
    first = schedules.due(made(overlap="buffer_one"), utc(2026, 6, 1, 13), None).schedule
    at_two = schedules.due(first, utc(2026, 6, 1, 14), Status.RUNNING)
    assert at_two.fire_at is None and at_two.schedule.buffered_fire_at == utc(2026, 6, 1, 14)
    at_three = schedules.due(at_two.schedule, utc(2026, 6, 1, 15), Status.RUNNING)
    assert at_three.schedule.buffered_fire_at == utc(2026, 6, 1, 15)
    statuses = {e.fire_at.hour: e.status for e in at_three.schedule.history}
    assert statuses == {15: "buffered", 14: "skipped", 13: "fired"}
    # Still running at the next tick: it waits. Once it ended, the buffered fire runs.
    waiting = schedules.due(at_three.schedule, utc(2026, 6, 1, 15, 10), Status.RUNNING)
    assert waiting.fire_at is None
    ran = schedules.due(waiting.schedule, utc(2026, 6, 1, 15, 20), Status.COMPLETED)
    assert ran.fire_at == utc(2026, 6, 1, 15) and ran.schedule.buffered_fire_at is None
    assert ran.schedule.history[0].status == "fired"
    assert ran.schedule.next_fire_at == utc(2026, 6, 1, 16)


def test_run_now_fires_at_once_whatever_the_overlap_rule() -> None:
    first = schedules.due(made(), utc(2026, 6, 1, 13), None).schedule
    tick = schedules.run_now(first, utc(2026, 6, 1, 13, 30, 5, 123))
    assert tick.fire_at == utc(2026, 6, 1, 13, 30, 5, 123)
    again = schedules.run_now(tick.schedule, utc(2026, 6, 1, 13, 30, 5, 124))
    assert again.mission_id != tick.mission_id
    assert tick.schedule.next_fire_at == utc(2026, 6, 1, 14)  # the cron carries on


def test_the_history_keeps_the_last_twenty_fires_newest_first() -> None:
    schedule = made(overlap="allow")
    now = utc(2026, 6, 1, 12, 0, 30)
    for _ in range(25):
        now += timedelta(hours=1)
        schedule = schedules.due(schedule, now, None).schedule
    assert len(schedule.history) == 20
    assert [e.fire_at for e in schedule.history][:2] == [utc(2026, 6, 2, 13), utc(2026, 6, 2, 12)]


# ---- outcomes and pausing ---------------------------------------------------------------------


def fired_once(schedule: Schedule, now: datetime) -> tuple[Schedule, str]:
    tick = schedules.due(schedule, now, None)
    assert tick.mission_id is not None
    return tick.schedule, tick.mission_id


def test_three_failures_in_a_row_pause_the_schedule_saying_why() -> None:
    schedule, now = made(), utc(2026, 6, 1, 13)
    for n in range(3):
        schedule, mission_id = fired_once(schedule, now + timedelta(hours=n))
        assert not schedule.paused
        schedule = schedules.outcome(schedule, mission_id, Status.FAILED, now)
    assert schedule.paused and schedule.consecutive_failures == 3
    assert schedule.pause_reason and "3 failed missions in a row" in schedule.pause_reason
    assert mission_id in schedule.pause_reason
    assert schedule.next_fire_at is None and schedule.upcoming(now) == []
    assert schedules.due(schedule, now + timedelta(days=1), None).fire_at is None
    resumed = schedules.resumed(schedule, utc(2026, 6, 3, 9, 30))
    assert (resumed.paused, resumed.consecutive_failures) == (False, 0)
    assert resumed.next_fire_at == utc(2026, 6, 3, 10)  # what it missed is not caught up


def test_a_success_resets_the_count_and_a_cancel_counts_neither_way() -> None:
    schedule, now = made(), utc(2026, 6, 1, 13)
    outcomes = [Status.FAILED, Status.FAILED, Status.COMPLETED, Status.FAILED, Status.CANCELLED]
    for n, status in enumerate(outcomes):
        schedule, mission_id = fired_once(schedule, now + timedelta(hours=n))
        schedule = schedules.outcome(schedule, mission_id, status, now)
    assert (schedule.consecutive_failures, schedule.paused) == (1, False)
    assert [e.outcome for e in schedule.history] == list(reversed(outcomes))


def test_an_outcome_reported_twice_counts_once_and_zero_never_pauses() -> None:
    schedule, mission_id = fired_once(made(pause_after_failures=0), utc(2026, 6, 1, 13))
    once = schedules.outcome(schedule, mission_id, Status.FAILED, utc(2026, 6, 1, 13, 1))
    assert schedules.outcome(once, mission_id, Status.FAILED, utc(2026, 6, 1, 13, 2)) == once
    for n in range(1, 6):
        once, other = fired_once(once, utc(2026, 6, 1, 13 + n))
        once = schedules.outcome(once, other, Status.FAILED, utc(2026, 6, 1, 13 + n))
    assert (once.consecutive_failures, once.paused) == (6, False)
    # A mission the schedule does not know (or a status that is no end) changes nothing.
    assert schedules.outcome(once, "m_other", Status.FAILED, utc(2026, 6, 2)) == once


def test_an_edit_of_the_cron_or_zone_recomputes_the_next_fire() -> None:
    schedule = made()
    edited = schedules.edited(
        schedule, utc(2026, 6, 1, 12, 10), {"cron": "0  9 * * *", "timezone": "Europe/Berlin"}
    )
    assert edited.cron == "0 9 * * *"
    assert edited.next_fire_at == utc(2026, 6, 2, 7)  # 09:00 CEST
    with pytest.raises(CronError):
        schedules.edited(schedule, utc(2026, 6, 1), {"timezone": "Nowhere/Special"})


def test_upcoming_lists_the_next_five_fires() -> None:
    schedule = made("0 9 * * 1-5", timezone="America/New_York")
    upcoming = schedule.upcoming(utc(2026, 10, 30, 14))  # a Friday, 10:00 EDT
    assert upcoming == [
        utc(2026, 11, 2, 14),  # Monday 09:00 EST, after the change
        utc(2026, 11, 3, 14),
        utc(2026, 11, 4, 14),
        utc(2026, 11, 5, 14),
        utc(2026, 11, 6, 14),
    ]


def test_a_next_fire_set_apart_from_the_cron_still_fires_at_its_time() -> None:
    """A yearly schedule whose next fire was moved to a minute ago fires for that minute
    (not for last New Year), then waits for the next New Year."""
    schedule = replace(made("0 0 1 1 *"), next_fire_at=utc(2026, 6, 1, 12, 59))
    tick = schedules.due(schedule, utc(2026, 6, 1, 13, 0, 5), None)
    assert tick.fire_at == utc(2026, 6, 1, 12, 59)
    assert tick.schedule.next_fire_at == utc(2027, 1, 1)
    assert [e.status for e in tick.schedule.history] == ["fired"]
