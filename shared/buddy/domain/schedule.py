"""Recurring missions: when a schedule fires, and what each fire does.

A schedule's cron is read in its IANA time zone, minute by minute, by cronsim (which parses
and matches the expression). What a wall-clock time means when the clocks change is decided
here, once, for every schedule:

- a local time that does not exist (the clocks went forward over it) fires once, at the
  first instant after the gap: `30 2 * * *` in Europe/Berlin fires at 03:00 CEST on the last
  Sunday of March, and `*/15 2 * * *` fires once, at 03:00, that day;
- a local time that happens twice (the clocks went back over it) fires once, at its first
  occurrence: `30 2 * * *` fires at 02:30 CEST on the last Sunday of October, not again an
  hour later, and an hourly schedule has no fire in the repeated hour.

A tick (`due`) decides, for one schedule at one moment, which fire runs (if any), which were
missed or skipped, and when the next one is; the storage layer makes that decision and the
mission it creates one transaction.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from buddy.domain.mission import TERMINAL, Status, iso

Overlap = Literal["skip", "buffer_one", "allow"]
FireStatus = Literal["fired", "skipped", "buffered"]

HISTORY_LENGTH = 20
UPCOMING = 5
# A fire seen this late by a tick still runs: ticks come every minute (Cloud Scheduler) or
# every BUDDY_SCHEDULER_TICK_SECONDS (locally), and may themselves be late.
ON_TIME_SECONDS = 120
# How far ahead a cron is searched for its next fire (cronsim refuses dates that never
# exist, such as 30 February, so this bounds rare fires like Friday the 13th of February).
SEARCH_YEARS = 30


class CronError(ValueError):
    """A cron expression or time zone the schedule cannot use; the message says why."""


class Cron:
    """A five-field cron expression (minute hour day-of-month month day-of-week) read in an
    IANA time zone."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        fields = expression.split()
        if len(fields) != 5:
            raise CronError(
                f"cron: {expression!r} has {len(fields)} fields; give five: "
                "minute hour day-of-month month day-of-week (e.g. '0 9 * * 1-5')"
            )
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise CronError(
                f"timezone: {timezone!r} is not an IANA time zone (e.g. 'Europe/Berlin')"
            ) from e
        self.expression = " ".join(fields)
        self.timezone = timezone
        try:
            self.description = CronSim(self.expression, datetime(2000, 1, 1)).explain()
        except CronSimError as e:
            raise CronError(f"cron: {expression!r}: {e}") from e

    def after(self, moment: datetime) -> Iterator[datetime]:
        """The fires strictly after `moment`, as UTC instants, in order, each instant once."""
        # Start three hours of wall time early: a time in a gap names an instant later than
        # it reads, and a repeated hour's wall times come round again.
        local = moment.astimezone(self.zone).replace(tzinfo=None, second=0, microsecond=0)
        horizon = local + timedelta(days=366 * SEARCH_YEARS)
        last = moment.astimezone(UTC)
        for wall in CronSim(self.expression, local - timedelta(hours=3)):
            if wall > horizon:
                return
            instant = self.instant(wall)
            if instant > last:
                last = instant
                yield instant

    def next_after(self, moment: datetime) -> datetime | None:
        return next(self.after(moment), None)

    def latest_until(self, moment: datetime) -> datetime | None:
        """The last fire at or before `moment`. (An instant never decreases as its wall time
        grows, so walking back, the first instant not after `moment` is the one.)"""
        local = moment.astimezone(self.zone).replace(tzinfo=None, second=0, microsecond=0)
        horizon = local - timedelta(days=366 * SEARCH_YEARS)
        for wall in CronSim(self.expression, local + timedelta(hours=3), reverse=True):
            if wall < horizon:
                return None
            instant = self.instant(wall)
            if instant <= moment:
                return instant
        return None

    def instant(self, wall: datetime) -> datetime:
        """The UTC instant a wall-clock time names in the zone, by the rule above."""
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        if first.astimezone(self.zone).replace(tzinfo=None) == wall:
            return first  # it exists: its first (or only) occurrence
        # In a gap: its two readings land on either side of the change; find the change.
        other = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        before, after = min(first, other), max(first, other)
        offset_after = after.astimezone(self.zone).utcoffset()
        while after - before > timedelta(seconds=1):
            middle = before + (after - before) / 2
            if middle.astimezone(self.zone).utcoffset() == offset_after:
                after = middle
            else:
                before = middle
        return after.replace(microsecond=0)


@dataclass(frozen=True)
class Fire:
    """One entry of a schedule's history: a fire time and what became of it."""

    fire_at: datetime
    status: FireStatus
    mission_id: str | None = None
    reason: str | None = None  # why it was skipped or buffered
    outcome: Status | None = None  # its mission's end, once known


@dataclass(frozen=True)
class Schedule:
    schedule_id: str
    owner_uid: str
    name: str
    cron: str
    timezone: str
    mission: Mapping[str, Any]  # a create body, validated as POST /missions validates it
    created_at: datetime
    updated_at: datetime
    overlap: Overlap = "skip"
    catchup_window_seconds: int = 0
    pause_after_failures: int = 3  # 0: never
    paused: bool = False
    pause_reason: str | None = None
    consecutive_failures: int = 0
    next_fire_at: datetime | None = None  # None while paused
    last_fire_at: datetime | None = None
    last_mission_id: str | None = None
    buffered_fire_at: datetime | None = None  # buffer_one: the fire waiting for the last one
    history: tuple[Fire, ...] = ()  # newest first
    # The recipe (its version, pinned, and params) the mission body was made from, if any.
    recipe: Mapping[str, Any] | None = None

    @property
    def parsed(self) -> Cron:
        return Cron(self.cron, self.timezone)

    def upcoming(self, now: datetime, count: int = UPCOMING) -> list[datetime]:
        """The next fires as UTC instants (none while paused)."""
        if self.paused:
            return []
        return list(itertools.islice(self.parsed.after(now), count))


def mission_id_for(schedule_id: str, fire_at: datetime) -> str:
    """The id of the mission a fire creates: the same for every tick that sees the fire."""
    digest = hashlib.sha256(f"{schedule_id}@{iso(fire_at)}".encode()).hexdigest()
    return f"s_{digest[:32]}"


def new(
    schedule_id: str,
    owner_uid: str,
    now: datetime,
    *,
    name: str,
    cron: str,
    timezone: str,
    mission: Mapping[str, Any],
    overlap: Overlap = "skip",
    catchup_window_seconds: int = 0,
    pause_after_failures: int = 3,
    recipe: Mapping[str, Any] | None = None,
) -> Schedule:
    """A schedule whose first fire is the cron's next after now (CronError if it has none)."""
    parsed = Cron(cron, timezone)
    return Schedule(
        schedule_id=schedule_id,
        owner_uid=owner_uid,
        name=name,
        cron=parsed.expression,
        timezone=timezone,
        mission=dict(mission),
        created_at=now,
        updated_at=now,
        overlap=overlap,
        catchup_window_seconds=catchup_window_seconds,
        pause_after_failures=pause_after_failures,
        next_fire_at=_first_fire(parsed, now),
        recipe=recipe,
    )


def edited(schedule: Schedule, now: datetime, fields: Mapping[str, Any]) -> Schedule:
    """The schedule with `fields` changed; its next fire is recomputed from now."""
    changed = replace(schedule, **fields, updated_at=now)
    parsed = changed.parsed  # CronError for a bad cron or zone
    changed = replace(changed, cron=parsed.expression)
    return changed if changed.paused else replace(changed, next_fire_at=_first_fire(parsed, now))


def paused(schedule: Schedule, now: datetime, reason: str = "Paused by its owner") -> Schedule:
    return replace(
        schedule,
        paused=True,
        pause_reason=reason,
        next_fire_at=None,
        buffered_fire_at=None,
        updated_at=now,
    )


def resumed(schedule: Schedule, now: datetime) -> Schedule:
    """Fires again from the cron's next time after now: what it missed while paused is not
    caught up, and the failures that paused it are forgotten."""
    return replace(
        schedule,
        paused=False,
        pause_reason=None,
        consecutive_failures=0,
        next_fire_at=_first_fire(schedule.parsed, now),
        updated_at=now,
    )


@dataclass(frozen=True)
class Tick:
    """What a tick does with one schedule: the schedule as it leaves it, and the fire whose
    mission it creates (None: nothing runs)."""

    schedule: Schedule
    fire_at: datetime | None = None

    @property
    def mission_id(self) -> str | None:
        return self.schedule.last_mission_id if self.fire_at else None


def due(schedule: Schedule, now: datetime, previous: Status | None) -> Tick:
    """The tick at `now` for a schedule, given the status of its last mission (None: there
    is none). Fires that are due run, or are recorded as missed or skipped, and the next
    fire moves past now; a schedule that is not due is left as it is."""
    if schedule.paused:
        return Tick(schedule)
    busy = previous is not None and previous not in TERMINAL
    if schedule.buffered_fire_at is not None and not busy:
        # buffer_one: the last mission ended, so the fire that waited for it runs now.
        return _fired(replace(schedule, buffered_fire_at=None), schedule.buffered_fire_at, now)
    first = schedule.next_fire_at
    if first is None or first > now:
        return Tick(schedule)
    cron = schedule.parsed
    # The last fire by now; never before the one recorded as next (a next fire set by hand, or
    # by an older cron, still counts as due).
    latest = max(first, cron.latest_until(now) or first)
    advanced = replace(schedule, next_fire_at=cron.next_after(now), updated_at=now)
    missed = _count_fires(cron, first, latest)
    if missed:
        reason = f"missed {missed} while the scheduler was not running"
        before = cron.latest_until(latest - timedelta(seconds=1)) or first
        advanced = _recorded(advanced, Fire(before, "skipped", reason=reason))
    late = (now - latest).total_seconds()
    if late > max(ON_TIME_SECONDS, schedule.catchup_window_seconds):
        reason = (
            f"missed: the scheduler came {round(late)} s late, past the catch-up window "
            f"({schedule.catchup_window_seconds} s)"
        )
        return Tick(_recorded(advanced, Fire(latest, "skipped", reason=reason)))
    return _by_overlap(advanced, latest, busy, now)


def run_now(schedule: Schedule, now: datetime) -> Tick:
    """A fire outside the cron, asked for by the owner: it runs whatever the overlap rule
    (its time to the microsecond, so two quick asks are two missions)."""
    return _fired(schedule, now, now)


def outcome(schedule: Schedule, mission_id: str, status: Status, now: datetime) -> Schedule:
    """A mission of the schedule ended: its history entry records how, and after
    `pause_after_failures` failed missions in a row the schedule pauses, saying why. Each
    mission counts once (a second report of its end changes nothing); a cancelled one counts
    neither way."""
    entry = next((e for e in schedule.history if e.mission_id == mission_id), None)
    if entry is None or entry.outcome is not None or status not in TERMINAL:
        return schedule
    history = tuple(replace(e, outcome=status) if e is entry else e for e in schedule.history)
    counted = replace(schedule, history=history, updated_at=now)
    if status == Status.COMPLETED:
        return replace(counted, consecutive_failures=0)
    if status != Status.FAILED:
        return counted
    failures = schedule.consecutive_failures + 1
    counted = replace(counted, consecutive_failures=failures)
    limit = schedule.pause_after_failures
    if not limit or failures < limit or schedule.paused:
        return counted
    reason = (
        f"Paused after {_count(failures, 'failed mission')} in a row (the last: {mission_id}); "
        "resume it once the cause is fixed"
    )
    return paused(counted, now, reason)


def _by_overlap(schedule: Schedule, fire_at: datetime, busy: bool, now: datetime) -> Tick:
    """A fire at `fire_at`, by the overlap rule when the last mission has not finished."""
    last = schedule.last_mission_id
    if busy and schedule.overlap == "skip":
        reason = f"skipped: the previous mission {last} has not finished (overlap: skip)"
        return Tick(_recorded(schedule, Fire(fire_at, "skipped", reason=reason)))
    if busy and schedule.overlap == "buffer_one":
        waiting = schedule
        if schedule.buffered_fire_at is not None:
            reason = "skipped: a later fire took its place in the buffer (overlap: buffer_one)"
            waiting = _skipped(waiting, schedule.buffered_fire_at, reason)
        reason = f"buffered: runs when the previous mission {last} finishes (overlap: buffer_one)"
        waiting = _recorded(waiting, Fire(fire_at, "buffered", reason=reason))
        return Tick(replace(waiting, buffered_fire_at=fire_at))
    return _fired(schedule, fire_at, now)


def _fired(schedule: Schedule, fire_at: datetime, now: datetime) -> Tick:
    mission_id = mission_id_for(schedule.schedule_id, fire_at)
    recorded = _recorded(schedule, Fire(fire_at, "fired", mission_id))
    after = replace(recorded, last_fire_at=fire_at, last_mission_id=mission_id, updated_at=now)
    return Tick(after, fire_at)


def _first_fire(cron: Cron, now: datetime) -> datetime:
    first = cron.next_after(now)
    if first is None:
        raise CronError(f"cron: {cron.expression!r} does not fire in the next {SEARCH_YEARS} years")
    return first


def _count_fires(cron: Cron, first: datetime, latest: datetime, cap: int = 1000) -> str:
    """How many fires there are from `first` up to (not including) `latest`, in words."""
    if first >= latest:
        return ""
    n = 1
    for fire_at in cron.after(first):
        if fire_at >= latest or n == cap:
            break
        n += 1
    return f"more than {cap - 1} fires" if n == cap else _count(n, "fire")


def _recorded(schedule: Schedule, entry: Fire) -> Schedule:
    """The history with `entry` first (replacing an entry for the same fire time), the
    newest HISTORY_LENGTH kept."""
    kept = tuple(e for e in schedule.history if e.fire_at != entry.fire_at)
    return replace(schedule, history=(entry, *kept)[:HISTORY_LENGTH])


def _skipped(schedule: Schedule, fire_at: datetime, reason: str) -> Schedule:
    history = tuple(
        replace(e, status="skipped", reason=reason) if e.fire_at == fire_at else e
        for e in schedule.history
    )
    return replace(schedule, history=history)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
