"""MissionRunner: the seven stages over a fake store, their writes and their failures."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from buddy.domain.progress import STAGES
from buddy.service.execution import MissionBusy, Outcome
from buddy.tools import ToolRegistry, default_registry
from buddy.tools.calculate import CalculateTool

from .fakes import FakeClock, FakeMissionStore, FakeTool, seed_mission

STAGE_NAMES = [stage.name for stage in STAGES]


def registry(*tools) -> ToolRegistry:
    return ToolRegistry([CalculateTool(), *tools])


def assert_percent_never_decreases(store: FakeMissionStore) -> None:
    percents = store.written_percents()
    assert percents, "no progress was written"
    assert percents == sorted(percents)


def test_calculate_mission_completes(store: FakeMissionStore, make_runner) -> None:
    """A queued calculate mission completes all seven steps in order and records its result."""
    mid = seed_mission(store, objective="calculate 2*(3+4)")
    assert make_runner().run(mid) == Outcome.COMPLETED
    mission = store.missions[mid]
    record = mission["execution_record"]
    assert mission["status"] == record["status"] == "completed"
    assert mission["finished_at"] is not None
    tracker = record["progress_tracker"]
    assert [s["step_name"] for s in tracker["completed_steps"]] == STAGE_NAMES
    assert (record["intent"]["name"], record["intent"]["confidence"]) == ("calculate", 0.95)
    assert tracker["estimated_time_remaining"] == 0.0
    assert (record["intent"]["name"], record["intent"]["confidence"]) == ("calculate", 0.95)
    assert (record["tool_used"], record["tool_confidence"]) == ("calculate", 0.95)
    assert record["cost_usd"] == {"estimated": 0.0001, "actual": 0.0001}
    assert record["result_summary"] == "2*(3+4) = 14"
    assert "error" not in record


def test_completed_mission_writes_its_artifact_once(store: FakeMissionStore, make_runner) -> None:
    """The artifact holds the result and is referenced from the execution record."""
    mid = seed_mission(store, objective="calculate 2*(3+4)")
    make_runner().run(mid)
    assert list(store.artifacts) == [f"a_{mid}"]
    artifact = store.artifacts[f"a_{mid}"]
    assert (artifact["content"], artifact["preview"], artifact["type"]) == (
        "14",
        "2*(3+4) = 14",
        "calculation",
    )
    assert (artifact["mission_id"], artifact["owner_uid"], artifact["tool"]) == (
        mid,
        "alice",
        "calculate",
    )
    assert store.missions[mid]["execution_record"]["artifact_reference"] == {
        "artifact_id": f"a_{mid}",
        "title": "2*(3+4) = 14",
        "type": "calculation",
    }


def test_completed_mission_events_are_gapless(store: FakeMissionStore, make_runner) -> None:
    """Events continue from the existing seq: started/completed per step, then completed."""
    mid = seed_mission(store)
    make_runner().run(mid)
    events = store.event_log[mid]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert store.missions[mid]["event_seq"] == len(events)
    run_events = [(e["type"], e["step_name"]) for e in events[3:]]
    expected = [(kind, name) for name in STAGE_NAMES for kind in ("step_started", "step_completed")]
    assert run_events == [*expected, ("mission_completed", None)]
    assert events[-1]["progress_percent"] == 100


def test_quick_steps_cost_two_writes_and_keep_every_event(
    store: FakeMissionStore, make_runner
) -> None:
    """Steps quicker than the interval share writes: the claim and the end, nothing between,
    while the event log still has every step, in order."""
    mid = seed_mission(store)
    make_runner(interval=1.0).run(mid)
    assert store.apply_calls == len(store.writes) == 2
    assert store.written_percents() == [5, 100]
    steps = [(e["type"], e["step_name"]) for e in store.event_log[mid] if "step" in e["type"]]
    assert steps == [(t, name) for name in STAGE_NAMES for t in ("step_started", "step_completed")]


def test_every_boundary_is_written_when_steps_outlast_the_interval(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """Steps that take longer than the interval each show: claim, six boundaries, the end."""
    mid = seed_mission(store)
    make_runner(interval=1.0, step_delay_seconds=1.0).run(mid)
    assert store.written_percents() == [5, 20, 30, 40, 55, 80, 90, 100]


@pytest.mark.parametrize(
    ("status", "objective", "budget", "step", "message"),
    [
        (
            "queued",
            "calculate 3+4",
            0.00005,
            "budget_check",
            "Budget exceeded: $0.0001 > $0.00005 limit",
        ),
        (
            "queued",
            "hello there",
            1.0,
            "tool_selection",
            "Tool selection failed: confidence 0.10 < 0.15",
        ),
        (
            "queued",
            "find python tutorials",
            1.0,
            "tool_selection",
            "Tool selection failed: web_search is not available: no search provider is "
            "configured (set BUDDY_SEARCH_URL)",
        ),
        (
            "queued",
            "calculate 1/0",
            1.0,
            "tool_execution",
            "Tool execution failed: division by zero",
        ),
    ],
    ids=["budget-tiny", "low-confidence", "no-tool", "tool-error"],
)
def test_failures_are_recorded_at_their_step(
    store: FakeMissionStore,
    make_runner,
    status: str,
    objective: str,
    budget: float,
    step: str,
    message: str,
) -> None:
    """A failing step ends the mission failed, with the step and an exact message."""
    mid = seed_mission(store, status=status, objective=objective, budget_usd=budget)
    assert make_runner().run(mid) == Outcome.FAILED
    mission = store.missions[mid]
    record = mission["execution_record"]
    assert mission["status"] == record["status"] == "failed"
    assert record["error"] == {"step_name": step, "code": "step_failed", "message": message}
    assert record["progress_tracker"]["estimated_time_remaining"] == 0.0
    last = store.event_log[mid][-1]
    assert (last["type"], last["step_name"], last["message"]) == (
        "mission_failed",
        step,
        f"Mission failed at {step}: {message}",
    )
    assert store.artifacts == {}
    assert_percent_never_decreases(store)


@pytest.mark.parametrize(
    ("cost", "budget", "message"),
    [
        (5.23, 5.00, "Budget exceeded: $5.23 > $5.00 limit"),
        (100.5, 100, "Budget exceeded: $100.50 > $100.00 limit"),
    ],
    ids=["cents", "whole-dollars"],
)
def test_budget_message_shows_dollars_and_cents(
    store: FakeMissionStore, make_runner, cost: float, budget: float, message: str
) -> None:
    """An estimate over budget fails budget_check with both amounts in dollars."""
    mid = seed_mission(store, tool="pricey", budget_usd=budget)
    runner = make_runner(registry(FakeTool("pricey", estimated_cost_usd=cost)))
    assert runner.run(mid) == Outcome.FAILED
    assert store.missions[mid]["execution_record"]["error"]["message"] == message


def test_crashing_tool_fails_the_mission_instead_of_stranding_it(
    store: FakeMissionStore, make_runner
) -> None:
    """A tool that raises something unexpected still ends the mission `failed`, with a reason."""

    def crash() -> None:
        raise MemoryError

    mid = seed_mission(store, tool="fake")
    assert make_runner(registry(FakeTool("fake", on_run=crash))).run(mid) == Outcome.FAILED
    error = store.missions[mid]["execution_record"]["error"]
    assert (error["step_name"], error["message"]) == (
        "tool_execution",
        "Tool execution failed: unexpected MemoryError",
    )


def test_owner_chosen_tool_runs_with_full_confidence(store: FakeMissionStore, make_runner) -> None:
    """A tool the owner named, serving the intent, is selected with confidence 1.0."""
    mid = seed_mission(store, tool="fake", objective="calculate 1+1")
    assert make_runner(registry(FakeTool("fake"))).run(mid) == Outcome.COMPLETED
    record = store.missions[mid]["execution_record"]
    assert (record["tool_used"], record["tool_confidence"]) == ("fake", 1.0)


@pytest.mark.parametrize(
    ("setup", "mission_id"),
    [
        (lambda store: None, "m_missing"),
        (lambda store: seed_mission(store, status="completed"), "m_test"),
        (lambda store: seed_mission(store, status="cancelled"), "m_test"),
        (lambda store: seed_mission(store, status="failed"), "m_test"),
        # An execute answered 503 was undone; its message may still arrive: never run it.
        (lambda store: seed_mission(store, status="approved"), "m_test"),
        (lambda store: seed_mission(store, status="proposed"), "m_test"),
    ],
    ids=["missing", "completed", "cancelled", "failed", "approved", "proposed"],
)
def test_unclaimable_missions_are_skipped_without_writes(
    store: FakeMissionStore, make_runner, setup, mission_id: str
) -> None:
    """A delivery for a mission that is not queued (missing, finished, or never queued)
    writes nothing and runs nothing."""
    setup(store)
    before = store.get(mission_id)
    assert make_runner().run(mission_id) == Outcome.SKIPPED
    assert store.apply_calls == 0
    assert store.get(mission_id) == before
    assert store.artifacts == {}


def test_mission_taken_by_another_delivery_is_busy(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """If another run claims the mission between read and claim, this run backs off: busy."""
    mid = seed_mission(store)

    def other_delivery_claims() -> None:
        store.missions[mid].update(
            status="running",
            run_id="someone-else",
            lease_expires_at=clock.now + timedelta(seconds=60),
        )

    store.before_apply = other_delivery_claims
    with pytest.raises(MissionBusy):
        make_runner().run(mid)
    assert store.writes == []
    assert store.missions[mid]["run_id"] == "someone-else"


def test_cancel_while_running_stops_at_the_next_boundary(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """A cancel asked during a step ends the run cancelled after that step, without artifact."""
    mid = seed_mission(store, tool="fake")

    def owner_cancels() -> None:
        store.missions[mid]["cancel_requested"] = True
        clock.advance(2)  # the tool runs on for longer than the write interval

    runner = make_runner(registry(FakeTool("fake", on_run=owner_cancels)))
    assert runner.run(mid) == Outcome.CANCELLED
    mission = store.missions[mid]
    record = mission["execution_record"]
    assert mission["status"] == record["status"] == "cancelled"
    assert mission["finished_at"] is not None
    tracker = record["progress_tracker"]
    assert tracker["progress_percent"] == 80  # tool_execution's end percent
    assert tracker["estimated_time_remaining"] == 0
    assert [s["step_name"] for s in tracker["completed_steps"]] == STAGE_NAMES[:5]
    events = store.event_log[mid]
    assert (events[-1]["type"], events[-1]["progress_percent"], events[-1]["message"]) == (
        "mission_cancelled",
        80,
        "Mission cancelled at 80%",
    )
    assert events[-2]["type"] == "step_completed"
    assert "artifact_creation" not in {e["step_name"] for e in events}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert store.artifacts == {}
    assert_percent_never_decreases(store)


@pytest.mark.parametrize(
    ("cancel_before_write", "percent", "completed"),
    [(2, 10, 1), (4, 40, 3), (7, 90, 6)],
    ids=["after-verification", "after-budget-check", "after-artifact"],
)
def test_cancel_reports_the_last_completed_steps_percent(
    store: FakeMissionStore, make_runner, cancel_before_write: int, percent: int, completed: int
) -> None:
    """A cancel seen at a boundary shows the percent of the step that finished, not the next."""
    mid = seed_mission(store)

    def owner_cancels_in_time() -> None:
        if store.apply_calls == cancel_before_write:
            store.missions[mid]["cancel_requested"] = True

    store.before_apply = owner_cancels_in_time
    assert make_runner(interval=0).run(mid) == Outcome.CANCELLED
    tracker = store.missions[mid]["execution_record"]["progress_tracker"]
    assert tracker["progress_percent"] == percent
    assert [s["step_name"] for s in tracker["completed_steps"]] == STAGE_NAMES[:completed]
    assert store.event_log[mid][-1]["message"] == f"Mission cancelled at {percent}%"
    assert store.apply_calls == cancel_before_write


def test_many_substeps_are_throttled(store: FakeMissionStore, make_runner) -> None:
    """A thousand sub-step reports within the interval cost no extra writes."""
    mid = seed_mission(store, tool="fake")
    runner = make_runner(registry(FakeTool("fake", substeps=1000)), interval=1.0)
    assert runner.run(mid) == Outcome.COMPLETED
    assert store.apply_calls <= 10
    assert store.missions[mid]["status"] == "completed"
    assert store.missions[mid]["execution_record"]["progress_tracker"]["progress_percent"] == 100
    progress = [e for e in store.event_log[mid] if e["type"] == "step_progress"]
    assert [e["message"] for e in progress] == ["item 1000/1000"]  # the latest, written later
    assert_percent_never_decreases(store)


def test_substeps_are_written_once_the_interval_passes(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """When the interval has passed, each sub-step's progress is written as it happens."""
    mid = seed_mission(store, tool="fake")
    tool = FakeTool("fake", substeps=4, on_substep=lambda: clock.advance(1.0))
    assert make_runner(registry(tool), interval=1.0).run(mid) == Outcome.COMPLETED
    progress = [e for e in store.event_log[mid] if e["type"] == "step_progress"]
    assert [e["message"] for e in progress] == [f"item {n}/4" for n in range(1, 5)]
    assert [e["progress_percent"] for e in progress] == [61, 67, 73, 79]
    assert store.missions[mid]["status"] == "completed"
    assert_percent_never_decreases(store)


def test_writes_never_exceed_the_configured_rate(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """A tool reporting every 10 ms for 10 s is written at most once a second, plus the end."""
    mid = seed_mission(store, tool="fake")
    tool = FakeTool("fake", substeps=1000, on_substep=lambda: clock.advance(0.01))
    assert make_runner(registry(tool), interval=1.0).run(mid) == Outcome.COMPLETED
    times = [w["updated_at"] for w in store.writes]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times[:-1])]
    assert 9 <= len(times) <= 12  # about one a second over ten seconds
    assert min(gaps) >= 1.0
    assert store.missions[mid]["status"] == "completed"


def test_default_registry_maps_each_intent_to_its_tool() -> None:
    """The default tools serve calculate, extract and search; search needs a provider."""
    tools = default_registry()
    assert tools.names() == ["calculate", "web_extract", "web_search"]
    for intent, name in [
        ("calculate", "calculate"),
        ("extract", "web_extract"),
        ("search", "web_search"),
    ]:
        assert tools.for_intent(intent) is tools.get(name)
    assert tools.for_intent("unknown") is None
    assert "BUDDY_SEARCH_URL" in (tools.get("web_search").unavailable_reason or "")
    configured = default_registry(search_url="http://127.0.0.1:9")
    assert configured.get("web_search").unavailable_reason is None
