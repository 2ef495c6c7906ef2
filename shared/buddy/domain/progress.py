"""Step-by-step progress of one mission run: the original design's tracker.

Pure Python: time comes in through a clock, and the outside world hears about
progress only through registered callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

Clock = Callable[[], datetime]
StepStatus = Literal["started", "completed", "failed"]
ProgressEvent = Literal["step_started", "step_progress", "step_completed", "step_failed"]
ProgressCallback = Callable[[ProgressEvent, dict[str, Any]], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class StagePlan:
    name: str
    index: int
    start_percent: int
    end_percent: int


STAGES: tuple[StagePlan, ...] = (
    StagePlan("verification", 1, 5, 10),
    StagePlan("intent_classification", 2, 20, 30),
    StagePlan("budget_check", 3, 30, 40),
    StagePlan("tool_selection", 4, 40, 55),
    StagePlan("tool_execution", 5, 55, 80),
    StagePlan("artifact_creation", 6, 80, 90),
    StagePlan("finalize", 7, 90, 100),
)
TOTAL_STEPS = len(STAGES)
STAGE_BY_NAME = {stage.name: stage for stage in STAGES}

DEFAULT_ETA_SECONDS = 15.0


@dataclass(frozen=True)
class StepDetail:
    done: int
    total: int
    unit: str


@dataclass(frozen=True)
class ExecutionStep:
    step_name: str
    step_index: int
    total_steps: int
    progress_percent: int
    status: StepStatus
    message: str
    timestamp: str
    duration_seconds: float = 0.0
    detail: StepDetail | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.detail is None:
            del data["detail"]
        return data


def _step_from_dict(data: dict[str, Any]) -> ExecutionStep:
    detail = data.get("detail")
    return ExecutionStep(
        **{k: v for k, v in data.items() if k != "detail"},
        detail=StepDetail(**detail) if detail else None,
    )


def rate_based_eta(progress_percent: int, elapsed_seconds: float) -> float:
    """The original design's estimate: remaining percent at the rate seen so far."""
    if progress_percent >= 100:
        return 0.0
    if progress_percent <= 0 or elapsed_seconds <= 0:
        return DEFAULT_ETA_SECONDS
    rate = progress_percent / elapsed_seconds
    return round((100 - progress_percent) / rate, 3)


class RemainingEstimator(Protocol):
    def remaining(
        self, completed: Collection[str], current: ExecutionStep | None, spent_in_current: float
    ) -> float | None:
        """Seconds left, or None to fall back to the rate-based formula."""


class StepOrderError(RuntimeError):
    """The tracker was driven out of order (a bug in the caller)."""


@dataclass
class MissionProgressTracker:
    """Tracks the current step, the completed ones and the overall percent."""

    mission_id: str
    clock: Clock = utc_now
    estimator: RemainingEstimator | None = None
    start_time: datetime = field(init=False)
    current_step: ExecutionStep | None = field(default=None, init=False)
    completed_steps: list[ExecutionStep] = field(default_factory=list, init=False)
    _percent: int = field(default=0, init=False)
    _step_started_at: datetime | None = field(default=None, init=False)
    _callbacks: list[ProgressCallback] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.start_time = self.clock()

    @classmethod
    def resume(
        cls,
        mission_id: str,
        saved: dict[str, Any],
        clock: Clock = utc_now,
        estimator: RemainingEstimator | None = None,
    ) -> MissionProgressTracker:
        """A tracker that carries on from a stored `to_dict()`: completed steps kept, the
        interrupted step (if any) to be run again."""
        tracker = cls(mission_id, clock, estimator)
        tracker.start_time = datetime.fromisoformat(saved["start_time"].replace("Z", "+00:00"))
        tracker.completed_steps = [_step_from_dict(step) for step in saved["completed_steps"]]
        if tracker.completed_steps:
            tracker._percent = tracker.completed_steps[-1].progress_percent
        return tracker

    def register_callback(self, callback: ProgressCallback) -> None:
        self._callbacks.append(callback)

    def start_step(
        self,
        step_name: str,
        step_index: int,
        total_steps: int,
        progress_percent: int,
        message: str,
    ) -> ExecutionStep:
        if self.current_step is not None and self.current_step.status == "started":
            raise StepOrderError(f"{self.current_step.step_name} is still running")
        now = self.clock()
        self._step_started_at = now
        self._raise_percent(progress_percent)
        self.current_step = ExecutionStep(
            step_name=step_name,
            step_index=step_index,
            total_steps=total_steps,
            progress_percent=self._percent,
            status="started",
            message=message,
            timestamp=iso(now),
        )
        self._emit("step_started", self.current_step)
        return self.current_step

    def start_stage(self, stage: StagePlan, message: str) -> ExecutionStep:
        return self.start_step(stage.name, stage.index, TOTAL_STEPS, stage.start_percent, message)

    def report_detail(self, done: int, total: int, unit: str, message: str | None = None) -> None:
        """Sub-step progress (e.g. pages 3/5), interpolated inside the step's range."""
        step = self._running_step()
        stage = STAGE_BY_NAME.get(step.step_name)
        if stage is not None and total > 0:
            share = min(max(done, 0), total) / total
            span = stage.end_percent - stage.start_percent
            # Stop short of the end percent: only complete_step reaches it.
            self._raise_percent(stage.start_percent + int(share * span * 0.99))
        self.current_step = replace(
            step,
            progress_percent=self._percent,
            message=message or step.message,
            detail=StepDetail(done=done, total=total, unit=unit),
            timestamp=iso(self.clock()),
        )
        self._emit("step_progress", self.current_step)

    def complete_step(self, message: str, progress_percent: int | None = None) -> ExecutionStep:
        step = self._running_step()
        stage = STAGE_BY_NAME.get(step.step_name)
        target = (
            progress_percent
            if progress_percent is not None
            else (stage.end_percent if stage else step.progress_percent)
        )
        self._raise_percent(target)
        done = self._finish(step, "completed", message)
        self.completed_steps.append(done)
        self.current_step = None
        self._emit("step_completed", done)
        return done

    def fail_step(self, message: str) -> ExecutionStep:
        failed = self._finish(self._running_step(), "failed", message)
        self.current_step = failed
        self._emit("step_failed", failed)
        return failed

    def get_progress_percent(self) -> int:
        return self._percent

    def current_step_seconds(self) -> float:
        """How long the running step has run so far (0 when none is running)."""
        if self.current_step is None or self._step_started_at is None:
            return 0.0
        return round((self.clock() - self._step_started_at).total_seconds(), 3)

    def get_elapsed_seconds(self) -> float:
        return round((self.clock() - self.start_time).total_seconds(), 3)

    def estimated_time_remaining(self, now: datetime | None = None) -> float:
        """Learned from history when the estimator knows every remaining step, else rate-based."""
        now = now or self.clock()
        step = self.current_step
        if self._percent >= 100 or (step is not None and step.status == "failed"):
            return 0.0
        if self.estimator is not None:
            running = step if step is not None and step.status == "started" else None
            started = self._step_started_at or now
            spent = (now - started).total_seconds() if running else 0.0
            done = {completed.step_name for completed in self.completed_steps}
            learned = self.estimator.remaining(done, running, spent)
            if learned is not None:
                return learned
        return rate_based_eta(self._percent, (now - self.start_time).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        now = self.clock()
        elapsed = round((now - self.start_time).total_seconds(), 3)
        return {
            "mission_id": self.mission_id,
            "start_time": iso(self.start_time),
            "current_step": self.current_step.to_dict() if self.current_step else None,
            "completed_steps": [step.to_dict() for step in self.completed_steps],
            "progress_percent": self._percent,
            "elapsed_seconds": elapsed,
            "estimated_time_remaining": self.estimated_time_remaining(now),
            "updated_at": iso(now),
        }

    def _running_step(self) -> ExecutionStep:
        if self.current_step is None or self.current_step.status != "started":
            raise StepOrderError("no step is running")
        return self.current_step

    def _finish(self, step: ExecutionStep, status: StepStatus, message: str) -> ExecutionStep:
        now = self.clock()
        started = self._step_started_at or now
        return replace(
            step,
            status=status,
            message=message,
            progress_percent=self._percent,
            timestamp=iso(now),
            duration_seconds=round((now - started).total_seconds(), 3),
        )

    def _raise_percent(self, percent: int) -> None:
        # Progress never goes backwards, whatever a caller asks for.
        self._percent = max(self._percent, min(max(percent, 0), 100))

    def _emit(self, event: ProgressEvent, step: ExecutionStep) -> None:
        payload = step.to_dict()
        for callback in self._callbacks:
            callback(event, payload)
