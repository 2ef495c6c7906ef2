"""What missions add up to: per-tool outcomes and ratings, recipes' usage, and the confidence
adjustment tool selection learns from ratings.

Aggregates are kept incrementally and exactly: `tally(mission)` is what one mission
contributes in the state it is in (a use of its recipe; once it ended, its outcome, cost and
duration; once rated, its rating), and every write of a mission adds `delta(before, after)`
to the counters in the same commit. Whatever path a mission takes — ended, rated, rated
again, retried and ended again — the counters hold the sum of the missions as they are now,
and no reader ever scans missions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from buddy.domain.mission import Mission, Status

# ("recipe", recipe_id) | ("tool", tool, intent) | ("owner_tool", owner_uid, tool, intent)
Key = tuple[str, ...]
Counters = dict[str, float]  # dotted field → amount, e.g. "days.2026-12-01.completed"
Tally = dict[Key, Counters]

MAX_ADJUSTMENT = 0.2  # the original design's cap
# Ratings it takes for half the full adjustment: a few ratings move it a little, many a lot.
HALF_WEIGHT_RATINGS = 10
DAYS_SHOWN = 30
# Durations are counted in buckets a quarter of an octave wide (a median is within ±9%).
_BUCKETS_PER_OCTAVE = 4
_SHORTEST = 0.01  # seconds: bucket 0
_LAST_BUCKET = 120


def tally(mission: Mission | None) -> Tally:
    """What the mission adds to the aggregates as it is now."""
    if mission is None or not mission.counted:
        return {}  # (a mission stored before the aggregates: never added, never taken away)
    found: Tally = {}
    if mission.recipe is not None:
        usage: Counters = {"uses": 1}
        if mission.status in {Status.COMPLETED, Status.FAILED}:
            usage[mission.status.value] = 1
        found[("recipe", str(mission.recipe["recipe_id"]))] = usage
    record = mission.record
    tool = record.tool_used
    if tool is None or mission.status not in {Status.COMPLETED, Status.FAILED, Status.CANCELLED}:
        return found
    counters: Counters = {"missions": 1, mission.status.value: 1}
    day = (mission.finished_at or mission.updated_at).date().isoformat()
    if mission.status != Status.CANCELLED:
        counters[f"days.{day}.{mission.status.value}"] = 1
    if record.cost_usd is not None and record.cost_usd.actual is not None:
        counters |= {"cost_sum": record.cost_usd.actual, "cost_n": 1}
    seconds = duration(mission)
    if seconds is not None:
        counters[f"duration.{bucket(seconds)}"] = 1
    feedback = mission.feedback
    if feedback is not None:
        counters |= {
            "ratings": 1,
            "rating_sum": feedback.rating,
            f"days.{day}.ratings": 1,
            f"days.{day}.rating_sum": feedback.rating,
        }
    intent = record.intent.name if record.intent else "unknown"
    found[("tool", tool, intent)] = counters
    found[("owner_tool", mission.owner_uid, tool, intent)] = dict(counters)
    return found


def delta(before: Mission | None, after: Mission | None) -> Tally:
    """What a write from `before` to `after` adds to the aggregates (nothing, mostly)."""
    old, new = tally(before), tally(after)
    changes: Tally = {}
    for key in old.keys() | new.keys():
        fields = old.get(key, {}).keys() | new.get(key, {}).keys()
        moved = {f: new.get(key, {}).get(f, 0) - old.get(key, {}).get(f, 0) for f in fields}
        moved = {f: v for f, v in moved.items() if v != 0}
        if moved:
            changes[key] = moved
    return changes


def duration(mission: Mission) -> float | None:
    """How long the mission ran (its progress tracker's elapsed time when it ended)."""
    progress = mission.progress
    if progress is not None and progress.elapsed_seconds > 0:
        return progress.elapsed_seconds
    if mission.started_at is not None and mission.finished_at is not None:
        return max((mission.finished_at - mission.started_at).total_seconds(), 0.0)
    return None


def bucket(seconds: float) -> int:
    if seconds <= _SHORTEST:
        return 0
    index = math.ceil(_BUCKETS_PER_OCTAVE * math.log2(seconds / _SHORTEST))
    return min(index, _LAST_BUCKET)


def bucket_value(index: int) -> float:
    """A bucket's middle (geometrically), in seconds."""
    if index <= 0:
        return _SHORTEST
    return _SHORTEST * 2 ** ((index - 0.5) / _BUCKETS_PER_OCTAVE)


# ---- confidence ----------------------------------------------------------------------------


def adjustment(ratings: int, rating_sum: float) -> float:
    """What ratings add to a tool's confidence for an intent: from the mean rating (3 is
    neutral, 5 and 1 the most either way), weighted by how many there are, never more than
    ±MAX_ADJUSTMENT. 20 ratings of 5 give +0.133, 20 of 1 give -0.133."""
    if ratings <= 0:
        return 0.0
    mean = min(max(rating_sum / ratings, 1.0), 5.0)
    weight = ratings / (ratings + HALF_WEIGHT_RATINGS)
    return MAX_ADJUSTMENT * weight * (mean - 3.0) / 2.0


def adjusted(confidence: float, ratings: int, rating_sum: float) -> float:
    return min(max(confidence + adjustment(ratings, rating_sum), 0.0), 1.0)


# ---- reading the counters ------------------------------------------------------------------


def merged(shards: Iterable[Mapping[str, float]]) -> Counters:
    """Counters summed over shards (or over a tool's intents)."""
    total: Counters = defaultdict(float)
    for shard in shards:
        for name, amount in shard.items():
            total[name] += amount
    return dict(total)


@dataclass(frozen=True)
class Day:
    date: str
    completed: int
    failed: int
    ratings: int
    mean_rating: float | None


@dataclass(frozen=True)
class ToolSummary:
    missions: int
    completed: int
    failed: int
    cancelled: int
    success_rate: float | None
    median_duration_seconds: float | None
    mean_cost_usd: float | None
    ratings: int
    mean_rating: float | None
    daily: tuple[Day, ...]


def summary(counters: Mapping[str, float], today: date) -> ToolSummary:
    """A tool's figures from its counters: rates, the median duration (from the duration
    buckets), the mean cost and rating, and the last DAYS_SHOWN days with any data."""

    def count(name: str) -> int:
        return round(counters.get(name, 0))

    completed, failed = count("completed"), count("failed")
    ratings = count("ratings")
    cost_n = count("cost_n")
    return ToolSummary(
        missions=count("missions"),
        completed=completed,
        failed=failed,
        cancelled=count("cancelled"),
        success_rate=round(completed / (completed + failed), 4) if completed + failed else None,
        median_duration_seconds=_median(counters),
        mean_cost_usd=counters.get("cost_sum", 0.0) / cost_n if cost_n else None,
        ratings=ratings,
        mean_rating=round(counters.get("rating_sum", 0) / ratings, 3) if ratings else None,
        daily=_days(counters, today),
    )


def _median(counters: Mapping[str, float]) -> float | None:
    buckets = sorted(
        (int(name.split(".")[1]), amount)
        for name, amount in counters.items()
        if name.startswith("duration.") and amount > 0
    )
    total = sum(amount for _, amount in buckets)
    if not total:
        return None
    seen = 0.0
    for index, amount in buckets:
        seen += amount
        if seen >= total / 2:
            return round(bucket_value(index), 3)
    return None  # pragma: no cover - the loop always reaches half


def _days(counters: Mapping[str, float], today: date) -> tuple[Day, ...]:
    first = (today - timedelta(days=DAYS_SHOWN - 1)).isoformat()
    by_day: dict[str, dict[str, float]] = defaultdict(dict)
    for name, amount in counters.items():
        if name.startswith("days."):
            _, day, field = name.split(".")
            if day >= first:
                by_day[day][field] = amount
    days = []
    for day in sorted(by_day):
        values: dict[str, Any] = by_day[day]
        ratings = int(values.get("ratings", 0))
        mean = round(values.get("rating_sum", 0) / ratings, 3) if ratings else None
        days.append(
            Day(day, int(values.get("completed", 0)), int(values.get("failed", 0)), ratings, mean)
        )
    return tuple(d for d in days if d.completed or d.failed or d.ratings)
