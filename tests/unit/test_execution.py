"""MissionRunner: the seven stages over a fake store, their writes and their failures."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

import pytest

from buddy.config import Settings
from buddy.domain.mission import (
    Artifact,
    ArtifactReference,
    Change,
    Cost,
    Intent,
    Status,
    StepError,
)
from buddy.service.execution import MissionBusy, Outcome
from buddy.service.stages import STAGE_NAMES
from buddy.tools import ToolRegistry, default_registry
from buddy.tools.calculate import CalculateTool
from buddy.tools.search import provider_from_settings

from .conftest import ManualHeartbeat
from .fakes import FakeClock, FakeMissionStore, FakeTool, seed_mission


def registry(*tools) -> ToolRegistry:
    return ToolRegistry([CalculateTool(), *tools])


def assert_percent_never_decreases(store: FakeMissionStore) -> None:
    percents = store.written_percents()
    assert percents, "no progress was written"
    assert percents == sorted(percents)


def artifacts_written(store: FakeMissionStore) -> list[Artifact]:
    """Every artifact a write carried, in order (the store's dict keeps only the last)."""
    carried: list[Artifact] = []

    def watch(change: Change) -> bool:
        if change.artifact is not None:
            carried.append(change.artifact)
        return False  # never refuses: only watches

    store.refuse_when = watch
    return carried


def test_calculate_mission_completes(store: FakeMissionStore, make_runner) -> None:
    """A queued calculate mission completes all seven steps in order and records its result."""
    mid = seed_mission(store, objective="calculate 2*(3+4)")
    assert make_runner().run(mid) == Outcome.COMPLETED
    mission = store.missions[mid]
    record = mission.record
    assert mission.status == record.status == Status.COMPLETED
    assert mission.finished_at is not None
    assert mission.lease_expires_at is None  # the lease is let go
    progress = mission.progress
    assert progress is not None
    assert [s.step_name for s in progress.completed_steps] == list(STAGE_NAMES)
    assert progress.completed_steps[0].message == "Mission is approved, queued and not yet executed"
    assert progress.progress_percent == 100
    assert progress.current_step is None
    assert progress.estimated_time_remaining == 0.0
    assert record.intent == Intent(
        "calculate", 0.95, "a calculation verb and an arithmetic expression"
    )
    assert (record.tool_used, record.tool_confidence) == ("calculate", 0.95)
    assert record.cost_usd == Cost(0.0001, 0.0001)
    assert record.result_summary == "2*(3+4) = 14"
    assert record.error is None


def test_stage_outputs_are_memoized_and_the_tool_result_kept_private(
    store: FakeMissionStore, make_runner
) -> None:
    """What each stage produced is kept for a resumed run: the small outputs in the record,
    the tool's result apart from the mission document, where clients cannot read it."""
    mid = seed_mission(store, objective="calculate 2*(3+4)")
    assert make_runner().run(mid) == Outcome.COMPLETED
    outputs = store.missions[mid].record.outputs
    assert set(outputs) == set(STAGE_NAMES) - {"tool_execution"}
    assert outputs["budget_check"] == {"estimate": 0.0001}
    assert outputs["tool_selection"] == {"tool": "calculate", "confidence": 0.95}
    assert outputs["artifact_creation"] == {"artifact_id": f"a_{mid}"}
    assert set(store.private) == {mid}
    assert set(store.private[mid]) == {"tool_execution"}
    result = store.private[mid]["tool_execution"]
    assert (result["content"], result["summary"]) == ("14", "2*(3+4) = 14")


def test_completed_mission_writes_its_artifact_once(store: FakeMissionStore, make_runner) -> None:
    """The artifact holds the result and is referenced from the execution record."""
    carried = artifacts_written(store)
    mid = seed_mission(store, objective="calculate 2*(3+4)")
    make_runner().run(mid)
    assert list(store.artifacts) == [f"a_{mid}"]
    artifact = store.artifacts[f"a_{mid}"]
    assert carried == [artifact]  # one write carried it
    assert (artifact.content, artifact.preview, artifact.type) == (
        "14",
        "2*(3+4) = 14",
        "calculation",
    )
    assert (artifact.mission_id, artifact.owner_uid, artifact.tool) == (mid, "alice", "calculate")
    assert not artifact.truncated
    assert store.missions[mid].record.artifact_reference == ArtifactReference(
        f"a_{mid}", "2*(3+4) = 14", "calculation"
    )


def test_completed_mission_events_are_gapless(store: FakeMissionStore, make_runner) -> None:
    """Events continue from the existing seq: started/completed per step, then completed."""
    mid = seed_mission(store)
    make_runner().run(mid)
    events = store.event_log[mid]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert store.missions[mid].event_seq == len(events)
    assert [e.type for e in events[:3]] == ["mission_created", "mission_approved", "mission_queued"]
    run_events = [(e.type, e.step_name) for e in events[3:]]
    expected = [(kind, name) for name in STAGE_NAMES for kind in ("step_started", "step_completed")]
    assert run_events == [*expected, ("mission_completed", None)]
    assert events[-1].progress_percent == 100


def test_quick_steps_cost_two_writes_and_keep_every_event(
    store: FakeMissionStore, make_runner
) -> None:
    """Steps quicker than the interval share writes: the claim and the end, nothing between,
    while the event log still has every step, in order."""
    mid = seed_mission(store)
    make_runner(interval=1.0).run(mid)
    assert store.apply_calls == len(store.written) == 2
    assert store.written_percents() == [5, 100]
    steps = [(e.type, e.step_name) for e in store.event_log[mid] if "step" in e.type]
    assert steps == [(t, name) for name in STAGE_NAMES for t in ("step_started", "step_completed")]


def test_every_boundary_is_written_when_steps_outlast_the_interval(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """Steps that take longer than the interval each show: claim, six boundaries, the end."""
    mid = seed_mission(store)
    make_runner(interval=1.0, step_delay_seconds=1.0).run(mid)
    assert store.written_percents() == [5, 20, 30, 40, 55, 80, 90, 100]
    shown = [m.current_step_name for m in store.written]
    assert shown == [*STAGE_NAMES, None]  # each boundary shows the step it started


@pytest.mark.parametrize(
    ("objective", "budget", "step", "message"),
    [
        ("calculate 3+4", 0.00005, "budget_check", "Budget exceeded: $0.0001 > $0.00005 limit"),
        ("hello there", 1.0, "tool_selection", "Tool selection failed: confidence 0.10 < 0.15"),
        (
            "find python tutorials",
            1.0,
            "tool_selection",
            "Tool selection failed: web_search is not available: no search provider is configured",
        ),
        ("calculate 1/0", 1.0, "tool_execution", "Tool execution failed: division by zero"),
    ],
    ids=["budget-tiny", "low-confidence", "no-tool", "tool-error"],
)
def test_failures_are_recorded_at_their_step(
    store: FakeMissionStore,
    make_runner,
    objective: str,
    budget: float,
    step: str,
    message: str,
) -> None:
    """A failing step ends the mission failed, with the step and an exact message."""
    mid = seed_mission(store, objective=objective, budget_usd=budget)
    assert make_runner().run(mid) == Outcome.FAILED
    mission = store.missions[mid]
    record = mission.record
    assert mission.status == record.status == Status.FAILED
    assert mission.finished_at is not None
    assert record.error == StepError(step, "step_failed", message)
    progress = mission.progress
    assert progress is not None
    assert progress.estimated_time_remaining == 0.0
    assert progress.current_step is not None
    assert (progress.current_step.step_name, progress.current_step.status) == (step, "failed")
    assert step not in progress.done
    last = store.event_log[mid][-1]
    assert (last.type, last.step_name, last.message) == (
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
    assert store.missions[mid].record.error == StepError("budget_check", "step_failed", message)


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        (5.0, "Estimated cost $5.00 within $5.00 budget"),
        (0.0001, "Estimated cost $0.0001 within $0.0001 budget"),
    ],
    ids=["whole-dollars", "fraction-of-a-cent"],
)
def test_a_budget_equal_to_the_estimate_is_enough(
    store: FakeMissionStore, make_runner, cost: float, message: str
) -> None:
    """An estimate exactly at the budget passes budget_check: the limit is not exceeded."""
    mid = seed_mission(store, tool="exact", budget_usd=cost)
    runner = make_runner(registry(FakeTool("exact", estimated_cost_usd=cost)))
    assert runner.run(mid) == Outcome.COMPLETED
    mission = store.missions[mid]
    assert mission.progress is not None
    budget_check = mission.progress.completed_steps[STAGE_NAMES.index("budget_check")]
    assert (budget_check.step_name, budget_check.message) == ("budget_check", message)
    assert mission.record.cost_usd == Cost(cost, cost)


def test_crashing_tool_fails_the_mission_instead_of_stranding_it(
    store: FakeMissionStore, make_runner
) -> None:
    """A tool that raises something unexpected still ends the mission `failed`, with a reason."""

    def crash() -> None:
        raise MemoryError

    mid = seed_mission(store, tool="fake")
    assert make_runner(registry(FakeTool("fake", on_run=crash))).run(mid) == Outcome.FAILED
    mission = store.missions[mid]
    assert mission.status == Status.FAILED
    assert mission.record.error == StepError(
        "tool_execution", "step_failed", "Tool execution failed: unexpected MemoryError"
    )


def test_owner_chosen_tool_runs_with_full_confidence(store: FakeMissionStore, make_runner) -> None:
    """A tool the owner named, serving the intent, is selected with confidence 0.90 (room for
    good ratings to raise it)."""
    runs: list[int] = []
    mid = seed_mission(store, tool="fake", objective="calculate 1+1")
    tool = FakeTool("fake", on_run=lambda: runs.append(1))
    assert make_runner(registry(tool)).run(mid) == Outcome.COMPLETED
    record = store.missions[mid].record
    assert (record.tool_used, record.tool_confidence) == ("fake", 0.9)
    assert runs == [1]  # the owner's tool ran, not calculate
    assert record.result_summary == "fake done"


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
    before, events_before = store.get(mission_id), list(store.event_log.get(mission_id, []))
    assert make_runner().run(mission_id) == Outcome.SKIPPED
    assert store.apply_calls == 0  # not even a claim: no stage could have run
    assert store.get(mission_id) == before
    assert store.event_log.get(mission_id, []) == events_before
    assert (store.artifacts, store.private) == ({}, {})


def test_mission_taken_by_another_delivery_is_busy(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """If another run claims the mission between read and claim, this run backs off: busy."""
    mid = seed_mission(store)

    def other_delivery_claims() -> None:
        store.put(
            replace(
                store.missions[mid],
                status=Status.RUNNING,
                run_id="someone-else",
                lease_expires_at=clock.now + timedelta(seconds=60),
            )
        )

    store.before_apply = other_delivery_claims
    with pytest.raises(MissionBusy):
        make_runner().run(mid)
    assert store.apply_calls == 1  # it did try to claim
    assert store.written == []
    assert store.missions[mid].run_id == "someone-else"
    assert store.event_types(mid)[-1] == "mission_queued"


def test_cancel_while_running_stops_at_the_next_boundary(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """A cancel asked during a step ends the run cancelled after that step, without artifact."""
    mid = seed_mission(store, tool="fake")

    def owner_cancels() -> None:
        store.put(replace(store.missions[mid], cancel_requested=True))
        clock.advance(2)  # the tool runs on for longer than the write interval

    runner = make_runner(registry(FakeTool("fake", on_run=owner_cancels)))
    assert runner.run(mid) == Outcome.CANCELLED
    mission = store.missions[mid]
    assert mission.status == mission.record.status == Status.CANCELLED
    assert mission.finished_at is not None
    progress = mission.progress
    assert progress is not None
    assert progress.progress_percent == 80  # tool_execution's end percent
    assert progress.estimated_time_remaining == 0
    assert [s.step_name for s in progress.completed_steps] == list(STAGE_NAMES[:5])
    events = store.event_log[mid]
    assert (events[-1].type, events[-1].progress_percent, events[-1].message) == (
        "mission_cancelled",
        80,
        "Mission cancelled at 80%",
    )
    assert (events[-2].type, events[-2].step_name) == ("step_completed", "tool_execution")
    assert "artifact_creation" not in {e.step_name for e in events}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert store.artifacts == {}
    assert mission.record.artifact_reference is None
    # The step that completed keeps its effects: a cancel does not lose what it produced.
    assert store.private[mid]["tool_execution"]["summary"] == "fake done"
    assert_percent_never_decreases(store)


def test_a_long_tool_stops_inside_its_step_once_the_cancel_is_known(
    store: FakeMissionStore, clock: FakeClock, heartbeat: ManualHeartbeat, make_runner
) -> None:
    """A tool that checks for cancels between items stops as soon as a write (here the
    heartbeat's) has learnt of the cancel: cancelled where it got to, inside its step."""
    mid = seed_mission(store, tool="fake")
    items: list[int] = []

    def next_item() -> None:
        items.append(len(items) + 1)
        if len(items) == 2:
            store.put(replace(store.missions[mid], cancel_requested=True))
            clock.advance(1.0)
            heartbeat.beat()

    tool = FakeTool("fake", substeps=4, on_substep=next_item)
    assert make_runner(registry(tool), interval=1.0).run(mid) == Outcome.CANCELLED
    assert items == [1, 2]  # item 2 was never reported, items 3 and 4 never started
    mission = store.missions[mid]
    assert mission.status == mission.record.status == Status.CANCELLED
    assert mission.percent == 61  # item 1 of 4, inside tool_execution's band
    assert mission.progress is not None
    assert mission.progress.estimated_time_remaining == 0
    assert "tool_execution" not in mission.progress.done
    last = store.event_log[mid][-1]
    assert (last.type, last.step_name, last.message) == (
        "mission_cancelled",
        "tool_execution",
        "Mission cancelled at 61% during tool_execution",
    )
    assert (store.artifacts, store.private) == ({}, {})


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
            store.put(replace(store.missions[mid], cancel_requested=True))

    store.before_apply = owner_cancels_in_time
    assert make_runner(interval=0).run(mid) == Outcome.CANCELLED
    mission = store.missions[mid]
    assert mission.status == Status.CANCELLED
    progress = mission.progress
    assert progress is not None
    assert progress.progress_percent == percent
    assert [s.step_name for s in progress.completed_steps] == list(STAGE_NAMES[:completed])
    assert store.event_log[mid][-1].message == f"Mission cancelled at {percent}%"
    # The step that was about to start never ran: no step_started for it.
    assert STAGE_NAMES[completed] not in {e.step_name for e in store.event_log[mid]}
    assert store.apply_calls == cancel_before_write


def test_many_substeps_are_throttled(store: FakeMissionStore, make_runner) -> None:
    """A thousand sub-step reports within the interval cost no extra writes."""
    mid = seed_mission(store, tool="fake")
    runner = make_runner(registry(FakeTool("fake", substeps=1000)), interval=1.0)
    assert runner.run(mid) == Outcome.COMPLETED
    assert store.apply_calls == 2  # the claim and the end, as without sub-steps
    assert store.written_percents() == [5, 100]
    mission = store.missions[mid]
    assert mission.status == Status.COMPLETED
    assert mission.percent == 100
    progress = [e for e in store.event_log[mid] if e.type == "step_progress"]
    assert [e.message for e in progress] == ["item 1000/1000"]  # the latest, written later


def test_substeps_are_written_once_the_interval_passes(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """When the interval has passed, each sub-step's progress is written as it happens."""
    mid = seed_mission(store, tool="fake")
    tool = FakeTool("fake", substeps=4, on_substep=lambda: clock.advance(1.0))
    assert make_runner(registry(tool), interval=1.0).run(mid) == Outcome.COMPLETED
    progress = [e for e in store.event_log[mid] if e.type == "step_progress"]
    assert [e.message for e in progress] == [f"item {n}/4" for n in range(1, 5)]
    assert [e.progress_percent for e in progress] == [61, 67, 73, 79]
    assert store.written_percents() == [5, 61, 67, 73, 79, 100]
    assert store.missions[mid].status == Status.COMPLETED


def test_writes_never_exceed_the_configured_rate(
    store: FakeMissionStore, clock: FakeClock, make_runner
) -> None:
    """A tool reporting every 10 ms for 10 s is written at most once a second, plus the end."""
    mid = seed_mission(store, tool="fake")
    tool = FakeTool("fake", substeps=1000, on_substep=lambda: clock.advance(0.01))
    assert make_runner(registry(tool), interval=1.0).run(mid) == Outcome.COMPLETED
    times = [w.updated_at for w in store.written]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times[:-1])]
    assert 9 <= len(times) <= 12  # about one a second over ten seconds
    assert min(gaps) >= 1.0
    assert store.missions[mid].status == Status.COMPLETED


def test_default_registry_maps_each_intent_to_its_tool() -> None:
    """The default tools serve calculate, extract and search; search needs a provider, which
    the settings give (DuckDuckGo unless configured otherwise)."""
    tools = default_registry()
    assert tools.names() == ["calculate", "research", "web_extract", "web_search"]
    for intent, name in [
        ("calculate", "calculate"),
        ("extract", "web_extract"),
        ("search", "web_search"),
    ]:
        assert tools.for_intent(intent) is tools.get(name)
    assert tools.for_intent("unknown") is None
    assert tools.get("web_search").unavailable_reason == (
        "web_search is not available: no search provider is configured"
    )
    configured = default_registry(search_provider=provider_from_settings(Settings()))
    assert configured.get("web_search").unavailable_reason is None
    assert configured.get("web_search").provider.name == "duckduckgo"
