"""What missions add up to (domain.stats): the confidence ratings teach, the counters each
write changes, and the figures read back from them."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import date, timedelta

import pytest

from buddy.domain import lifecycle, stats
from buddy.domain.mission import (
    Cost,
    Feedback,
    Intent,
    Mission,
    Progress,
    Status,
    StepError,
)

from .fakes import START

# ---- the confidence ratings teach ----------------------------------------------------------


def confidence_after(ratings: list[int], base: float) -> float:
    return stats.adjusted(base, len(ratings), sum(ratings))


@pytest.mark.parametrize("base", [0.15, 0.4, 0.7, 0.75, 0.8, 0.9, 0.95])
def test_twenty_fives_raise_confidence_five_percent_and_twenty_ones_lower_it(base: float) -> None:
    """The original design's criterion, for every confidence the classifier gives."""
    assert confidence_after([5] * 20, base) >= base * 1.05
    assert confidence_after([1] * 20, base) <= base * 0.95


def test_the_adjustment_never_passes_the_cap_and_keeps_confidence_in_range() -> None:
    for count, mean in itertools.product([1, 2, 5, 20, 100, 10_000, 10**9], [1, 2, 3, 4, 5]):
        adjustment = stats.adjustment(count, count * mean)
        assert -0.2 < adjustment < 0.2
        assert 0.0 <= stats.adjusted(0.95, count, count * mean) <= 1.0
        assert 0.0 <= stats.adjusted(0.05, count, count * mean) <= 1.0
    assert stats.adjustment(0, 0) == 0.0
    assert stats.adjustment(10, 30) == 0.0  # a mean of 3 is neutral


def test_the_adjustment_grows_with_the_mean_rating_and_with_the_number_of_ratings() -> None:
    means = [1 + step / 4 for step in range(17)]  # 1, 1.25, ..., 5
    for count in (1, 3, 20, 500):
        by_mean = [stats.adjustment(count, count * mean) for mean in means]
        assert by_mean == sorted(by_mean) and len(set(by_mean)) == len(by_mean)
    for mean in (4.5, 1.5):
        by_count = [abs(stats.adjustment(n, n * mean)) for n in range(1, 200)]
        assert by_count == sorted(by_count) and len(set(by_count)) == len(by_count)


def test_twenty_ratings_of_five_add_about_an_eighth() -> None:
    assert stats.adjustment(20, 100) == pytest.approx(0.1333, abs=1e-4)
    assert stats.adjustment(23, 23 * 3.5) == pytest.approx(0.0348, abs=1e-4)


# ---- the counters a write changes ----------------------------------------------------------


def mission(**fields: object) -> Mission:
    base = lifecycle.proposed("m_1", "alice", "calculate 1+1", (), 1.0, None, {}, START)
    return replace(base, **fields)  # type: ignore[arg-type]


def ended(status: Status, **record: object) -> Mission:
    ran = mission(status=Status.RUNNING, started_at=START).with_record(
        tool_used="calculate",
        intent=Intent("calculate", 0.95, "rule"),
        cost_usd=Cost(0.0001, 0.0002),
        progress_tracker=Progress("m_1", "", elapsed_seconds=2.0),
        **record,
    )
    return replace(ran, status=status, finished_at=START + timedelta(seconds=2))


def test_a_mission_counts_for_its_tool_and_owner_only_once_it_ended() -> None:
    running = ended(Status.COMPLETED)
    assert stats.tally(replace(running, status=Status.RUNNING)) == {}
    tally = stats.tally(running)
    counters = tally[("tool", "calculate", "calculate")]
    assert counters == tally[("owner_tool", "alice", "calculate", "calculate")]
    assert counters == {
        "missions": 1,
        "completed": 1,
        "days.2025-01-01.completed": 1,
        "cost_sum": 0.0002,
        "cost_n": 1,
        f"duration.{stats.bucket(2.0)}": 1,
    }


def test_a_mission_stored_before_the_aggregates_is_never_added_nor_taken_away() -> None:
    old = replace(ended(Status.FAILED), counted=False)
    assert stats.tally(old) == {}
    retried = lifecycle.retry(old, START, 10).mission
    assert stats.delta(old, retried) == {}


def test_a_mission_that_never_chose_a_tool_counts_for_no_tool() -> None:
    failed = replace(mission(), status=Status.FAILED, finished_at=START)
    assert stats.tally(failed) == {}


def test_rating_again_moves_only_the_rating_and_retrying_takes_the_outcome_back() -> None:
    done = ended(Status.FAILED, error=StepError("tool_execution", "x", "boom"))
    rated = replace(done, feedback=Feedback(2, START))
    assert stats.delta(done, rated)[("tool", "calculate", "calculate")] == {
        "ratings": 1,
        "rating_sum": 2,
        "days.2025-01-01.ratings": 1,
        "days.2025-01-01.rating_sum": 2,
    }
    rerated = replace(rated, feedback=Feedback(5, START))
    moved = stats.delta(rated, rerated)[("tool", "calculate", "calculate")]
    assert moved == {"rating_sum": 3, "days.2025-01-01.rating_sum": 3}
    retried = lifecycle.retry(rerated, START, 10).mission
    assert retried is not None and retried.feedback is None
    back = stats.delta(rerated, retried)[("tool", "calculate", "calculate")]
    assert back["missions"] == -1 and back["failed"] == -1 and back["ratings"] == -1
    assert stats.delta(rerated, rerated) == {}


def test_a_recipes_mission_counts_a_use_from_its_creation_and_its_end_once() -> None:
    made = mission(recipe={"recipe_id": "builtin-calculate", "version": 1, "params": {}})
    assert stats.delta(None, made) == {("recipe", "builtin-calculate"): {"uses": 1}}
    done = replace(made, status=Status.COMPLETED, finished_at=START)
    assert stats.delta(made, done) == {("recipe", "builtin-calculate"): {"completed": 1}}
    cancelled = replace(made, status=Status.CANCELLED, finished_at=START)
    assert stats.delta(made, cancelled) == {}


# ---- the figures read back -----------------------------------------------------------------


def test_the_median_duration_comes_from_buckets_within_ten_percent() -> None:
    samples = [0.3, 1.0, 1.2, 2.5, 2.6, 3.0, 40.0]
    counters = stats.merged({f"duration.{stats.bucket(s)}": 1} for s in samples)
    median = stats.summary(counters, date(2025, 1, 1)).median_duration_seconds
    assert median is not None and abs(median - 2.5) / 2.5 < 0.1
    for seconds in (0.02, 0.5, 7.0, 300.0, 86_400.0):
        assert abs(stats.bucket_value(stats.bucket(seconds)) - seconds) / seconds < 0.1


def test_a_summary_has_rates_means_and_the_last_thirty_days() -> None:
    counters = {
        "missions": 5,
        "completed": 3,
        "failed": 1,
        "cancelled": 1,
        "cost_sum": 0.3,
        "cost_n": 3,
        "ratings": 2,
        "rating_sum": 9,
        "days.2024-11-01.completed": 7,  # more than 30 days before: not shown
        "days.2024-12-30.completed": 2,
        "days.2024-12-30.ratings": 2,
        "days.2024-12-30.rating_sum": 9,
        "days.2025-01-01.failed": 1,
        "days.2025-01-01.completed": 1,
        "days.2024-12-31.completed": 0,  # all taken back: not shown
    }
    summary = stats.summary(counters, date(2025, 1, 1))
    assert (summary.success_rate, summary.mean_rating) == (0.75, 4.5)
    assert summary.mean_cost_usd == pytest.approx(0.1)
    assert summary.median_duration_seconds is None
    assert [(d.date, d.completed, d.failed, d.mean_rating) for d in summary.daily] == [
        ("2024-12-30", 2, 0, 4.5),
        ("2025-01-01", 1, 1, None),
    ]
    empty = stats.summary({}, date(2025, 1, 1))
    assert (empty.missions, empty.success_rate, empty.mean_rating, empty.daily) == (
        0,
        None,
        None,
        (),
    )
