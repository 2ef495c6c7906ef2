"""MissionProgressTracker and ExecutionStep: percentages, callbacks, ETA."""

from __future__ import annotations

from typing import Any

import pytest

from buddy.domain.progress import (
    STAGES,
    TOTAL_STEPS,
    MissionProgressTracker,
    StepOrderError,
    rate_based_eta,
)

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


@pytest.fixture
def tracker(clock: FakeClock) -> MissionProgressTracker:
    return MissionProgressTracker("m_1", clock)


def record(tracker: MissionProgressTracker) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    tracker.register_callback(lambda event, step: seen.append((event, step)))
    return seen


def run_all(tracker: MissionProgressTracker) -> None:
    for stage in STAGES:
        tracker.start_stage(stage, f"start {stage.name}")
        tracker.complete_step(f"done {stage.name}")


def test_there_are_seven_stages_in_order() -> None:
    """The plan has the seven stages of the original design, in order."""
    assert TOTAL_STEPS == 7
    assert [(s.name, s.start_percent, s.end_percent) for s in STAGES] == STAGE_PERCENTS
    assert [s.index for s in STAGES] == list(range(1, 8))


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
            assert started.progress_percent == tracker.get_progress_percent() == start
        completed = tracker.complete_step("ok")
        if stage.name == name:
            assert completed.progress_percent == tracker.get_progress_percent() == end
            return


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
            {
                "step_name": "verification",
                "step_index": 1,
                "total_steps": 7,
                "progress_percent": 5,
                "status": "started",
                "message": "Verifying",
                "timestamp": "2025-01-01T12:00:00Z",
                "duration_seconds": 0.0,
            },
        ),
        (
            "step_completed",
            {
                "step_name": "verification",
                "step_index": 1,
                "total_steps": 7,
                "progress_percent": 10,
                "status": "completed",
                "message": "Verified",
                "timestamp": "2025-01-01T12:00:02Z",
                "duration_seconds": 2.0,
            },
        ),
    ]


def test_callbacks_receive_step_failed(tracker: MissionProgressTracker) -> None:
    """A failed step is announced as step_failed with its message and current percent."""
    seen = record(tracker)
    tracker.start_stage(STAGES[2], "Estimating")
    tracker.fail_step("Budget exceeded")
    event, step = seen[-1]
    assert event == "step_failed"
    assert (step["step_name"], step["status"], step["message"], step["progress_percent"]) == (
        "budget_check",
        "failed",
        "Budget exceeded",
        30,
    )
    assert tracker.current_step is not None and tracker.current_step.status == "failed"


def test_callbacks_receive_step_progress_with_detail(tracker: MissionProgressTracker) -> None:
    """Sub-step progress is announced as step_progress with its done/total detail."""
    seen = record(tracker)
    tracker.start_stage(STAGES[4], "Running")
    tracker.report_detail(3, 5, "pages", "page 3 of 5")
    event, step = seen[-1]
    assert event == "step_progress"
    assert step["detail"] == {"done": 3, "total": 5, "unit": "pages"}
    assert step["message"] == "page 3 of 5"
    assert step["status"] == "started"


def test_completed_steps_are_listed_in_order_once_each(tracker: MissionProgressTracker) -> None:
    """After a full run every stage appears once, in order, and progress is 100."""
    run_all(tracker)
    assert [s.step_name for s in tracker.completed_steps] == [p[0] for p in STAGE_PERCENTS]
    assert all(s.status == "completed" for s in tracker.completed_steps)
    assert tracker.get_progress_percent() == 100
    assert tracker.current_step is None


@pytest.mark.parametrize(
    ("asked_start", "asked_end"), [(0, 1), (-50, -1), (49, 49)], ids=["zero", "negative", "equal"]
)
def test_percent_never_decreases(
    tracker: MissionProgressTracker, asked_start: int, asked_end: int
) -> None:
    """Asking for a lower percent than already reached leaves progress where it is."""
    tracker.start_step("first", 1, 2, 50, "go")
    tracker.complete_step("done", progress_percent=60)
    tracker.start_step("second", 2, 2, asked_start, "again")
    assert tracker.get_progress_percent() == 60
    tracker.complete_step("done", progress_percent=asked_end)
    assert tracker.get_progress_percent() == 60
    assert tracker.completed_steps[-1].progress_percent == 60


def test_percent_is_capped_at_100(tracker: MissionProgressTracker) -> None:
    """A percent above 100 is shown as 100."""
    tracker.start_step("odd", 1, 1, 250, "go")
    assert tracker.get_progress_percent() == 100


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
    assert tracker.get_progress_percent() == expected


def test_report_detail_never_reaches_end_before_complete(
    tracker: MissionProgressTracker,
) -> None:
    """However many sub-steps finish, only complete_step reaches the stage's end percent."""
    tracker.start_step("tool_execution", 5, 7, 55, "Running")
    percents = []
    for done in range(1001):
        tracker.report_detail(done, 1000, "items")
        percents.append(tracker.get_progress_percent())
    assert percents == sorted(percents)
    assert max(percents) < 80
    tracker.complete_step("done")
    assert tracker.get_progress_percent() == 80


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


def test_step_to_dict_omits_missing_detail(tracker: MissionProgressTracker) -> None:
    """An ExecutionStep without sub-step detail serialises without a detail key."""
    step = tracker.start_stage(STAGES[0], "go")
    assert "detail" not in step.to_dict()


def test_to_dict_shape(tracker: MissionProgressTracker, clock: FakeClock) -> None:
    """The tracker serialises to the original design's progress document."""
    tracker.start_stage(STAGES[0], "go")
    tracker.complete_step("ok")
    tracker.start_stage(STAGES[1], "classifying")
    clock.advance(4)
    data = tracker.to_dict()
    assert set(data) == {
        "mission_id",
        "start_time",
        "current_step",
        "completed_steps",
        "progress_percent",
        "elapsed_seconds",
        "estimated_time_remaining",
        "updated_at",
    }
    assert data["mission_id"] == "m_1"
    assert data["start_time"] == "2025-01-01T12:00:00Z"
    assert data["updated_at"] == "2025-01-01T12:00:04Z"
    assert data["current_step"]["step_name"] == "intent_classification"
    assert [s["step_name"] for s in data["completed_steps"]] == ["verification"]
    assert data["progress_percent"] == 20
    assert data["elapsed_seconds"] == 4.0
    assert data["estimated_time_remaining"] == 16.0


@pytest.mark.parametrize("finish", ["complete", "fail"], ids=["completed", "failed"])
def test_to_dict_eta_is_zero_when_finished(
    tracker: MissionProgressTracker, clock: FakeClock, finish: str
) -> None:
    """Once the run is complete or a step failed, the remaining time is 0."""
    if finish == "complete":
        run_all(tracker)
    else:
        tracker.start_stage(STAGES[0], "go")
        tracker.fail_step("no")
    clock.advance(3)
    assert tracker.to_dict()["estimated_time_remaining"] == 0.0


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
