"""The ETA learned from earlier missions' step durations."""

from __future__ import annotations

import pytest

from buddy.domain.eta import (
    ALPHA,
    DurationStat,
    LearnedEta,
    merged,
    samples_of,
    tool_key,
    updated,
)
from buddy.domain.mission import ExecutionStep, Mission, Progress, StepDetail
from buddy.domain.progress import MissionProgressTracker
from buddy.service.execution import Outcome
from buddy.service.stages import STAGE_NAMES, STAGES
from buddy.tools import ToolRegistry

from .fakes import FakeClock, FakeDurationStats, FakeMissionStore, FakeTool, seed_mission

ALL_STEPS_ONE_SECOND = {name: DurationStat(1.0, 3) for name in STAGE_NAMES}


def running(name: str, detail: StepDetail | None = None) -> ExecutionStep:
    return ExecutionStep(name, 5, 7, 55, "started", "working", "t", detail=detail)


def finished(name: str, seconds: float) -> ExecutionStep:
    return ExecutionStep(name, 1, 7, 10, "completed", "done", "t", duration_seconds=seconds)


def test_weighted_mean_leans_towards_recent_samples() -> None:
    """Each new sample moves the mean by the smoothing factor and counts once."""
    assert ALPHA == 0.3
    stat = updated(None, 10.0)
    assert stat == DurationStat(10.0, 1)
    stat = updated(stat, 20.0)
    assert stat == DurationStat(13.0, 2)  # 10 + 0.3 * (20 - 10)
    stat = updated(stat, 40.0)
    # 13 + 0.3 * (40 - 13). Weighting the old mean by 0.3 instead would give 33.1.
    assert stat == DurationStat(21.1, 3)
    assert updated(DurationStat(10.0, 1), 20.0, alpha=0.5) == DurationStat(15.0, 2)


def test_shards_merge_into_count_weighted_means() -> None:
    """Shards written by different missions read as one set of statistics."""
    result = merged(
        [{"a": DurationStat(1.0, 1)}, {"a": DurationStat(4.0, 3), "b": DurationStat(2.0, 2)}]
    )
    assert result == {"a": DurationStat(3.25, 4), "b": DurationStat(2.0, 2)}


def test_samples_key_the_tool_step_by_tool_too() -> None:
    """The tool step is recorded for all tools and for the tool that ran."""
    steps = [finished("budget_check", 0.5), finished("tool_execution", 7.0)]
    assert samples_of(steps, "web_extract") == {
        "budget_check": 0.5,
        "tool_execution": 7.0,
        tool_key("web_extract"): 7.0,
    }
    assert samples_of(steps, None) == {"budget_check": 0.5, "tool_execution": 7.0}


@pytest.mark.parametrize(
    ("completed", "current", "spent", "expected"),
    [
        pytest.param(set(), None, 0.0, 7.0, id="nothing-done"),
        pytest.param({"verification", "intent_classification"}, None, 0.0, 5.0, id="two-done"),
        pytest.param(
            set(STAGE_NAMES[:4]),
            running("tool_execution"),
            0.25,
            2.75,
            id="in-the-tool-step",
        ),
        pytest.param(
            set(STAGE_NAMES[:4]),
            running("tool_execution"),
            5.0,
            2.0,
            id="tool-step-overran",
        ),
        pytest.param(
            set(STAGE_NAMES[:4]),
            running("tool_execution", StepDetail(1, 4, "pages")),
            3.0,
            11.0,
            id="tool-reports-its-pace",
        ),
    ],
)
def test_remaining_time_adds_up_expected_steps(
    completed: set[str], current: ExecutionStep | None, spent: float, expected: float
) -> None:
    """Remaining = what is left of the current step + the expected length of the rest."""
    eta = LearnedEta(ALL_STEPS_ONE_SECOND, STAGE_NAMES)
    assert eta.remaining(completed, current, spent) == expected


def test_no_history_means_no_learned_estimate() -> None:
    """Without history for every remaining step the caller falls back to the rate formula."""
    partial = {"verification": DurationStat(1.0, 1)}
    assert LearnedEta(partial, STAGE_NAMES).remaining(set(), None, 0.0) is None
    # Only the steps still to run need history: with the rest done, one is enough.
    assert LearnedEta(partial, STAGE_NAMES).remaining(set(STAGE_NAMES[1:]), None, 0.0) == 1.0


def test_no_history_for_the_current_step_means_no_learned_estimate() -> None:
    """A running step without history or a pace of its own gives no learned estimate."""
    durations = {name: DurationStat(1.0, 1) for name in STAGE_NAMES if name != "tool_execution"}
    eta = LearnedEta(durations, STAGE_NAMES)
    assert eta.remaining(set(STAGE_NAMES[:4]), running("tool_execution"), 0.5) is None
    paced = running("tool_execution", StepDetail(1, 4, "pages"))
    assert eta.remaining(set(STAGE_NAMES[:4]), paced, 3.0) == 11.0


def test_per_tool_history_wins_over_the_all_tools_mean() -> None:
    """A tool's own duration history is used for its step when there is one."""
    durations = {**ALL_STEPS_ONE_SECOND, tool_key("slow"): DurationStat(30.0, 2)}
    assert LearnedEta(durations, STAGE_NAMES, tool="slow").expected("tool_execution") == 30.0
    assert LearnedEta(durations, STAGE_NAMES, tool="other").expected("tool_execution") == 1.0
    assert LearnedEta(durations, STAGE_NAMES, tool="slow").remaining(set(), None, 0.0) == 36.0


def test_the_tracker_uses_the_learned_estimate_when_it_has_one(clock: FakeClock) -> None:
    """With history for every remaining step the tracker's ETA is the learned one, counting
    the time already spent in the current step; without, the rate-based formula."""
    learned = MissionProgressTracker(
        "m_1", STAGES, clock, LearnedEta(ALL_STEPS_ONE_SECOND, STAGE_NAMES)
    )
    learned.start_stage(STAGES[0], "go")
    clock.advance(0.25)
    assert learned.estimated_time_remaining() == 6.75
    unknown = MissionProgressTracker("m_2", STAGES, clock, LearnedEta({}, STAGE_NAMES))
    unknown.start_stage(STAGES[0], "go")  # 5% at once
    clock.advance(1)
    assert unknown.estimated_time_remaining() == 19.0  # 95% at 5%/s


def test_learned_eta_beats_the_rate_formula_after_a_few_missions(
    store: FakeMissionStore, clock: FakeClock, stats: FakeDurationStats, make_runner
) -> None:
    """After missions with known step durations, the ETA at the tool step is within 20%."""
    tool_seconds = 8.0
    store.before_apply = lambda: clock.advance(0.2)  # every write takes a little time
    runner = make_runner(
        ToolRegistry([FakeTool("slow", on_run=lambda: clock.advance(tool_seconds))]), interval=0
    )

    def progress_of(mission: Mission) -> Progress:
        assert mission.progress is not None
        return mission.progress

    def run_one(n: int) -> tuple[float, float]:
        """Runs a mission; returns (ETA written as the tool step started, real time left then)."""
        mission_id = seed_mission(store, mission_id=f"m_{n}", tool="slow")
        first_write = len(store.written)
        assert runner.run(mission_id) == Outcome.COMPLETED
        written = store.written[first_write:]
        at_tool = next(progress_of(m) for m in written if m.current_step_name == "tool_execution")
        finished = progress_of(written[-1])
        return (
            at_tool.estimated_time_remaining,
            finished.elapsed_seconds - at_tool.elapsed_seconds,
        )

    rate_eta, real = run_one(0)  # no history yet: the rate-based formula
    assert abs(rate_eta - real) / real > 0.2
    for n in range(1, 4):
        run_one(n)
    assert len(stats.recorded) == 4
    learned_eta, real = run_one(4)
    assert abs(learned_eta - real) / real <= 0.2, (learned_eta, real)
