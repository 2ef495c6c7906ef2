"""Step-by-step progress of one mission run: the original design's tracker.

Pure Python: time comes in through a clock, the stages come in as a plan (names and percent
bands), and the outside world hears about progress only through registered callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, Protocol

from buddy.domain.mission import ExecutionStep, Progress, StepDetail, StepStatus, from_iso, iso

Clock = Callable[[], datetime]
ProgressEvent = Literal["step_started", "step_progress", "step_completed", "step_failed"]
ProgressCallback = Callable[[ProgressEvent, ExecutionStep], None]

DEFAULT_ETA_SECONDS = 15.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class StagePlan(Protocol):
    """What the tracker needs to know of a stage: its name and percent band."""

    @property
    def name(self) -> str: ...

    @property
    def start_percent(self) -> int: ...

    @property
    def end_percent(self) -> int: ...


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
    """Tracks the current step, the completed ones and the overall percent of one run."""

    mission_id: str
    plan: Sequence[StagePlan]
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
        self._bands = {stage.name: stage for stage in self.plan}

    @classmethod
    def resume(
        cls,
        saved: Progress,
        plan: Sequence[StagePlan],
        clock: Clock = utc_now,
        estimator: RemainingEstimator | None = None,
    ) -> MissionProgressTracker:
        """A tracker that carries on from stored progress: completed steps kept, the
        interrupted step (if any) to be run again."""
        tracker = cls(saved.mission_id, plan, clock, estimator)
        tracker.start_time = from_iso(saved.start_time)
        tracker.completed_steps = list(saved.completed_steps)
        # Never below what clients saw: a step stopped halfway starts again from there.
        tracker._percent = saved.progress_percent
        return tracker

    @property
    def done(self) -> frozenset[str]:
        return frozenset(step.step_name for step in self.completed_steps)

    def register_callback(self, callback: ProgressCallback) -> None:
        self._callbacks.append(callback)

    def start_stage(self, stage: StagePlan, message: str) -> ExecutionStep:
        if self.current_step is not None and self.current_step.status == "started":
            raise StepOrderError(f"{self.current_step.step_name} is still running")
        now = self.clock()
        self._step_started_at = now
        self._raise_percent(stage.start_percent)
        self.current_step = ExecutionStep(
            step_name=stage.name,
            step_index=self._index(stage.name),
            total_steps=len(self.plan),
            progress_percent=self._percent,
            status="started",
            message=message,
            timestamp=iso(now),
        )
        self._emit("step_started", self.current_step)
        return self.current_step

    def report_detail(self, done: int, total: int, unit: str, message: str | None = None) -> None:
        """Sub-step progress (e.g. pages 3/5), interpolated inside the step's range."""
        step = self._running_step()
        stage = self._bands.get(step.step_name)
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

    def complete_step(self, message: str) -> ExecutionStep:
        step = self._running_step()
        stage = self._bands.get(step.step_name)
        self._raise_percent(stage.end_percent if stage else step.progress_percent)
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

    @property
    def percent(self) -> int:
        return self._percent

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
            learned = self.estimator.remaining(self.done, running, spent)
            if learned is not None:
                return learned
        return rate_based_eta(self._percent, (now - self.start_time).total_seconds())

    def snapshot(self) -> Progress:
        """The progress as clients see it, now."""
        now = self.clock()
        return Progress(
            mission_id=self.mission_id,
            start_time=iso(self.start_time),
            current_step=self.current_step,
            completed_steps=tuple(self.completed_steps),
            progress_percent=self._percent,
            elapsed_seconds=round((now - self.start_time).total_seconds(), 3),
            estimated_time_remaining=self.estimated_time_remaining(now),
            updated_at=iso(now),
        )

    def _index(self, name: str) -> int:
        names = [stage.name for stage in self.plan]
        return names.index(name) + 1 if name in names else 0

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
        for callback in self._callbacks:
            callback(event, step)
