"""Exactly-once effects under crashes and redelivery, retries, and recovery — with fakes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from buddy.domain.lifecycle import cancel
from buddy.domain.mission import Cost, Intent, Status, StepError
from buddy.domain.progress import MissionProgressTracker
from buddy.errors import DependencyUnavailable, InvalidTransition
from buddy.service.execution import MissionBusy, Outcome
from buddy.service.progress_writer import MissionCancelled, ProgressWriter
from buddy.service.recovery import Recovery
from buddy.service.stages import STAGE_NAMES, STAGES
from buddy.tools import ToolError, ToolRegistry, ToolResult

from .conftest import ManualHeartbeat
from .fakes import (
    FakeClock,
    FakeDurationStats,
    FakeMissionStore,
    FakePublisher,
    FakeTool,
    seed_mission,
)

LEASE = 60.0
RESUMED = " (resumed after the previous worker stopped)"
TERMINAL_EVENTS = {"mission_completed", "mission_failed", "mission_cancelled"}


class WorkerDied(BaseException):
    """The process vanished: nothing after this point happens (like SIGKILL)."""


def die_at_write(store: FakeMissionStore, n: int, error: type[BaseException] = WorkerDied) -> None:
    """The nth write raises `error` before it lands (by default, the worker dies there)."""
    calls = {"count": 0}

    def maybe_die() -> None:
        calls["count"] += 1
        if calls["count"] == n:
            raise error("Mission m is too busy right now; try again")

    store.before_apply = maybe_die


def flaky(failures: int, message: str = "Connection timeout", transient: bool = True) -> Any:
    """A tool hook that fails `failures` times, then works."""
    left = {"n": failures}

    def run() -> None:
        if left["n"] > 0:
            left["n"] -= 1
            raise ToolError(message, transient=transient)

    return run


def writer_for(store: FakeMissionStore, clock: FakeClock, mission_id: str) -> ProgressWriter:
    """A progress writer over a fresh tracker of the mission, as a run wires them."""
    tracker = MissionProgressTracker(mission_id, STAGES, clock)
    writer = ProgressWriter(store, tracker, clock, min_interval_seconds=1.0, lease_seconds=LEASE)
    tracker.register_callback(writer)
    return writer


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
    assert store.apply_calls == write  # it did die at that write
    store.before_apply = lambda: None
    clock.advance(LEASE + 1)  # the dead run's lease runs out

    assert make_runner(interval=interval, lease_seconds=LEASE).run(mid) == Outcome.COMPLETED
    final = store.missions[mid]
    assert final.status == final.record.status == Status.COMPLETED
    assert final.progress is not None
    assert [s.step_name for s in final.progress.completed_steps] == list(STAGE_NAMES)
    # The claim never landed when it died at the first write: then nothing is taken over.
    assert final.record.runs == (1 if write == 1 else 2)
    assert list(store.artifacts) == [f"a_{mid}"]
    assert store.artifacts[f"a_{mid}"].content == "14"
    assert final.record.cost_usd == Cost(0.0001, 0.0001)
    assert final.record.result_summary == "2*(3+4) = 14"
    events = store.event_log[mid]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    types = [e.type for e in events]
    assert types.count("step_completed") == 7 and types.count("mission_completed") == 1
    completed = [e.step_name for e in events if e.type == "step_completed"]
    assert completed == list(STAGE_NAMES)
    percents = store.written_percents()
    assert percents == sorted(percents)
    assert len(stats.recorded) == 1
    assert set(stats.recorded[0]) == {*STAGE_NAMES, "tool_execution:calculate"}


@pytest.mark.parametrize(
    ("write", "reruns"),
    [(7, "artifact_creation"), (8, "finalize")],
    ids=["dies-before-finalize", "dies-at-the-end"],
)
def test_a_resumed_run_reads_completed_stages_outputs_instead_of_running_them(
    store: FakeMissionStore, clock: FakeClock, make_runner, write: int, reruns: str
) -> None:
    """Killed after tool_execution completed, the run is resumed from the next stage: the tool
    is not run again, and the artifact and cost come from the first run's memoized result."""
    runs: list[int] = []
    tool = FakeTool("fake", estimated_cost_usd=0.25)

    def run_once_more() -> None:
        runs.append(len(runs) + 1)
        tool.result = ToolResult(
            title=f"Result of run {len(runs)}",
            summary=f"run {len(runs)} done",
            content=f"content of run {len(runs)}",
            cost_usd=0.2,
        )

    tool.on_run = run_once_more
    mid = seed_mission(store, tool="fake")
    die_at_write(store, write)
    with pytest.raises(WorkerDied):
        make_runner(ToolRegistry([tool]), interval=0, lease_seconds=LEASE).run(mid)
    assert store.missions[mid].progress is not None
    assert store.missions[mid].progress.done == set(STAGE_NAMES[: STAGE_NAMES.index(reruns)])
    store.before_apply = lambda: None
    clock.advance(LEASE + 1)

    resumed = make_runner(ToolRegistry([tool]), interval=0, lease_seconds=LEASE)
    assert resumed.run(mid) == Outcome.COMPLETED
    assert runs == [1]
    final = store.missions[mid]
    artifact = store.artifacts[f"a_{mid}"]
    assert (artifact.title, artifact.content) == ("Result of run 1", "content of run 1")
    assert final.record.cost_usd == Cost(0.25, 0.2)
    assert final.record.result_summary == "run 1 done"
    assert final.record.tool_used == "fake"
    started = [e for e in store.event_log[mid] if e.type == "step_started"]
    assert [e.step_name for e in started if e.message.endswith(RESUMED)] == [reruns]


class TooBusy(DependencyUnavailable):
    """Firestore too busy for a write (contention past the store's patience): a 503."""


@pytest.mark.parametrize("steps_written", [6, 7], ids=["end-lost", "end-lost-after-last-step"])
def test_a_run_whose_end_could_not_be_written_is_ended_once_by_the_next_delivery(
    store: FakeMissionStore,
    clock: FakeClock,
    stats: FakeDurationStats,
    heartbeat: ManualHeartbeat,
    make_runner,
    steps_written: int,
) -> None:
    """The write of a run's end failing (Firestore too busy) leaves the mission running
    with its lease: the run's heartbeat writes nothing more, and the redelivery ends it,
    once — also when every step's completion had been written without the end (what an
    earlier heartbeat left in missions that then stayed running forever)."""
    mid = seed_mission(store, objective="calculate 2*(3+4)")
    die_at_write(store, 8, TooBusy)  # every boundary written: the 8th write is the end
    with pytest.raises(TooBusy):
        make_runner(interval=0, lease_seconds=LEASE).run(mid)
    store.before_apply = lambda: None
    calls = store.apply_calls
    clock.advance(LEASE / 2)
    heartbeat.beat()  # the failed run's heartbeat, before its thread stops
    assert store.apply_calls == calls  # it wrote neither the end's events nor a lease
    stuck = store.missions[mid]
    assert stuck.status == Status.RUNNING and stuck.progress is not None
    assert len(stuck.progress.done) == 6
    if steps_written == 7:
        heartbeat.writers[-1]._ending = False  # as the heartbeat was: it writes what's pending
        heartbeat.beat()
        stuck = store.missions[mid]
        assert stuck.status == Status.RUNNING and stuck.progress is not None
        assert len(stuck.progress.done) == 7
    clock.advance(LEASE)

    assert make_runner(interval=0, lease_seconds=LEASE).run(mid) == Outcome.COMPLETED
    final = store.missions[mid]
    assert final.status == Status.COMPLETED and final.percent == 100
    assert final.progress is not None
    assert [s.step_name for s in final.progress.completed_steps] == list(STAGE_NAMES)
    types = [e.type for e in store.event_log[mid]]
    assert types.count("mission_completed") == 1 and types[-1] == "mission_completed"
    assert list(store.artifacts) == [f"a_{mid}"]
    assert final.record.result_summary == "2*(3+4) = 14"
    assert len(stats.recorded) == 1


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
    writes, holder = len(store.written), store.missions[mid].run_id
    runner = make_runner(lease_seconds=LEASE)

    def the_other_run_heartbeats(seconds: float) -> None:
        clock.advance(seconds)
        renewed = clock.now + timedelta(seconds=LEASE)
        store.put(replace(store.missions[mid], lease_expires_at=renewed))

    runner.sleep = the_other_run_heartbeats
    with pytest.raises(MissionBusy):
        runner.run(mid)
    assert len(store.written) == writes
    assert store.missions[mid].status == Status.RUNNING
    assert store.missions[mid].run_id == holder


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
    final = store.missions[mid]
    assert final.status == Status.COMPLETED
    assert final.record.runs == 2
    # Writes 2 and 3 completed verification and intent_classification: it resumes after them.
    resumed = [e for e in store.event_log[mid] if e.message.endswith(RESUMED)]
    assert [(e.type, e.step_name) for e in resumed] == [("step_started", "budget_check")]
    assert [e.type for e in store.event_log[mid]].count("step_completed") == 7


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
    assert store.missions[mid].record.attempt == 3
    retries = [e for e in store.event_log[mid] if e.type == "retry_scheduled"]
    assert [e.attempt for e in retries] == [2, 3]
    assert [e.message.split(":")[0] for e in retries] == [
        "Attempt 1 of 3 failed",
        "Attempt 2 of 3 failed",
    ]
    assert all(
        "Connection timeout" in e.message and "trying again in" in e.message for e in retries
    )
    assert all(e.step_name == "tool_execution" for e in retries)
    assert clock.now - start >= timedelta(seconds=1 + 2)  # exponential backoff was waited


def test_a_tool_that_keeps_failing_transiently_fails_after_the_bound(
    store: FakeMissionStore, make_runner
) -> None:
    """Retries are bounded; the mission fails with the last error and the number of tries."""
    runs: list[int] = []
    failing = flaky(99, "example.com answered HTTP 503")

    def run() -> None:
        runs.append(1)
        failing()

    mid = seed_mission(store, tool="fake")
    runner = make_runner(
        ToolRegistry([FakeTool("fake", on_run=run)]),
        retry_backoff_seconds=0.0,
        tool_max_attempts=3,
    )
    assert runner.run(mid) == Outcome.FAILED
    assert store.missions[mid].record.error == StepError(
        "tool_execution",
        "step_failed",
        "Tool execution failed: example.com answered HTTP 503 (after 3 attempts)",
    )
    assert len(runs) == 3
    assert store.event_types(mid).count("retry_scheduled") == 2


def test_permanent_tool_errors_fail_at_once(store: FakeMissionStore, make_runner) -> None:
    """A permanent error (a 404, a bad expression) is not retried."""
    mid = seed_mission(store, tool="fake")
    tool = FakeTool("fake", on_run=flaky(1, "x answered HTTP 404", transient=False))
    assert make_runner(ToolRegistry([tool])).run(mid) == Outcome.FAILED
    assert store.missions[mid].record.error == StepError(
        "tool_execution", "step_failed", "Tool execution failed: x answered HTTP 404"
    )
    assert store.missions[mid].record.attempt == 1
    assert "retry_scheduled" not in store.event_types(mid)


def test_heartbeat_renews_the_lease_while_a_long_step_is_quiet(
    store: FakeMissionStore, clock: FakeClock
) -> None:
    """During a long quiet step the heartbeat keeps the lease; right after a write it waits."""
    mid = seed_mission(store)
    writer = writer_for(store, clock, mid)
    writer.tracker.start_stage(STAGES[0], "Verifying")  # claims the mission under a lease
    claimed = store.missions[mid].lease_expires_at
    assert claimed == clock.now + timedelta(seconds=LEASE)
    writes = len(store.written)
    clock.advance(5)
    writer.heartbeat()
    assert store.missions[mid].lease_expires_at == claimed  # written 5 s ago: not yet
    assert len(store.written) == writes
    clock.advance(20)
    writer.heartbeat()
    assert store.missions[mid].lease_expires_at == clock.now + timedelta(seconds=LEASE)
    assert store.missions[mid].run_id == writer.run_id
    assert store.missions[mid].status == Status.RUNNING


def test_the_runners_heartbeat_keeps_a_long_quiet_step_from_looking_stalled(
    store: FakeMissionStore, clock: FakeClock, heartbeat: ManualHeartbeat, make_runner
) -> None:
    """A tool quiet for longer than the lease keeps its mission, because the run's heartbeat
    renews the lease: the sweeper never sees it stalled, and no other delivery takes it."""
    mid = seed_mission(store, tool="fake")
    stalled_seen: list[list[str]] = []

    def quiet_for_two_leases() -> None:
        for _ in range(5):
            clock.advance(LEASE / 2.5)
            heartbeat.beat()
            stalled_seen.append([m.mission_id for m in store.stalled(clock.now)])

    runner = make_runner(ToolRegistry([FakeTool("fake", on_run=quiet_for_two_leases)]))
    assert runner.run(mid) == Outcome.COMPLETED
    assert stalled_seen == [[]] * 5
    assert store.missions[mid].record.runs == 1
    # Each beat wrote (the first one the pending boundaries, then lease renewals).
    assert len(store.written) == 1 + 5 + 1


def test_pending_progress_is_written_by_the_heartbeat_after_the_interval(
    store: FakeMissionStore, clock: FakeClock
) -> None:
    """A step that starts right after a write shows within one interval, with no effects of
    its own before it completes."""
    intent = Intent("calculate", 0.95, "a calculation verb and an arithmetic expression")
    mid = seed_mission(store)
    writer = writer_for(store, clock, mid)
    tracker = writer.tracker
    tracker.start_stage(STAGES[0], "Verifying")  # the claim, written at once
    tracker.complete_step("Verified")
    tracker.start_stage(STAGES[1], "Classifying")
    writer.include(intent=intent)  # the running step's effect
    writer.heartbeat()
    assert len(store.written) == 1  # within the interval: still pending
    clock.advance(1.0)
    writer.heartbeat()
    assert len(store.written) == 2
    shown = store.missions[mid]
    assert shown.current_step_name == STAGES[1].name
    assert shown.percent == 20
    assert shown.record.intent is None  # not before its step completes
    assert store.event_types(mid)[-3:] == ["step_started", "step_completed", "step_started"]
    clock.advance(1.0)
    tracker.complete_step("Classified")
    tracker.start_stage(STAGES[2], "Estimating")
    assert len(store.written) == 3
    assert store.missions[mid].record.intent == intent


def test_the_runners_heartbeat_shows_a_quiet_step_once_the_interval_passes(
    store: FakeMissionStore, clock: FakeClock, heartbeat: ManualHeartbeat, make_runner
) -> None:
    """Steps that start within the interval of the last write are pending; the heartbeat shows
    them once the interval passes, while the tool is still working."""
    mid = seed_mission(store, tool="fake")
    seen: list[tuple[str | None, int]] = []

    def show() -> None:
        seen.append((store.missions[mid].current_step_name, store.missions[mid].percent))

    def quiet_tool() -> None:
        heartbeat.beat()  # within the interval: nothing written yet
        show()
        clock.advance(1.0)
        heartbeat.beat()
        show()

    runner = make_runner(ToolRegistry([FakeTool("fake", on_run=quiet_tool)]), interval=1.0)
    assert runner.run(mid) == Outcome.COMPLETED
    assert seen == [("verification", 5), ("tool_execution", 55)]


def test_a_cancel_seen_between_boundaries_stops_the_next_step_at_once(
    store: FakeMissionStore, clock: FakeClock
) -> None:
    """A cancel learnt from a heartbeat's write stops the run at the next boundary, even
    inside the interval."""
    mid = seed_mission(store)
    writer = writer_for(store, clock, mid)
    tracker = writer.tracker
    tracker.start_stage(STAGES[0], "Verifying")
    store.put(replace(store.missions[mid], cancel_requested=True))  # the owner cancels
    tracker.complete_step("Verified")
    tracker.start_stage(STAGES[1], "Classifying")
    assert not writer.cancel_requested  # nothing written since: not known yet
    clock.advance(1.0)
    writer.heartbeat()
    assert writer.cancel_requested and store.missions[mid].status == Status.RUNNING
    tracker.complete_step("Classified")
    with pytest.raises(MissionCancelled):
        tracker.start_stage(STAGES[2], "Estimating")
    final = store.missions[mid]
    assert final.status == Status.CANCELLED
    assert final.percent == 30
    assert store.event_log[mid][-1].message == "Mission cancelled at 30%"
    assert "budget_check" not in {e.step_name for e in store.event_log[mid]}


def test_the_runner_stops_at_the_boundary_after_a_heartbeat_learnt_the_cancel(
    store: FakeMissionStore, clock: FakeClock, heartbeat: ManualHeartbeat, make_runner
) -> None:
    """A cancel asked while the tool works, learnt by the heartbeat's write, stops the run
    before the artifact is written, though the interval has not passed again."""
    mid = seed_mission(store, tool="fake")

    def owner_cancels_then_heartbeat() -> None:
        store.put(replace(store.missions[mid], cancel_requested=True))
        clock.advance(1.0)
        heartbeat.beat()

    tool = FakeTool("fake", on_run=owner_cancels_then_heartbeat)
    assert make_runner(ToolRegistry([tool]), interval=1.0).run(mid) == Outcome.CANCELLED
    final = store.missions[mid]
    assert final.status == Status.CANCELLED
    assert final.percent == 80
    assert store.event_log[mid][-1].message == "Mission cancelled at 80%"
    assert store.artifacts == {}
    assert "artifact_creation" not in {e.step_name for e in store.event_log[mid]}


def test_cancel_racing_completion_ends_in_one_terminal_state(
    store: FakeMissionStore, make_runner
) -> None:
    """A cancel that lands during the last step loses the race: completed, and stays so."""
    mid = seed_mission(store)
    injected: list[int] = []

    def cancel_arrives() -> None:
        mission = store.missions[mid]
        if (
            mission.status == Status.RUNNING
            and not mission.cancel_requested
            and store.event_log[mid][-1].step_name == "finalize"
        ):
            store.put(replace(mission, cancel_requested=True))
            injected.append(store.apply_calls)

    store.before_apply = cancel_arrives
    # Written at every boundary, finalize's start lands before the last write.
    assert make_runner(interval=0).run(mid) == Outcome.COMPLETED
    assert injected == [8]  # before the run's last write, while finalize ran
    final = store.missions[mid]
    assert final.status == final.record.status == Status.COMPLETED
    assert final.cancel_requested  # the cancel did land, and lost
    terminal = [t for t in store.event_types(mid) if t in TERMINAL_EVENTS]
    assert terminal == ["mission_completed"]
    with pytest.raises(InvalidTransition):
        cancel(final, store.clock())
    store.before_apply = lambda: None
    assert make_runner(interval=0).run(mid) == Outcome.SKIPPED
    assert store.missions[mid] == final


@pytest.fixture
def recovery(store: FakeMissionStore, publisher: FakePublisher, clock: FakeClock) -> Recovery:
    return Recovery(store, publisher, clock, max_recoveries=2, queue_timeout_seconds=300)


def stalled_mission(
    store: FakeMissionStore, clock: FakeClock, mission_id: str, **extra: Any
) -> str:
    mid = seed_mission(store, mission_id=mission_id, status="running")
    expired = clock.now - timedelta(seconds=1)
    store.put(replace(store.missions[mid], lease_expires_at=expired, **extra))
    return mid


def test_sweeper_republishes_stalled_and_stuck_missions(
    store: FakeMissionStore, publisher: FakePublisher, clock: FakeClock, recovery: Recovery
) -> None:
    """Runs whose lease expired and queues nobody picked up are sent to a worker again."""
    stalled = stalled_mission(store, clock, "m_stalled")
    alive = seed_mission(store, mission_id="m_alive", status="running")
    store.put(replace(store.missions[alive], lease_expires_at=clock.now + timedelta(seconds=30)))
    stuck = seed_mission(store, mission_id="m_stuck", status="queued")
    fresh = seed_mission(store, mission_id="m_fresh", status="queued")
    store.put(replace(store.missions[stuck], queued_at=clock.now - timedelta(seconds=301)))
    store.put(replace(store.missions[fresh], queued_at=clock.now - timedelta(seconds=10)))
    untouched = {mid: store.missions[mid] for mid in (alive, fresh)}

    assert recovery.sweep() == {
        "republished": 2,
        "failed": 0,
        "cancelled": 0,
        "skipped": 0,
        "expired": 0,
    }
    assert sorted(publisher.published) == [stalled, stuck]
    assert store.missions[stalled].record.recoveries == 1
    assert store.missions[stalled].status == Status.RUNNING
    assert store.missions[stuck].record.recoveries == 1
    assert store.missions[stuck].queued_at == clock.now
    assert store.missions[stuck].status == Status.QUEUED
    assert {mid: store.missions[mid] for mid in (alive, fresh)} == untouched


def test_sweeper_gives_up_after_its_bound_and_honours_cancels(
    store: FakeMissionStore, publisher: FakePublisher, clock: FakeClock, recovery: Recovery
) -> None:
    """A mission that stalls again and again is failed; a stalled one its owner cancelled ends
    cancelled — each with an event saying why."""
    hopeless = stalled_mission(store, clock, "m_hopeless")
    store.put(store.missions[hopeless].with_record(recoveries=2))
    cancelled = stalled_mission(store, clock, "m_cancelled", cancel_requested=True)

    assert recovery.sweep() == {
        "republished": 0,
        "failed": 1,
        "cancelled": 1,
        "skipped": 0,
        "expired": 0,
    }
    failed = store.missions[hopeless]
    assert failed.status == Status.FAILED
    assert failed.record.error == StepError(
        "delivery", "stalled", "Stalled: its worker stopped, and 2 recoveries did not help"
    )
    assert store.event_types(hopeless)[-1] == "mission_failed"
    assert store.missions[cancelled].status == Status.CANCELLED
    assert store.event_log[cancelled][-1].type == "mission_cancelled"
    assert store.event_log[cancelled][-1].message == (
        "Mission cancelled at 0% (its worker had stopped)"
    )
    assert publisher.published == []


def test_after_a_restart_every_running_and_queued_mission_is_taken_up_at_once(
    store: FakeMissionStore, publisher: FakePublisher, clock: FakeClock, recovery: Recovery
) -> None:
    """The local stack stopped mid-run and started again: a run whose lease has not run out
    yet is resumed now (its lease let go, so a worker takes it without waiting), a fresh
    queued one is sent again, a cancelled one ends; one a live run wrote since the stack came
    up, paused and finished ones stay as they are."""
    running = seed_mission(store, mission_id="m_running", status="running")
    store.put(replace(store.missions[running], lease_expires_at=clock.now + timedelta(seconds=50)))
    queued = seed_mission(store, mission_id="m_queued", status="queued")
    store.put(replace(store.missions[queued], queued_at=clock.now - timedelta(seconds=5)))
    cancelled = seed_mission(store, mission_id="m_cancel", status="running")
    lease = clock.now + timedelta(seconds=50)
    store.put(replace(store.missions[cancelled], lease_expires_at=lease, cancel_requested=True))
    clock.advance(1)
    booted = clock.now  # the stack came up; a run that wrote since is alive
    clock.advance(5)
    live = seed_mission(store, mission_id="m_live", status="running")
    store.put(replace(store.missions[live], lease_expires_at=clock.now + timedelta(seconds=50)))
    untouched = {
        mid: store.missions[mid]
        for mid in (
            live,
            seed_mission(store, mission_id="m_paused", status="paused"),
            seed_mission(store, mission_id="m_done", status="completed"),
            seed_mission(store, mission_id="m_proposed", status="proposed"),
        )
    }

    assert recovery.restarted(booted) == {
        "republished": 2,
        "failed": 0,
        "cancelled": 1,
        "skipped": 1,
    }
    assert sorted(publisher.published) == [queued, running]
    resumed = store.missions[running]
    assert (resumed.status, resumed.record.recoveries) == (Status.RUNNING, 1)
    assert not resumed.lease_live(clock.now)
    assert store.missions[queued].queued_at == clock.now
    assert store.missions[cancelled].status == Status.CANCELLED
    assert {mid: store.missions[mid] for mid in untouched} == untouched


@pytest.mark.parametrize(
    ("status", "lease_in", "ends"),
    [
        ("queued", None, "failed"),
        ("running", -5, "failed"),
        ("running", 30, "running"),
        ("completed", None, "completed"),
        # An execute undone after its publish failed: its message never queued anything.
        ("approved", None, "approved"),
    ],
    ids=["queued", "running-stalled", "running-alive", "completed", "approved"],
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
        lease = clock.now + timedelta(seconds=lease_in)
        store.put(replace(store.missions[mid], lease_expires_at=lease))
    before = store.missions[mid]
    recovery.dead_lettered(mid, attempts=5)
    mission = store.missions[mid]
    assert mission.status == Status(ends)
    if ends == "failed":
        assert mission.record.error == StepError(
            "delivery",
            "dead_lettered",
            "Execution gave up: the worker could not take the mission after 5 delivery attempts",
        )
        assert store.event_types(mid)[-1] == "mission_failed"
        assert mission.lease_expires_at is None
    else:
        assert mission == before
        assert store.written == []


def test_a_dead_letter_for_a_missing_mission_is_dropped(
    store: FakeMissionStore, recovery: Recovery
) -> None:
    """A dead letter whose mission is gone is logged and dropped, not raised."""
    recovery.dead_lettered("m_gone", attempts=5)
    assert store.missions == {} and store.written == []
