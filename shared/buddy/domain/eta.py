"""Time remaining, learned from how long steps took in earlier missions.

Each step (and `tool_execution` per tool) keeps an exponentially weighted mean
of its duration. The estimate is the expected duration of the steps still to
run plus what is left of the current one; without history for every remaining
step, callers fall back to the rate-based formula of the original design.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from buddy.domain.mission import ExecutionStep

ALPHA = 0.3  # weight of the newest sample: recent missions matter more
TOOL_STEP = "tool_execution"


@dataclass(frozen=True)
class DurationStat:
    mean: float
    count: int


Durations = Mapping[str, DurationStat]


def tool_key(tool: str) -> str:
    return f"{TOOL_STEP}:{tool}"


def updated(stat: DurationStat | None, sample: float, alpha: float = ALPHA) -> DurationStat:
    if stat is None:
        return DurationStat(sample, 1)
    return DurationStat(stat.mean + alpha * (sample - stat.mean), stat.count + 1)


def merged(shards: Iterable[Durations]) -> dict[str, DurationStat]:
    """One view of several shards: count-weighted means."""
    totals: dict[str, tuple[float, int]] = {}
    for shard in shards:
        for key, stat in shard.items():
            weighted, count = totals.get(key, (0.0, 0))
            totals[key] = (weighted + stat.mean * stat.count, count + stat.count)
    return {k: DurationStat(w / c, c) for k, (w, c) in totals.items() if c > 0}


def samples_of(completed: Iterable[ExecutionStep], tool: str | None) -> dict[str, float]:
    """Durations of finished steps, keyed for the statistics (the tool's step twice)."""
    samples: dict[str, float] = {}
    for step in completed:
        samples[step.step_name] = step.duration_seconds
        if step.step_name == TOOL_STEP and tool:
            samples[tool_key(tool)] = step.duration_seconds
    return samples


@dataclass(frozen=True)
class LearnedEta:
    durations: Durations
    stages: Sequence[str]  # the names of every stage, in order
    tool: str | None = None

    def expected(self, step_name: str) -> float | None:
        if step_name == TOOL_STEP and self.tool and tool_key(self.tool) in self.durations:
            return self.durations[tool_key(self.tool)].mean
        stat = self.durations.get(step_name)
        return stat.mean if stat else None

    def remaining(
        self, completed: Collection[str], current: ExecutionStep | None, spent_in_current: float
    ) -> float | None:
        """Seconds left, or None when some remaining step has no history yet."""
        total = 0.0
        for name in self.stages:
            if name in completed:
                continue
            expected = self.expected(name)
            if current is not None and name == current.step_name:
                left = _left_in_current(current, spent_in_current, expected)
                if left is None:
                    return None
                total += left
            elif expected is None:
                return None
            else:
                total += expected
        return round(total, 3)


def _left_in_current(step: ExecutionStep, spent: float, expected: float | None) -> float | None:
    detail = step.detail
    if detail is not None and 0 < detail.done < detail.total and spent > 0:
        # The tool says how far it is: extrapolate its own pace.
        return spent * (detail.total - detail.done) / detail.done
    if expected is None:
        return None
    return max(expected - spent, 0.0)
