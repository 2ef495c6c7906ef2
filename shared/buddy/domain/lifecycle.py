"""Every transition a mission makes, as pure functions: the state in, a Change out.

A transition checks that it is allowed (raising InvalidTransition, or a signal for the
worker), and returns the mission as it should be written with the events that happened.
Storage writes a Change atomically and numbers its events. A new kind of transition (pause,
resume, retry) is a new function here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from buddy.domain.mission import (
    ACTIVE,
    TERMINAL,
    Change,
    Mission,
    NewEvent,
    Progress,
    Scope,
    Status,
    StepError,
)
from buddy.errors import InvalidTransition

# The status a delivery may start a run from. A message for an approved mission belongs to
# an execute that was undone (its publish failed or timed out, and the owner was told so).
CLAIMABLE = frozenset({Status.QUEUED})


class NotClaimable(Exception):
    """Signal: the mission is not this run's to run (finished, never queued, or taken over
    by another run). The delivery is acknowledged and nothing more is written."""


class MissionBusy(Exception):
    """Signal: another run holds a live lease on the mission. The delivery is refused so that
    Pub/Sub brings it again later, when that run has finished or died."""


def proposed(
    mission_id: str,
    owner_uid: str,
    objective: str,
    allowed_domains: Collection[str],
    budget_usd: float,
    tool: str | None,
    inputs: dict[str, Any],
    now: datetime,
) -> Mission:
    """A new mission: proposed, nothing done yet."""
    return Mission(
        mission_id=mission_id,
        owner_uid=owner_uid,
        objective=objective,
        scope=Scope(tuple(allowed_domains)),
        budget_usd=budget_usd,
        tool=tool,
        inputs=inputs,
        status=Status.PROPOSED,
        created_at=now,
        updated_at=now,
    )


# ---- the owner's requests -----------------------------------------------------------------


def approve(mission: Mission, now: datetime) -> Change:
    _require(mission, "approve", {Status.PROPOSED})
    return Change(
        replace(mission, status=Status.APPROVED, approved_at=now, updated_at=now),
        (NewEvent("mission_approved", "Mission approved"),),
    )


def queue(mission: Mission, now: datetime, max_active: int) -> Change:
    _require(mission, "execute", {Status.APPROVED})
    return Change(
        replace(mission, status=Status.QUEUED, queued_at=now, updated_at=now),
        (NewEvent("mission_queued", "Mission queued for execution"),),
        active_limit=max_active,
    )


def unqueue(mission: Mission, queued_seq: int, now: datetime) -> Change:
    """Undoes `queue` when its message may never have left: the mission is as it was."""
    if mission.status != Status.QUEUED or mission.event_seq != queued_seq:
        return Change()  # a worker has it already, or the owner cancelled
    return Change(
        replace(mission, status=Status.APPROVED, queued_at=None, updated_at=now),
        retract_seq=queued_seq,
    )


def cancel(mission: Mission, now: datetime) -> Change:
    """Not yet running: cancelled at once. Running: asked, and the run stops at its next
    step boundary (see `cancelled_at_boundary`)."""
    if mission.terminal:
        raise InvalidTransition("cancel", mission.status, "proposed, approved, queued or running")
    if mission.status == Status.RUNNING:
        return Change(replace(mission, cancel_requested=True, updated_at=now))
    asked = replace(mission, cancel_requested=True)
    how = f"before it ran (was {mission.status})"
    return ended(asked, Status.CANCELLED, now, cancelled_event(asked, how))


# ---- a run ---------------------------------------------------------------------------------


def claim(mission: Mission, run_id: str, now: datetime, lease_seconds: float) -> Mission:
    """The mission taken by a new run: a queued one starts, a running one whose lease ran out
    (its worker died) is taken over where it stopped."""
    record = mission.record
    if mission.status == Status.RUNNING:
        if mission.lease_live(now):
            raise MissionBusy(mission.mission_id)
        taken = replace(record, runs=record.runs + 1)
        return replace(mission, run_id=run_id, execution_record=taken)
    if mission.status not in CLAIMABLE:
        raise NotClaimable(f"mission is {mission.status}")
    started = replace(record, status=Status.RUNNING, attempt=1, runs=1)
    return replace(
        mission,
        status=Status.RUNNING,
        started_at=now,
        run_id=run_id,
        execution_record=started,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
    )


def owned(mission: Mission, run_id: str) -> Mission:
    """The mission, if this run still holds it."""
    if mission.status != Status.RUNNING or mission.run_id != run_id:
        raise NotClaimable(f"mission is {mission.status}, run {mission.run_id}")
    return mission


def progressed(
    mission: Mission, now: datetime, lease_seconds: float, progress: Progress | None = None
) -> Mission:
    """A run's write: its lease renewed, and its progress when it has some to show."""
    lease = now + timedelta(seconds=lease_seconds)
    moved = replace(mission, updated_at=now, lease_expires_at=lease)
    return moved.with_record(progress_tracker=progress) if progress is not None else moved


def ended(
    mission: Mission,
    status: Status,
    now: datetime,
    event: NewEvent,
    error: StepError | None = None,
) -> Change:
    """The one way a mission ends (completed, failed or cancelled), whoever ends it: the
    lease let go, the record's status and error set, nothing left to wait for."""
    assert status in TERMINAL
    record = replace(mission.record, status=status, error=error or mission.record.error)
    if record.progress_tracker is not None:
        record = replace(record, progress_tracker=record.progress_tracker.stopped())
    done = replace(
        mission,
        status=status,
        finished_at=now,
        updated_at=now,
        lease_expires_at=None,
        execution_record=record if mission.execution_record or error else None,
    )
    return Change(done, (event,))


def completed(mission: Mission, now: datetime) -> Change:
    event = NewEvent("mission_completed", "Mission completed", progress_percent=mission.percent)
    return ended(mission, Status.COMPLETED, now, event)


def failed(mission: Mission, now: datetime, error: StepError) -> Change:
    event = NewEvent(
        "mission_failed",
        f"Mission failed at {error.step_name}: {error.message}",
        step_name=error.step_name,
        progress_percent=mission.percent,
    )
    return ended(mission, Status.FAILED, now, event, error)


def cancelled_event(mission: Mission, how: str, step_name: str | None = None) -> NewEvent:
    """The one `mission_cancelled` event: "Mission cancelled at 30%", and how."""
    return NewEvent(
        "mission_cancelled",
        f"Mission cancelled {how}",
        step_name=step_name,
        progress_percent=mission.percent,
    )


def cancelled_in_step(mission: Mission, now: datetime) -> Change:
    """A running tool stopped for the owner's cancel: cancelled where it got to."""
    step = mission.current_step_name
    how = f"at {mission.percent}% during {step}"
    return ended(mission, Status.CANCELLED, now, cancelled_event(mission, how, step))


def cancelled_at_boundary(mission: Mission, now: datetime, boundary: Progress) -> Change:
    """The owner's cancel, seen at a step boundary: the step about to start never ran."""
    stopped = mission.with_record(progress_tracker=boundary)
    return ended(stopped, Status.CANCELLED, now, cancelled_event(stopped, f"at {stopped.percent}%"))


# ---- recovery ------------------------------------------------------------------------------


def stalled(mission: Mission, now: datetime) -> bool:
    """Running, but its worker stopped renewing the lease."""
    return mission.status == Status.RUNNING and not mission.lease_live(now)


def give_up(mission: Mission, now: datetime, code: str, message: str) -> Change:
    """Recovery ends a mission no run can finish, saying why."""
    step = mission.current_step_name or "delivery"
    return failed(mission, now, StepError(step, code, message))


def cancel_stalled(mission: Mission, now: datetime) -> Change:
    """A stalled mission whose owner asked to cancel: it ends cancelled, as asked."""
    how = f"at {mission.percent}% (its worker had stopped)"
    return ended(mission, Status.CANCELLED, now, cancelled_event(mission, how))


def recovered(mission: Mission, now: datetime) -> Change:
    """Sent to a worker again; a queued one counts its wait afresh from now."""
    record = mission.record
    again = replace(
        mission, updated_at=now, execution_record=replace(record, recoveries=record.recoveries + 1)
    )
    if mission.status == Status.QUEUED:
        again = replace(again, queued_at=now)
    return Change(again)


# ---- derived -------------------------------------------------------------------------------


def active_delta(before: Mission, change: Change) -> int:
    """+1 when the change moves the mission into the active states, -1 out of them, else 0."""
    if change.mission is None:
        return 0
    return int(change.mission.status in ACTIVE) - int(before.status in ACTIVE)


def _require(mission: Mission, action: str, allowed: set[Status]) -> None:
    if mission.status not in allowed:
        raise InvalidTransition(action, mission.status, " or ".join(sorted(allowed)))
