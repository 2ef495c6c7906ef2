"""MissionProgressTracker and ExecutionStep: percentages, callbacks, ETA."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from buddy.domain.mission import ExecutionStep, Progress, StepDetail
from buddy.domain.progress import (
    MissionProgressTracker,
    ProgressEvent,
    StepOrderError,
    rate_based_eta,
)
from buddy.service.stages import STAGE_NAMES, STAGES

from .fakes import FakeClock

STAGE_PERCENTS = [
    ("verification", 5, 10),
    ("intent_classification", 20, 30),
    ("budget_check", 30, 40),
    ("tool_selection", 40, 55),
    ("tool_execution", 55, 80),
    ("artifact_creation", 80, 90),
    ("finalize", 90, 100),
]


@dataclass(frozen=True)
class Band:
    """A stage of a made-up plan: just a name and a percent band."""

    name: str
    start_percent: int
    end_percent: int


@pytest.fixture
def tracker(clock: FakeClock) -> MissionProgressTracker:
    return MissionProgressTracker("m_1", STAGES, clock)


def record(tracker: MissionProgressTracker) -> list[tuple[ProgressEvent, ExecutionStep]]:
    seen: list[tuple[ProgressEvent, ExecutionStep]] = []
    tracker.register_callback(lambda event, step: seen.append((event, step)))
    return seen


def run_all(tracker: MissionProgressTracker) -> None:
    for stage in STAGES:
        tracker.start_stage(stage, f"start {stage.name}")
        tracker.complete_step(f"done {stage.name}")


def test_there_are_seven_stages_in_order(tracker: MissionProgressTracker) -> None:
    """The plan has the seven stages of the original design, in order."""
    assert [(s.name, s.start_percent, s.end_percent) for s in STAGES] == STAGE_PERCENTS
    assert list(STAGE_NAMES) == [p[0] for p in STAGE_PERCENTS]
    run_all(tracker)
    assert [(s.step_index, s.total_steps) for s in tracker.completed_steps] == [
        (n, 7) for n in range(1, 8)
    ]


@pytest.mark.parametrize(
    ("name", "start", "end"), STAGE_PERCENTS, ids=[p[0] for p in STAGE_PERCENTS]
)
def test_each_stage_reports_its_start_and_end_percent(
    tracker: MissionProgressTracker, name: str, start: int, end: int
) -> None:
    """Starting a stage shows its start percent; completing it shows its end percent."""
    for stage in STAGES:
        started = tracker.start_stage(stage, "go")
        if stage.name == name:
            assert started.progress_percent == tracker.percent == start
        completed = tracker.complete_step("ok")
        if stage.name == name:
            assert completed.progress_percent == tracker.percent == end
            return
    pytest.fail(f"{name} is not a stage")


def test_callbacks_receive_started_and_completed_with_step_data(
    tracker: MissionProgressTracker, clock: FakeClock
) -> None:
    """Callbacks hear step_started then step_completed, carrying the step's fields."""
    seen = record(tracker)
    tracker.start_stage(STAGES[0], "Verifying")
    clock.advance(2)
    tracker.complete_step("Verified")
    assert seen == [
        (
            "step_started",
            ExecutionStep(
                step_name="verification",
                step_index=1,
                total_steps=7,
                progress_percent=5,
                status="started",
                message="Verifying",
                timestamp="2025-01-01T12:00:00Z",
                duration_seconds=0.0,
            ),
        ),
        (
            "step_completed",
            ExecutionStep(
                step_name="verification",
                step_index=1,
                total_steps=7,
                progress_percent=10,
                status="completed",
                message="Verified",
                timestamp="2025-01-01T12:00:02Z",
                duration_seconds=2.0,
            ),
        ),
    ]


def test_callbacks_receive_step_failed(tracker: MissionProgressTracker) -> None:
    """A failed step is announced as step_failed with its message and current percent."""
    seen = record(tracker)
    tracker.start_stage(STAGES[2], "Estimating")
    tracker.fail_step("Budget exceeded")
    event, step = seen[-1]
    assert event == "step_failed"
    assert (step.step_name, step.status, step.message, step.progress_percent) == (
        "budget_check",
        "failed",
        "Budget exceeded",
        30,
    )
    assert tracker.current_step == step
    assert tracker.completed_steps == []


def test_callbacks_receive_step_progress_with_detail(tracker: MissionProgressTracker) -> None:
    """Sub-step progress is announced as step_progress with its done/total detail."""
    seen = record(tracker)
    tracker.start_stage(STAGES[4], "Running")
    tracker.report_detail(3, 5, "pages", "page 3 of 5")
    event, step = seen[-1]
    assert event == "step_progress"
    assert step.detail == StepDetail(done=3, total=5, unit="pages")
    assert step.message == "page 3 of 5"
    assert step.status == "started"
    assert tracker.current_step == step


def test_every_registered_callback_hears_every_event(tracker: MissionProgressTracker) -> None:
    """Each registered callback hears each event, in order."""
    first, second = record(tracker), record(tracker)
    tracker.start_stage(STAGES[4], "Running")
    tracker.report_detail(1, 2, "items")
    tracker.complete_step("done")
    assert [event for event, _ in first] == ["step_started", "step_progress", "step_completed"]
    assert second == first


def test_completed_steps_are_listed_in_order_once_each(tracker: MissionProgressTracker) -> None:
    """After a full run every stage appears once, in order, and progress is 100."""
    run_all(tracker)
    assert [s.step_name for s in tracker.completed_steps] == [p[0] for p in STAGE_PERCENTS]
    assert all(s.status == "completed" for s in tracker.completed_steps)
    assert tracker.done == frozenset(STAGE_NAMES)
    assert tracker.percent == 100
    assert tracker.current_step is None


@pytest.mark.parametrize(
    ("asked_start", "asked_end"), [(0, 1), (-50, -1), (49, 49)], ids=["zero", "negative", "equal"]
)
def test_percent_never_decreases(clock: FakeClock, asked_start: int, asked_end: int) -> None:
    """Asking for a lower percent than already reached leaves progress where it is."""
    first, second = Band("first", 50, 60), Band("second", asked_start, asked_end)
    tracker = MissionProgressTracker("m_1", [first, second], clock)
    tracker.start_stage(first, "go")
    tracker.complete_step("done")
    assert tracker.percent == 60
    assert tracker.start_stage(second, "again").progress_percent == 60
    assert tracker.percent == 60
    tracker.complete_step("done")
    assert tracker.percent == 60
    assert tracker.completed_steps[-1].progress_percent == 60


def test_percent_is_capped_at_100(clock: FakeClock) -> None:
    """A percent above 100 is shown as 100."""
    odd = Band("odd", 250, 300)
    tracker = MissionProgressTracker("m_1", [odd], clock)
    assert tracker.start_stage(odd, "go").progress_percent == 100
    assert tracker.percent == 100


def test_a_stage_outside_the_plan_has_no_index_and_keeps_its_percent(
    tracker: MissionProgressTracker,
) -> None:
    """A stage the plan does not list shows index 0, and completing it adds no percent."""
    extra = Band("extra", 30, 70)
    started = tracker.start_stage(extra, "go")
    assert (started.step_index, started.total_steps, started.progress_percent) == (0, 7, 30)
    tracker.report_detail(1, 2, "items")
    assert tracker.percent == 30
    assert tracker.complete_step("done").progress_percent == 30


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [(0, 4, 55), (1, 4, 61), (2, 4, 67), (4, 4, 79), (9, 4, 79), (1, 0, 55)],
    ids=["none", "quarter", "half", "all", "over", "no-total"],
)
def test_report_detail_interpolates_inside_tool_execution(
    tracker: MissionProgressTracker, done: int, total: int, expected: int
) -> None:
    """Sub-step progress moves within 55..80 and stops short of 80."""
    for stage in STAGES[:4]:
        tracker.start_stage(stage, "go")
        tracker.complete_step("ok")
    tracker.start_stage(STAGES[4], "Running")
    tracker.report_detail(done, total, "items")
    assert tracker.percent == expected
    assert tracker.current_step is not None
    assert tracker.current_step.progress_percent == expected


def test_report_detail_never_reaches_end_before_complete(
    tracker: MissionProgressTracker,
) -> None:
    """However many sub-steps finish, only complete_step reaches the stage's end percent."""
    tracker.start_stage(STAGES[4], "Running")
    percents = []
    for done in range(1001):
        tracker.report_detail(done, 1000, "items")
        percents.append(tracker.percent)
    assert percents == sorted(percents)
    assert percents[0] == 55 and max(percents) < 80
    tracker.complete_step("done")
    assert tracker.percent == 80


def test_report_detail_keeps_message_when_none_given(tracker: MissionProgressTracker) -> None:
    """Without a new message, the step keeps the message it started with."""
    tracker.start_stage(STAGES[4], "Running calculate")
    tracker.report_detail(1, 2, "items")
    assert tracker.current_step is not None
    assert tracker.current_step.message == "Running calculate"


def test_duration_comes_from_the_clock(tracker: MissionProgressTracker, clock: FakeClock) -> None:
    """A step's duration is the clock time between its start and its end."""
    clock.advance(10)
    tracker.start_stage(STAGES[0], "go")
    clock.advance(1.25)
    assert tracker.complete_step("ok").duration_seconds == 1.25
    tracker.start_stage(STAGES[1], "go")
    clock.advance(0.5)
    assert tracker.fail_step("no").duration_seconds == 0.5
    assert tracker.get_elapsed_seconds() == 11.75


def test_a_step_has_no_detail_until_it_reports_one(tracker: MissionProgressTracker) -> None:
    """An ExecutionStep without sub-step detail carries none (clients see no detail key)."""
    step = tracker.start_stage(STAGES[0], "go")
    assert step.detail is None
    assert tracker.complete_step("ok").detail is None


def test_snapshot_shape(tracker: MissionProgressTracker, clock: FakeClock) -> None:
    """The tracker's snapshot is the original design's progress, as of now."""
    tracker.start_stage(STAGES[0], "go")
    tracker.complete_step("ok")
    tracker.start_stage(STAGES[1], "classifying")
    clock.advance(4)
    assert tracker.snapshot() == Progress(
        mission_id="m_1",
        start_time="2025-01-01T12:00:00Z",
        current_step=ExecutionStep(
            "intent_classification", 2, 7, 20, "started", "classifying", "2025-01-01T12:00:00Z"
        ),
        completed_steps=(
            ExecutionStep("verification", 1, 7, 10, "completed", "ok", "2025-01-01T12:00:00Z"),
        ),
        progress_percent=20,
        elapsed_seconds=4.0,
        estimated_time_remaining=16.0,
        updated_at="2025-01-01T12:00:04Z",
    )


@pytest.mark.parametrize("finish", ["complete", "fail"], ids=["completed", "failed"])
def test_snapshot_eta_is_zero_when_finished(
    tracker: MissionProgressTracker, clock: FakeClock, finish: str
) -> None:
    """Once the run is complete or a step failed, the remaining time is 0."""
    if finish == "complete":
        run_all(tracker)
    else:
        tracker.start_stage(STAGES[0], "go")
        tracker.fail_step("no")
    clock.advance(3)
    snapshot = tracker.snapshot()
    assert snapshot.estimated_time_remaining == 0.0
    assert snapshot.elapsed_seconds == 3.0


def test_resume_keeps_completed_steps_and_runs_the_interrupted_one_again(
    tracker: MissionProgressTracker, clock: FakeClock
) -> None:
    """A resumed tracker keeps the saved start time, completed steps and percent; the step
    that was running when the worker stopped is to be run again."""
    for stage in STAGES[:3]:
        tracker.start_stage(stage, "go")
        clock.advance(1)
        tracker.complete_step("ok")
    tracker.start_stage(STAGES[3], "selecting")
    saved = tracker.snapshot()
    clock.advance(100)

    resumed = MissionProgressTracker.resume(saved, STAGES, clock)
    assert resumed.mission_id == "m_1"
    assert resumed.completed_steps == list(saved.completed_steps)
    assert resumed.done == frozenset(STAGE_NAMES[:3])
    assert (resumed.percent, resumed.current_step) == (40, None)
    assert resumed.get_elapsed_seconds() == 103.0  # counted from the saved start
    assert resumed.start_stage(STAGES[3], "again").progress_percent == 40
    resumed.complete_step("ok")
    assert [s.step_name for s in resumed.completed_steps] == list(STAGE_NAMES[:4])


def test_resume_of_a_run_that_completed_nothing_starts_at_zero(clock: FakeClock) -> None:
    """Resuming progress with no completed step starts from 0%, from the saved start time."""
    saved = Progress(mission_id="m_9", start_time="2025-01-01T11:59:00Z")
    resumed = MissionProgressTracker.resume(saved, STAGES, clock)
    assert (resumed.mission_id, resumed.percent, resumed.completed_steps) == ("m_9", 0, [])
    assert resumed.get_elapsed_seconds() == 60.0


@pytest.mark.parametrize(
    ("percent", "elapsed", "expected"),
    [
        (0, 10.0, 15.0),
        (50, 0.0, 15.0),
        (-5, 3.0, 15.0),
        (100, 7.0, 0.0),
        (120, 7.0, 0.0),
        (50, 10.0, 10.0),
        (25, 5.0, 15.0),
        (30, 7.0, 16.333),
    ],
    ids=["no-progress", "no-time", "negative", "done", "over-done", "half", "quarter", "rounded"],
)
def test_rate_based_eta(percent: int, elapsed: float, expected: float) -> None:
    """ETA is 15s before any progress, 0 at 100%, else remaining percent at the rate so far."""
    assert rate_based_eta(percent, elapsed) == expected


def test_start_while_a_step_runs_is_refused(tracker: MissionProgressTracker) -> None:
    """Starting a step while another is running names the running step."""
    tracker.start_stage(STAGES[0], "go")
    with pytest.raises(StepOrderError, match="verification is still running"):
        tracker.start_stage(STAGES[1], "too soon")


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.complete_step("done"),
        lambda t: t.fail_step("no"),
        lambda t: t.report_detail(1, 2, "items"),
    ],
    ids=["complete", "fail", "report"],
)
def test_acting_on_no_running_step_is_refused(tracker: MissionProgressTracker, call) -> None:
    """Completing, failing or reporting without a running step raises StepOrderError."""
    with pytest.raises(StepOrderError, match="no step is running"):
        call(tracker)
    tracker.start_stage(STAGES[0], "go")
    tracker.complete_step("ok")
    with pytest.raises(StepOrderError, match="no step is running"):
        call(tracker)
