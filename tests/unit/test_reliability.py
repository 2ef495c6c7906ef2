"""Exactly-once effects under crashes and redelivery, retries, and recovery — with fakes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from buddy.domain.lifecycle import InvalidTransition, cancel
from buddy.domain.progress import STAGES, MissionProgressTracker
from buddy.service.execution import MissionBusy, Outcome
from buddy.service.progress_writer import MissionCancelled, ProgressWriter
from buddy.service.recovery import Recovery
from buddy.tools import ToolError, ToolRegistry

from .fakes import (
    FakeClock,
    FakeDurationStats,
    FakeMissionStore,
    FakePublisher,
    FakeTool,
    seed_mission,
)

LEASE = 60.0
STEP_NAMES = [stage.name for stage in STAGES]


class WorkerDied(BaseException):
    """The process vanished: nothing after this point happens (like SIGKILL)."""


def die_at_write(store: FakeMissionStore, n: int) -> None:
    calls = {"count": 0}

    def maybe_die() -> None:
        calls["count"] += 1
        if calls["count"] == n:
            raise WorkerDied

    store.before_apply = maybe_die


def flaky(failures: int, message: str = "Connection timeout", transient: bool = True) -> Any:
    """A tool hook that fails `failures` times, then works."""
    left = {"n": failures}

    def run() -> None:
        if left["n"] > 0:
            left["n"] -= 1
            raise ToolError(message, transient=transient)

    return run


# Written at every boundary (no interval), a calculate mission writes its document 8 times:
# the claim, six boundaries, the end. Within one interval, twice: the claim and the end.
@pytest.mark.parametrize(
    ("interval", "write"),
    [(0.0, n) for n in range(1, 9)] + [(1.0, n) for n in (1, 2)],
    ids=[f"every-boundary-dies-at-write-{n}" for n in range(1, 9)]
    + [f"coalesced-dies-at-write-{n}" for n in (1, 2)],
)
def test_a_run_killed_at_any_write_is_resumed_without_repeating_effects(
    store: FakeMissionStore,
    clock: FakeClock,
    stats: FakeDurationStats,
    make_runner,
    interval: float,
    write: int,
) -> None:
    """Whichever write the worker dies at, a later delivery completes it: one artifact, one
    cost record, every step once, gapless events, progress that never went back, and the
    step durations counted once."""
    mid = seed_mission(store, objective="calculate 2*(3+4)")
    die_at_write(store, write)
    with pytest.raises(WorkerDied):
        make_runner(interval=interval, lease_seconds=LEASE).run(mid)
    store.before_apply = lambda: None
    clock.advance(LEASE + 1)  # the dead run's lease runs out

    assert make_runner(interval=interval, lease_seconds=LEASE).run(mid) == Outcome.COMPLETED
    final = store.missions[mid]
    assert final["status"] == "completed"
    steps = final["execution_record"]["progress_tracker"]["completed_steps"]
    assert [s["step_name"] for s in steps] == STEP_NAMES
    assert list(store.artifacts) == [f"a_{mid}"]
    assert store.artifacts[f"a_{mid}"]["content"] == "14"
    assert final["execution_record"]["cost_usd"] == {"estimated": 0.0001, "actual": 0.0001}
    events = store.event_log[mid]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types.count("step_completed") == 7 and types.count("mission_completed") == 1
    percents = store.written_percents()
    assert percents == sorted(percents)
    assert len(stats.recorded) == 1
    assert set(stats.recorded[0]) == {*STEP_NAMES, "tool_execution:calculate"}


def test_a_second_delivery_during_a_live_run_is_busy_not_lost(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """While another run keeps renewing its lease, a delivery neither runs nor drops the
    mission: it reports busy, so Pub/Sub delivers it again later."""
    mid = seed_mission(store)
    die_at_write(store, 3)
    with pytest.raises(WorkerDied):
        make_runner(interval=0, lease_seconds=LEASE).run(mid)
    store.before_apply = lambda: None
    writes = len(store.writes)
    runner = make_runner(lease_seconds=LEASE)

    def the_other_run_heartbeats(seconds: float) -> None:
        clock.advance(seconds)
        store.missions[mid]["lease_expires_at"] = clock.now + timedelta(seconds=LEASE)

    runner.sleep = the_other_run_heartbeats
    with pytest.raises(MissionBusy):
        runner.run(mid)
    assert len(store.writes) == writes
    assert store.missions[mid]["status"] == "running"


def test_a_delivery_outlives_a_dead_runs_lease_and_takes_over(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """A delivery that finds a lease nobody renews waits it out and resumes the mission."""
    mid = seed_mission(store)
    die_at_write(store, 4)
    with pytest.raises(WorkerDied):
        make_runner(interval=0, lease_seconds=LEASE).run(mid)
    store.before_apply = lambda: None
    started = clock.now
    assert make_runner(lease_seconds=LEASE).run(mid) == Outcome.COMPLETED
    assert LEASE <= (clock.now - started).total_seconds() <= LEASE + 2
    assert store.missions[mid]["execution_record"]["runs"] == 2


def test_transient_failures_are_retried_visibly(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """A tool failing twice with a timeout and then working completes, showing its retries."""
    mid = seed_mission(store, tool="fake")
    start = clock.now
    runner = make_runner(
        ToolRegistry([FakeTool("fake", on_run=flaky(2))]),
        retry_backoff_seconds=1.0,
        tool_max_attempts=3,
    )
    assert runner.run(mid) == Outcome.COMPLETED
    record = store.missions[mid]["execution_record"]
    assert record["attempt"] == 3
    retries = [e for e in store.event_log[mid] if e["type"] == "retry_scheduled"]
    assert [e["attempt"] for e in retries] == [2, 3]
    assert all(
        "Connection timeout" in e["message"] and "trying again in" in e["message"] for e in retries
    )
    assert all(e["step_name"] == "tool_execution" for e in retries)
    assert clock.now - start >= timedelta(seconds=1 + 2)  # exponential backoff was waited


def test_a_tool_that_keeps_failing_transiently_fails_after_the_bound(
    store: FakeMissionStore, make_runner
) -> None:
    """Retries are bounded; the mission fails with the last error and the number of tries."""
    mid = seed_mission(store, tool="fake")
    runner = make_runner(
        ToolRegistry([FakeTool("fake", on_run=flaky(99, "example.com answered HTTP 503"))]),
        retry_backoff_seconds=0.0,
        tool_max_attempts=3,
    )
    assert runner.run(mid) == Outcome.FAILED
    error = store.missions[mid]["execution_record"]["error"]
    assert error["message"] == (
        "Tool execution failed: example.com answered HTTP 503 (after 3 attempts)"
    )
    assert store.event_types(mid).count("retry_scheduled") == 2


def test_permanent_tool_errors_fail_at_once(store: FakeMissionStore, make_runner) -> None:
    """A permanent error (a 404, a bad expression) is not retried."""
    mid = seed_mission(store, tool="fake")
    tool = FakeTool("fake", on_run=flaky(1, "x answered HTTP 404", transient=False))
    assert make_runner(ToolRegistry([tool])).run(mid) == Outcome.FAILED
    assert "retry_scheduled" not in store.event_types(mid)


def test_heartbeat_renews_the_lease_while_a_long_step_is_quiet(
    store: FakeMissionStore, clock: FakeClock
) -> None:
    """During a long quiet step the heartbeat keeps the lease; right after a write it waits."""
    mid = seed_mission(store)
    tracker = MissionProgressTracker(mid, clock)
    writer = ProgressWriter(store, tracker, clock, min_interval_seconds=1.0, lease_seconds=LEASE)
    tracker.register_callback(writer)
    tracker.start_stage(STAGES[0], "Verifying")  # claims the mission under a lease
    claimed = store.missions[mid]["lease_expires_at"]
    assert claimed == clock.now + timedelta(seconds=LEASE)
    clock.advance(5)
    writer.heartbeat()
    assert store.missions[mid]["lease_expires_at"] == claimed  # written 5 s ago: not yet
    clock.advance(20)
    writer.heartbeat()
    assert store.missions[mid]["lease_expires_at"] == clock.now + timedelta(seconds=LEASE)
    assert store.missions[mid]["run_id"] == writer.run_id


def test_pending_progress_is_written_by_the_heartbeat_after_the_interval(
    store: FakeMissionStore, clock: FakeClock
) -> None:
    """A step that starts right after a write shows within one interval, with no effects of
    its own before it completes."""
    mid = seed_mission(store)
    tracker = MissionProgressTracker(mid, clock)
    writer = ProgressWriter(store, tracker, clock, min_interval_seconds=1.0, lease_seconds=LEASE)
    tracker.register_callback(writer)
    tracker.start_stage(STAGES[0], "Verifying")  # the claim, written at once
    tracker.complete_step("Verified")
    tracker.start_stage(STAGES[1], "Classifying")
    writer.include(intent={"name": "calculate"})  # the running step's effect
    writer.heartbeat()
    assert len(store.writes) == 1  # within the interval: still pending
    clock.advance(1.0)
    writer.heartbeat()
    assert len(store.writes) == 2
    shown = store.missions[mid]["execution_record"]
    assert shown["progress_tracker"]["current_step"]["step_name"] == STAGES[1].name
    assert "intent" not in shown  # not before its step completes
    assert store.event_types(mid)[-3:] == ["step_started", "step_completed", "step_started"]
    clock.advance(1.0)
    tracker.complete_step("Classified")
    tracker.start_stage(STAGES[2], "Estimating")
    assert store.missions[mid]["execution_record"]["intent"] == {"name": "calculate"}


def test_a_cancel_seen_between_boundaries_stops_the_next_step_at_once(
    store: FakeMissionStore, clock: FakeClock
) -> None:
    """A cancel learnt from a heartbeat's write stops the run at the next boundary, even
    inside the interval."""
    mid = seed_mission(store)
    tracker = MissionProgressTracker(mid, clock)
    writer = ProgressWriter(store, tracker, clock, min_interval_seconds=1.0, lease_seconds=LEASE)
    tracker.register_callback(writer)
    tracker.start_stage(STAGES[0], "Verifying")
    store.missions[mid]["cancel_requested"] = True  # the owner cancels
    tracker.complete_step("Verified")
    tracker.start_stage(STAGES[1], "Classifying")
    clock.advance(1.0)
    writer.heartbeat()
    assert writer.cancel_requested and store.missions[mid]["status"] == "running"
    tracker.complete_step("Classified")
    with pytest.raises(MissionCancelled):
        tracker.start_stage(STAGES[2], "Estimating")
    final = store.missions[mid]
    assert final["status"] == "cancelled"
    assert final["execution_record"]["progress_tracker"]["progress_percent"] == 30
    assert store.event_log[mid][-1]["message"] == "Mission cancelled at 30%"
    assert "budget_check" not in {e["step_name"] for e in store.event_log[mid]}


def test_cancel_racing_completion_ends_in_one_terminal_state(
    store: FakeMissionStore, make_runner
) -> None:
    """A cancel that lands during the last step loses the race: completed, and stays so."""
    mid = seed_mission(store)

    def cancel_arrives() -> None:
        if (
            store.missions[mid].get("status") == "running"
            and store.event_log[mid][-1]["step_name"] == "finalize"
        ):
            store.missions[mid]["cancel_requested"] = True

    store.before_apply = cancel_arrives
    assert make_runner().run(mid) == Outcome.COMPLETED
    final = store.missions[mid]
    assert final["status"] == "completed"
    terminal = [
        t
        for t in store.event_types(mid)
        if t.startswith("mission_")
        and t not in {"mission_created", "mission_approved", "mission_queued"}
    ]
    assert terminal == ["mission_completed"]
    with pytest.raises(InvalidTransition):
        cancel(final, store.clock())


@pytest.fixture
def recovery(store: FakeMissionStore, publisher: FakePublisher, clock: FakeClock) -> Recovery:
    return Recovery(store, publisher, clock, max_recoveries=2, queue_timeout_seconds=300)


def stalled_mission(
    store: FakeMissionStore, clock: FakeClock, mission_id: str, **extra: Any
) -> str:
    mid = seed_mission(store, mission_id=mission_id, status="running")
    store.missions[mid].update(lease_expires_at=clock.now - timedelta(seconds=1), **extra)
    return mid


def test_sweeper_republishes_stalled_and_stuck_missions(
    store: FakeMissionStore, publisher: FakePublisher, clock: FakeClock, recovery: Recovery
) -> None:
    """Runs whose lease expired and queues nobody picked up are sent to a worker again."""
    stalled = stalled_mission(store, clock, "m_stalled")
    alive = seed_mission(store, mission_id="m_alive", status="running")
    store.missions[alive]["lease_expires_at"] = clock.now + timedelta(seconds=30)
    stuck = seed_mission(store, mission_id="m_stuck", status="queued")
    fresh = seed_mission(store, mission_id="m_fresh", status="queued")
    store.missions[stuck]["queued_at"] = clock.now - timedelta(seconds=301)
    store.missions[fresh]["queued_at"] = clock.now - timedelta(seconds=10)

    assert recovery.sweep() == {"republished": 2, "failed": 0, "cancelled": 0, "skipped": 0}
    assert sorted(publisher.published) == [stalled, stuck]
    assert store.missions[stalled]["execution_record"]["recoveries"] == 1
    assert store.missions[stuck]["queued_at"] == clock.now


def test_sweeper_gives_up_after_its_bound_and_honours_cancels(
    store: FakeMissionStore, publisher: FakePublisher, clock: FakeClock, recovery: Recovery
) -> None:
    """A mission that stalls again and again is failed; a stalled one its owner cancelled ends
    cancelled — each with an event saying why."""
    hopeless = stalled_mission(store, clock, "m_hopeless")
    store.missions[hopeless]["execution_record"] = {"recoveries": 2}
    cancelled = stalled_mission(store, clock, "m_cancelled", cancel_requested=True)

    assert recovery.sweep() == {"republished": 0, "failed": 1, "cancelled": 1, "skipped": 0}
    failed = store.missions[hopeless]
    assert (failed["status"], failed["execution_record"]["error"]["code"]) == ("failed", "stalled")
    assert store.event_types(hopeless)[-1] == "mission_failed"
    assert store.missions[cancelled]["status"] == "cancelled"
    assert store.event_types(cancelled)[-1] == "mission_cancelled"
    assert publisher.published == []


@pytest.mark.parametrize(
    ("status", "lease_in", "ends"),
    [
        ("queued", None, "failed"),
        ("running", -5, "failed"),
        ("running", 30, "running"),
        ("completed", None, "completed"),
    ],
    ids=["queued", "running-stalled", "running-alive", "completed"],
)
def test_dead_letters_end_missions_that_no_run_holds(
    store: FakeMissionStore,
    clock: FakeClock,
    recovery: Recovery,
    status: str,
    lease_in: int | None,
    ends: str,
) -> None:
    """A dead-lettered message fails its mission with a clear error, unless a live run has it."""
    mid = seed_mission(store, status=status)
    if lease_in is not None:
        store.missions[mid]["lease_expires_at"] = clock.now + timedelta(seconds=lease_in)
    recovery.dead_lettered(mid, attempts=5)
    assert store.missions[mid]["status"] == ends
    if ends == "failed":
        error = store.missions[mid]["execution_record"]["error"]
        assert error["code"] == "dead_lettered"
        assert "after 5 delivery attempts" in error["message"]
