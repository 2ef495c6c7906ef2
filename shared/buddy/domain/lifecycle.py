"""Every transition a mission makes, as pure functions: the state in, a Change out.

A transition checks that it is allowed (raising InvalidTransition, or a signal for the
worker), and returns the mission as it should be written with the events that happened.
Storage writes a Change atomically and numbers its events. A new kind of transition (pause,
resume, retry) is a new function here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from buddy.domain.mission import (
    ACTIVE,
    TERMINAL,
    Change,
    Feedback,
    Mission,
    NewEvent,
    OnLimit,
    PauseReason,
    Progress,
    Scope,
    Status,
    StepError,
    iso,
)
from buddy.errors import InvalidTransition, ValidationFailed

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
    on_limit: OnLimit = "fail",
) -> Mission:
    """A new mission: proposed, nothing done yet."""
    return Mission(
        on_limit=on_limit,
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
        counted=True,
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


def unqueue(mission: Mission, before: Mission, queued_seq: int, now: datetime) -> Change:
    """Undoes a queueing (an execute, a resume, a retry) whose message may never have left:
    the mission is as it was `before`, and the event that queued it is taken back."""
    if mission.status != Status.QUEUED or mission.event_seq != queued_seq:
        return Change()  # a worker has it already, or the owner cancelled
    return Change(
        replace(before, updated_at=now, event_seq=mission.event_seq), retract_seq=queued_seq
    )


def cancel(mission: Mission, now: datetime) -> Change:
    """Not yet running: cancelled at once. Running: asked, and the run stops at its next
    step boundary (see `cancelled_at_boundary`)."""
    if mission.terminal:
        raise InvalidTransition("cancel", mission.status, "proposed, approved, queued or running")
    if mission.status == Status.RUNNING:
        return Change(replace(mission, cancel_requested=True, updated_at=now))
    asked = replace(mission, cancel_requested=True, pause_requested=False)
    if mission.status == Status.PAUSED:
        how = f"at {mission.percent}% while paused"
    else:
        how = f"before it ran (was {mission.status})"
    return ended(asked, Status.CANCELLED, now, cancelled_event(asked, how))


# What the owner may change, by state: before it runs, anything a create body says; while
# paused or after a failure, only the limits that stopped it.
EDITABLE_BEFORE_RUNNING = frozenset(
    {"objective", "allowed_domains", "budget_usd", "tool", "inputs", "on_limit"}
)
EDITABLE_WHEN_STOPPED = frozenset({"budget_usd", "allowed_domains"})


def modify(mission: Mission, now: datetime, fields: Mapping[str, Any]) -> Change:
    """An edit by the owner: `fields` by name (allowed_domains for the scope). An approved
    mission goes back to proposed, since its approval covered what it was to run; a paused or
    failed one may change its budget (never below what it spent) and allowed domains."""
    if mission.status in (Status.PROPOSED, Status.APPROVED):
        allowed = EDITABLE_BEFORE_RUNNING
    elif mission.status in (Status.PAUSED, Status.FAILED):
        allowed = EDITABLE_WHEN_STOPPED
    else:
        raise InvalidTransition("edit", mission.status, "proposed, approved, paused or failed")
    refused = sorted(set(fields) - allowed)
    if refused:
        what = ", ".join("scope" if name == "allowed_domains" else name for name in refused)
        raise InvalidTransition(f"change {what} of", mission.status, "proposed or approved")
    budget = fields.get("budget_usd", mission.budget_usd)
    if budget < mission.spent_usd:
        raise ValidationFailed(
            f"budget_usd: the mission has already spent ${mission.spent_usd:g}; "
            "the budget cannot be lower"
        )
    edited = _edited(mission, fields)
    changes = _differences(mission, edited)
    if not changes:
        return Change()
    if not _still_the_recipes(fields):
        edited = replace(edited, recipe=None)
    if mission.status == Status.APPROVED:
        edited = replace(edited, status=Status.PROPOSED, approved_at=None)
        changes.append("approval withdrawn: approve it again to run what it now says")
    message = "Mission modified: " + "; ".join(changes)
    return Change(replace(edited, updated_at=now), (NewEvent("mission_modified", message[:500]),))


# A mission whose objective, tool or inputs changed does something its recipe did not make
# (it counts for the recipe no more); one whose limits changed is still the recipe's.
_WHAT_IT_DOES = frozenset({"objective", "tool", "inputs"})


def _still_the_recipes(fields: Mapping[str, Any]) -> bool:
    return not _WHAT_IT_DOES & set(fields)


def _edited(mission: Mission, fields: Mapping[str, Any]) -> Mission:
    values = {name: value for name, value in fields.items() if name != "allowed_domains"}
    if "allowed_domains" in fields:
        values["scope"] = Scope(tuple(fields["allowed_domains"]))
    return replace(mission, **values)


def _differences(before: Mission, after: Mission) -> list[str]:
    """`name: old → new` for each field the edit changed."""
    pairs = [
        ("objective", before.objective, after.objective),
        (
            "scope.allowed_domains",
            list(before.scope.allowed_domains),
            list(after.scope.allowed_domains),
        ),
        ("budget_usd", before.budget_usd, after.budget_usd),
        ("tool", before.tool, after.tool),
        ("inputs", dict(before.inputs), dict(after.inputs)),
        ("on_limit", before.on_limit, after.on_limit),
    ]
    return [f"{name}: {old!r} → {new!r}" for name, old, new in pairs if old != new]


def clone(
    source: Mission, mission_id: str, owner_uid: str, now: datetime, fields: Mapping[str, Any]
) -> tuple[Mission, tuple[NewEvent, ...]]:
    """A new proposed mission with the source's create fields (and the overrides given)."""
    fresh = proposed(
        mission_id,
        owner_uid,
        source.objective,
        source.scope.allowed_domains,
        source.budget_usd,
        source.tool,
        dict(source.inputs),
        now,
        on_limit=source.on_limit,
    )
    recipe = source.recipe if _still_the_recipes(fields) else None
    cloned = replace(_edited(fresh, fields), cloned_from=source.mission_id, recipe=recipe)
    events = (
        NewEvent("mission_created", "Mission proposed"),
        NewEvent("mission_cloned", f"Cloned from mission {source.mission_id}"),
    )
    return cloned, events


def pause(mission: Mission, now: datetime) -> Change:
    """Queued: paused at once. Running: asked, and the run pauses at its next step boundary
    (a long tool between its pages), keeping what it finished."""
    if mission.status == Status.RUNNING:
        return Change(replace(mission, pause_requested=True, updated_at=now))
    _require(mission, "pause", {Status.QUEUED, Status.RUNNING})
    reason = PauseReason("requested", "Paused by its owner before it started")
    return paused(mission, now, reason)


def paused(mission: Mission, now: datetime, reason: PauseReason) -> Change:
    """The mission waits for its owner, holding no lease and no worker."""
    record = replace(mission.record, status=Status.PAUSED) if mission.execution_record else None
    stopped = replace(
        mission,
        status=Status.PAUSED,
        pause_requested=False,
        pause_reason=reason,
        run_id=None,
        lease_expires_at=None,
        updated_at=now,
        execution_record=record,
    )
    event = NewEvent(
        "mission_paused",
        f"Mission paused at {mission.percent}%: {reason.message}",
        step_name=reason.step_name,
        progress_percent=mission.percent,
    )
    return Change(stopped, (event,))


def resume(mission: Mission, now: datetime, max_active: int) -> Change:
    """paused → queued: a worker carries on where it stopped."""
    _require(mission, "resume", {Status.PAUSED})
    resumed = replace(
        mission, status=Status.QUEUED, queued_at=now, updated_at=now, pause_reason=None
    )
    event = NewEvent("mission_resumed", "Mission resumed", progress_percent=mission.percent)
    return Change(resumed, (event,), active_limit=max_active)


def retry(mission: Mission, now: datetime, max_active: int) -> Change:
    """failed → queued for its next run, which starts at the step that failed and keeps the
    steps (and their effects) that completed."""
    _require(mission, "retry", {Status.FAILED})
    record = mission.record
    step = record.error.step_name if record.error else mission.current_step_name
    again = replace(record, status=Status.QUEUED, run=record.run + 1, attempt=1, error=None)
    queued = replace(
        mission,
        status=Status.QUEUED,
        queued_at=now,
        updated_at=now,
        finished_at=None,
        cancel_requested=False,
        execution_record=again,
        feedback=None,  # it rated the run that failed; the next one is rated afresh
    )
    event = NewEvent(
        "mission_retried",
        f"Run {again.run} starts at {step}",
        step_name=step,
        progress_percent=mission.percent,
    )
    return Change(queued, (event,), active_limit=max_active)


def rate(mission: Mission, now: datetime, rating: int, comment: str | None) -> Change:
    """The owner's rating of a finished mission (replacing an earlier one)."""
    _require(mission, "rate", set(TERMINAL))
    before = mission.feedback
    rated = replace(mission, feedback=Feedback(rating, now, comment), updated_at=now)
    said = f"Rated {rating} of 5" + (f" (was {before.rating})" if before else "")
    if comment:
        said += f": {comment[:200]}"
    return Change(rated, (NewEvent("mission_rated", said),))


def expire_pause(mission: Mission, now: datetime) -> Change:
    """A pause nobody answered by its expiry fails the mission, saying what it waited for."""
    reason = mission.pause_reason
    assert reason is not None and reason.expires_at is not None
    message = (
        f"Paused since it asked ({reason.message}) and not resumed before {iso(reason.expires_at)}"
    )
    step = reason.step_name or mission.current_step_name or "delivery"
    return failed(mission, now, StepError(step, "pause_expired", message[:500]))


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
    # A resumed or retried mission carries on: it keeps its first start and counts a run.
    again = mission.progress is not None
    started = replace(
        record, status=Status.RUNNING, attempt=1, runs=record.runs + 1 if again else 1
    )
    return replace(
        mission,
        status=Status.RUNNING,
        started_at=mission.started_at if again and mission.started_at else now,
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


def recovered(mission: Mission, now: datetime, orphaned: bool = False) -> Change:
    """Sent to a worker again; a queued one counts its wait afresh from now. An orphaned one's
    worker is known to be gone (the local stack restarted): its lease is let go, so the next
    delivery takes over at once instead of waiting it out."""
    record = mission.record
    again = replace(
        mission, updated_at=now, execution_record=replace(record, recoveries=record.recoveries + 1)
    )
    if mission.status == Status.QUEUED:
        again = replace(again, queued_at=now)
    elif orphaned:
        again = replace(again, lease_expires_at=now)
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
