"""The mission state machine: which transitions are allowed, and what they change."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from buddy.domain import lifecycle
from buddy.domain.lifecycle import MissionBusy, NotClaimable
from buddy.domain.mission import (
    Change,
    ExecutionRecord,
    ExecutionStep,
    Mission,
    NewEvent,
    Progress,
    Scope,
    Status,
    StepError,
    StepStatus,
)
from buddy.errors import InvalidTransition

from .fakes import START

ALL = [s.value for s in Status]
LATER = START + timedelta(seconds=30)
LEASE = START + timedelta(seconds=60)


def queue(mission: Mission, now: Any) -> Change:
    return lifecycle.queue(mission, now, max_active=10)


def mission(status: str, **fields: Any) -> Mission:
    """A mission in `status` with three events in its log."""
    new = lifecycle.proposed("m_1", "alice", "calculate 3+4", (), 1.0, None, {}, START)
    return replace(new, status=Status(status), event_seq=3, **fields)


def step(name: str, percent: int, status: StepStatus = "started") -> ExecutionStep:
    return ExecutionStep(name, 1, 7, percent, status, "working", "2025-01-01T12:00:00Z")


def progress(percent: int, current: ExecutionStep | None = None, eta: float = 12.0) -> Progress:
    return Progress(
        "m_1",
        "2025-01-01T12:00:00Z",
        current_step=current,
        completed_steps=(step("verification", 10, "completed"),),
        progress_percent=percent,
        elapsed_seconds=8.0,
        estimated_time_remaining=eta,
    )


def running(percent: int = 40, current: str | None = "budget_check", **fields: Any) -> Mission:
    """A running mission held by run r_1, its progress at `percent` during `current`."""
    tracker = progress(percent, step(current, percent) if current else None)
    record = ExecutionRecord(Status.RUNNING, progress_tracker=tracker)
    fields = {"run_id": "r_1", "lease_expires_at": LEASE, "started_at": START, **fields}
    return mission("running", execution_record=record, **fields)


def test_proposed_is_a_new_mission_with_nothing_done() -> None:
    """A new mission is proposed for its owner, created and updated now, with no record."""
    new = lifecycle.proposed(
        "m_1", "alice", "fetch it", ["example.com"], 2.5, "calculate", {"x": 1}, START
    )
    assert new == Mission(
        mission_id="m_1",
        owner_uid="alice",
        objective="fetch it",
        scope=Scope(("example.com",)),
        budget_usd=2.5,
        tool="calculate",
        inputs={"x": 1},
        status=Status.PROPOSED,
        created_at=START,
        updated_at=START,
        counted=True,  # in the aggregates from the start
    )
    assert new.execution_record is None
    assert new.record == ExecutionRecord(Status.PROPOSED)
    assert (new.percent, new.current_step_name, new.event_seq) == (0, None, 0)


@pytest.mark.parametrize(
    ("action", "allowed_from", "to", "event", "stamped", "limit"),
    [
        (lifecycle.approve, "proposed", "approved", "mission_approved", "approved_at", None),
        (queue, "approved", "queued", "mission_queued", "queued_at", 10),
    ],
    ids=["approve", "queue"],
)
def test_allowed_transition(
    action, allowed_from: str, to: str, event: str, stamped: str, limit: int | None
) -> None:
    """Approve moves proposed→approved and queue moves approved→queued, with one event."""
    before = mission(allowed_from)
    change = action(before, LATER)
    assert change.mission == replace(
        before, status=Status(to), updated_at=LATER, **{stamped: LATER}
    )
    assert [e.type for e in change.events] == [event]
    assert change.active_limit == limit


@pytest.mark.parametrize(
    ("action", "verb", "status", "allowed"),
    [(lifecycle.approve, "approve", s, "proposed") for s in ALL if s != "proposed"]
    + [(queue, "execute", s, "approved") for s in ALL if s != "approved"],
    ids=[f"approve-from-{s}" for s in ALL if s != "proposed"]
    + [f"queue-from-{s}" for s in ALL if s != "approved"],
)
def test_refused_transition_has_readable_message(
    action, verb: str, status: str, allowed: str
) -> None:
    """A transition from the wrong status raises InvalidTransition saying what is required."""
    with pytest.raises(InvalidTransition) as raised:
        action(mission(status), START)
    assert str(raised.value) == f"Cannot {verb} a mission that is {status}; it must be {allowed}"


@pytest.mark.parametrize("status", ["proposed", "approved", "queued"])
def test_cancel_before_running_cancels_at_once(status: str) -> None:
    """Cancelling a mission that has not started makes it cancelled with an event."""
    before = mission(status)
    change = lifecycle.cancel(before, LATER)
    assert change.mission == replace(
        before,
        status=Status.CANCELLED,
        cancel_requested=True,
        finished_at=LATER,
        updated_at=LATER,
    )
    (event,) = change.events
    assert event.type == "mission_cancelled"
    assert event.message == f"Mission cancelled before it ran (was {status})"
    assert event.progress_percent == 0


def test_cancel_running_only_requests_cancellation() -> None:
    """Cancelling a running mission only sets cancel_requested; the worker stops it."""
    before = running(40)
    change = lifecycle.cancel(before, LATER)
    assert change.mission == replace(before, cancel_requested=True, updated_at=LATER)
    assert change.events == ()


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancel_finished_mission_is_refused(status: str) -> None:
    """A finished mission cannot be cancelled."""
    with pytest.raises(InvalidTransition) as raised:
        lifecycle.cancel(mission(status), START)
    assert str(raised.value) == (
        f"Cannot cancel a mission that is {status}; "
        "it must be proposed, approved, queued or running"
    )


@pytest.mark.parametrize("was", ["approved", "paused", "failed"])
def test_unqueue_restores_what_was_and_retracts_the_queued_event(was: str) -> None:
    """Unqueue with the queued event's seq puts the mission back as it was before the
    queueing (an execute's approved, a resume's paused, a retry's failed)."""
    earlier = replace(mission(was), event_seq=2)
    queued = mission("queued", queued_at=START)
    change = lifecycle.unqueue(queued, earlier, 3, LATER)
    assert change.mission == replace(earlier, updated_at=LATER, event_seq=3)
    assert change.retract_seq == 3
    assert change.events == ()


@pytest.mark.parametrize(
    ("status", "seq"),
    [("queued", 2), ("running", 3), ("approved", 3), ("cancelled", 3)],
    ids=["later-event", "running", "approved", "cancelled"],
)
def test_unqueue_changes_nothing_once_the_mission_moved_on(status: str, seq: int) -> None:
    """Unqueue is a no-op unless the mission is still queued with the same event_seq."""
    change = lifecycle.unqueue(mission(status), mission("approved"), seq, START)
    assert change == Change()
    assert change.empty


# ---- a run ---------------------------------------------------------------------------------


def test_claim_of_a_queued_mission_starts_a_run_under_a_lease() -> None:
    """A queued mission is claimed: running for this run, started now, leased, first run at
    its first attempt; the recoveries it took to get here are kept."""
    before = mission("queued", queued_at=START).with_record(attempt=3, runs=2, recoveries=1)
    claimed = lifecycle.claim(before, "r_2", LATER, lease_seconds=60)
    assert claimed == replace(
        before,
        status=Status.RUNNING,
        started_at=LATER,
        run_id="r_2",
        lease_expires_at=LATER + timedelta(seconds=60),
        execution_record=ExecutionRecord(Status.RUNNING, attempt=1, runs=1, recoveries=1),
    )
    fresh = lifecycle.claim(mission("queued"), "r_2", LATER, lease_seconds=60)
    assert fresh.execution_record == ExecutionRecord(Status.RUNNING, attempt=1, runs=1)


def test_claim_of_a_running_mission_whose_lease_ran_out_takes_it_over() -> None:
    """A running mission whose worker died is taken over where it stopped: runs + 1."""
    before = running(40, lease_expires_at=START + timedelta(seconds=10))
    before = before.with_record(attempt=2, runs=1, outputs={"verification": None})
    taken = lifecycle.claim(before, "r_2", LATER, lease_seconds=60)
    # Its start, progress, outputs and attempt stay; the new run's write renews the lease.
    assert taken == replace(before, run_id="r_2").with_record(runs=2)


def test_claim_of_a_running_mission_with_a_live_lease_is_busy() -> None:
    """Another run holds a live lease: the claim is refused with MissionBusy."""
    with pytest.raises(MissionBusy):
        lifecycle.claim(running(lease_expires_at=LATER + timedelta(seconds=1)), "r_2", LATER, 60)


@pytest.mark.parametrize("status", ["proposed", "approved", "completed", "failed", "cancelled"])
def test_claim_of_a_mission_that_is_not_queued_is_refused(status: str) -> None:
    """Only a queued (or stalled running) mission can be claimed; others are NotClaimable."""
    with pytest.raises(NotClaimable, match=f"mission is {status}"):
        lifecycle.claim(mission(status), "r_2", START, 60)


def test_owned_is_the_mission_while_this_run_holds_it() -> None:
    """The run that holds a running mission owns it; another run, or an ended one, does not."""
    held = running(run_id="r_1")
    assert lifecycle.owned(held, "r_1") is held
    with pytest.raises(NotClaimable, match="mission is running, run r_1"):
        lifecycle.owned(held, "r_2")
    with pytest.raises(NotClaimable, match="mission is cancelled, run r_1"):
        lifecycle.owned(replace(held, status=Status.CANCELLED), "r_1")


def test_progressed_renews_the_lease_and_shows_progress() -> None:
    """A run's write renews its lease; it replaces the progress only when given some."""
    before = running(40)
    quiet = lifecycle.progressed(before, LATER, lease_seconds=60)
    assert quiet == replace(
        before, updated_at=LATER, lease_expires_at=LATER + timedelta(seconds=60)
    )
    moved = lifecycle.progressed(before, LATER, 60, progress(55))
    assert moved == quiet.with_record(progress_tracker=progress(55))
    fresh = lifecycle.progressed(mission("running"), LATER, 60)
    assert fresh.execution_record is None  # nothing to show: no record made up


def test_ended_keeps_the_record_and_zeroes_the_eta() -> None:
    """A mission that ends lets its lease go, sets its record's status (an earlier error
    kept) and waits no more."""
    before = running(60, "tool_execution", cancel_requested=True)
    before = before.with_record(error=StepError("tool_execution", "step_failed", "earlier"))
    event = NewEvent("mission_cancelled", "Mission cancelled")
    change = lifecycle.ended(before, Status.CANCELLED, LATER, event)
    assert change.events == (event,)
    assert before.progress is not None
    assert change.mission == replace(
        before,
        status=Status.CANCELLED,
        finished_at=LATER,
        updated_at=LATER,
        lease_expires_at=None,
        execution_record=replace(
            before.record,
            status=Status.CANCELLED,
            progress_tracker=replace(before.progress, estimated_time_remaining=0.0),
        ),
    )


def test_ended_with_an_error_creates_the_record_when_there_was_none() -> None:
    """A mission that ends with an error before any run records the error; without an error
    it is left without a record."""
    error = StepError("delivery", "dead_lettered", "gave up")
    event = NewEvent("mission_failed", "Mission failed")
    failed = lifecycle.ended(mission("queued"), Status.FAILED, LATER, event, error).mission
    assert failed is not None
    assert failed.execution_record == ExecutionRecord(Status.FAILED, error=error)
    cancelled = lifecycle.ended(mission("queued"), Status.CANCELLED, LATER, event).mission
    assert cancelled is not None
    assert (cancelled.status, cancelled.execution_record) == (Status.CANCELLED, None)


def test_completed_ends_the_mission_at_its_percent() -> None:
    """A completed run ends the mission completed, with one mission_completed event."""
    change = lifecycle.completed(running(100, None), LATER)
    assert change.mission is not None
    assert change.mission.status == change.mission.record.status == Status.COMPLETED
    assert change.mission.finished_at == LATER
    assert change.events == (NewEvent("mission_completed", "Mission completed", None, 100),)


def test_failed_records_the_error_and_says_where() -> None:
    """A failed step ends the mission failed, its error recorded and named in the event."""
    error = StepError("budget_check", "step_failed", "Budget exceeded: $2.00 > $1.00 limit")
    change = lifecycle.failed(running(30), LATER, error)
    assert change.mission is not None
    assert (change.mission.status, change.mission.record.error) == (Status.FAILED, error)
    assert change.mission.record.status == Status.FAILED
    assert change.events == (
        NewEvent(
            "mission_failed",
            "Mission failed at budget_check: Budget exceeded: $2.00 > $1.00 limit",
            step_name="budget_check",
            progress_percent=30,
        ),
    )


def test_cancelled_event_says_how_and_at_what_percent() -> None:
    """The one mission_cancelled event reads "Mission cancelled at 30%", and how."""
    assert lifecycle.cancelled_event(running(30), "at 30%") == NewEvent(
        "mission_cancelled", "Mission cancelled at 30%", None, 30
    )
    assert lifecycle.cancelled_event(running(30), "at 30%", "budget_check").step_name == (
        "budget_check"
    )


def test_cancelled_in_step_ends_where_the_tool_stopped() -> None:
    """A tool stopped for a cancel ends the mission cancelled during that step."""
    change = lifecycle.cancelled_in_step(running(67, "tool_execution"), LATER)
    assert change.mission is not None
    assert change.mission.status == Status.CANCELLED
    assert change.mission.percent == 67
    assert change.events == (
        NewEvent(
            "mission_cancelled",
            "Mission cancelled at 67% during tool_execution",
            "tool_execution",
            67,
        ),
    )


def test_cancelled_at_boundary_shows_the_boundary_not_the_step_about_to_start() -> None:
    """A cancel seen at a step boundary ends the mission with the progress of that boundary."""
    boundary = progress(30, None)
    before = running(40, "tool_selection", cancel_requested=True)
    change = lifecycle.cancelled_at_boundary(before, LATER, boundary)
    assert change.mission is not None
    assert change.mission.status == Status.CANCELLED
    assert change.mission.progress == replace(boundary, estimated_time_remaining=0.0)
    assert change.events == (NewEvent("mission_cancelled", "Mission cancelled at 30%", None, 30),)


# ---- recovery ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stalled_one", "expected"),
    [
        (running(lease_expires_at=LATER - timedelta(seconds=1)), True),
        (running(lease_expires_at=LATER), True),
        (running(lease_expires_at=None), True),
        (running(lease_expires_at=LATER + timedelta(seconds=1)), False),
        (mission("queued", lease_expires_at=LATER - timedelta(seconds=1)), False),
        (mission("completed"), False),
    ],
    ids=["lease-ran-out", "lease-ends-now", "no-lease", "lease-live", "queued", "completed"],
)
def test_stalled_is_running_without_a_live_lease(stalled_one: Mission, expected: bool) -> None:
    """A running mission whose lease is not live has stalled; nothing else has."""
    assert lifecycle.stalled(stalled_one, LATER) is expected


def test_give_up_fails_the_mission_at_the_step_it_was_in() -> None:
    """Recovery fails a mission naming the step it was in, with the code and message given."""
    change = lifecycle.give_up(running(55, "tool_execution"), LATER, "stalled", "Stalled: ...")
    assert change.mission is not None
    assert change.mission.status == Status.FAILED
    assert change.mission.record.error == StepError("tool_execution", "stalled", "Stalled: ...")
    (event,) = change.events
    assert event.message == "Mission failed at tool_execution: Stalled: ..."


@pytest.mark.parametrize(
    "before",
    [mission("queued"), running(10, None)],
    ids=["never-started", "between-steps"],
)
def test_give_up_with_no_step_running_blames_the_delivery(before: Mission) -> None:
    """When no step was running, the failure is named after the delivery."""
    change = lifecycle.give_up(before, LATER, "dead_lettered", "gave up")
    assert change.mission is not None
    assert change.mission.status == Status.FAILED
    assert change.mission.record.error == StepError("delivery", "dead_lettered", "gave up")
    (event,) = change.events
    assert (event.step_name, event.message) == ("delivery", "Mission failed at delivery: gave up")


def test_cancel_stalled_ends_cancelled_saying_the_worker_had_stopped() -> None:
    """A stalled mission whose owner asked to cancel ends cancelled, as asked."""
    before = running(45, "tool_execution", cancel_requested=True, lease_expires_at=START)
    change = lifecycle.cancel_stalled(before, LATER)
    assert change.mission is not None
    assert (change.mission.status, change.mission.lease_expires_at) == (Status.CANCELLED, None)
    assert change.events == (
        NewEvent(
            "mission_cancelled", "Mission cancelled at 45% (its worker had stopped)", None, 45
        ),
    )


def test_recovered_counts_a_recovery_and_restarts_a_queued_wait() -> None:
    """Each recovery is counted; a queued mission's wait counts afresh from now, a running
    mission keeps its times."""
    queued = mission("queued", queued_at=START).with_record(recoveries=2)
    again = lifecycle.recovered(queued, LATER)
    assert again == Change(
        replace(queued, queued_at=LATER, updated_at=LATER).with_record(recoveries=3)
    )
    stalled = running(40, queued_at=START)
    revived = lifecycle.recovered(stalled, LATER)
    assert revived == Change(replace(stalled, updated_at=LATER).with_record(recoveries=1))


# ---- derived -------------------------------------------------------------------------------

IN_FLIGHT = ["queued", "running"]
GROUNDED = [s for s in ALL if s not in IN_FLIGHT]
STATUS_PAIRS = (
    [(b, a, 1) for b in GROUNDED for a in IN_FLIGHT]
    + [(b, a, -1) for b in IN_FLIGHT for a in GROUNDED]
    + [(b, a, 0) for b in IN_FLIGHT for a in IN_FLIGHT]
    + [(b, a, 0) for b in GROUNDED for a in GROUNDED]
)


@pytest.mark.parametrize(
    ("before", "after", "delta"),
    STATUS_PAIRS,
    ids=[f"{b}-to-{a}" for b, a, _ in STATUS_PAIRS],
)
def test_active_delta_counts_moves_into_and_out_of_flight(
    before: str, after: str, delta: int
) -> None:
    """+1 into queued/running, -1 out of them, 0 otherwise."""
    assert lifecycle.active_delta(mission(before), Change(mission(after))) == delta


@pytest.mark.parametrize("status", ALL)
def test_active_delta_of_a_change_that_writes_nothing_is_zero(status: str) -> None:
    """A change without a mission moves nothing in or out of flight."""
    assert lifecycle.active_delta(mission(status), Change()) == 0


def test_with_record_starts_a_record_from_the_missions_status() -> None:
    """Setting record fields on a mission without a record starts one in its status."""
    record = mission("running").with_record(tool_used="calculate").execution_record
    assert record == ExecutionRecord(Status.RUNNING, tool_used="calculate")
