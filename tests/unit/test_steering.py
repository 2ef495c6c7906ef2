"""Steering a mission in flight — edit, pause, resume, ask instead of fail, retry, clone — over
the fakes, with the real service, runner and recovery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from buddy import bootstrap
from buddy.domain.mission import Cost, Status
from buddy.errors import DependencyUnavailable, InvalidTransition, ValidationFailed
from buddy.schemas import CreateMission
from buddy.service.execution import Outcome
from buddy.service.missions import MissionService
from buddy.service.stages import STAGE_NAMES
from buddy.tools import ToolContext, ToolError, ToolInputs, ToolPaused, ToolRegistry, ToolResult
from buddy.tools.calculate import CalculateTool

from .fakes import FakeClock, FakeMissionStore, FakePublisher, FakeTool


class Items:
    """A long tool that works item by item and saves where it is after each one."""

    name = "items"
    description = "Counts items, one at a time"
    intents = frozenset({"calculate"})
    input_model = ToolInputs
    unavailable_reason = None
    isolated = False
    time_budget_seconds = 60.0

    def __init__(self, total: int = 5, on_item: Callable[[int], None] = lambda n: None) -> None:
        self.total = total
        self.on_item = on_item
        self.worked: list[int] = []  # every item worked on, across runs

    def estimate_cost(self, inputs: ToolInputs) -> float:
        return 0.0

    def run(self, context: ToolContext) -> ToolResult:
        start = int((context.checkpoint or {}).get("done", 0))
        for n in range(start + 1, self.total + 1):
            context.check_cancelled()
            self.worked.append(n)
            self.on_item(n)
            context.report(n, self.total, "items", f"item {n}/{self.total}")
            context.save({"done": n})
        return ToolResult("Items", f"{self.total} items", "done", cost_usd=0.0)


@pytest.fixture
def app(make_app: Callable[..., bootstrap.App]) -> bootstrap.App:
    return make_app(interval=0)


def missions(app: bootstrap.App) -> MissionService:
    return app.missions


def launched(app: bootstrap.App, objective: str = "calculate 2*(3+4)", **fields: Any) -> str:
    service = app.missions
    mission_id = service.create("alice", CreateMission(objective=objective, **fields)).mission_id
    service.approve("alice", mission_id)
    service.execute("alice", mission_id)
    return mission_id


def runner_with(make_app: Callable[..., bootstrap.App], *tools: Any) -> bootstrap.App:
    return make_app(ToolRegistry([CalculateTool(), *tools]), interval=0)


def assert_one_run_of_each_step(store: FakeMissionStore, mission_id: str) -> None:
    """Each step completed once and in order, gapless events, percent never down."""
    mission = store.missions[mission_id]
    assert mission.progress is not None
    assert [s.step_name for s in mission.progress.completed_steps] == list(STAGE_NAMES)
    events = store.event_log[mission_id]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    completions = [e.step_name for e in events if e.type == "step_completed"]
    assert completions == list(STAGE_NAMES)
    percents = store.written_percents()
    assert percents == sorted(percents)


# ---- edit -------------------------------------------------------------------------------------


def test_an_edit_before_running_changes_any_field_and_withdraws_the_approval(
    app: bootstrap.App, store: FakeMissionStore
) -> None:
    """Editing an approved mission sends it back to proposed, and the log says what changed,
    old → new."""
    service = app.missions
    mission_id = service.create("alice", CreateMission(objective="calculate 1+1")).mission_id
    service.approve("alice", mission_id)
    edited = service.modify(
        "alice", mission_id, {"objective": "calculate 2+2", "budget_usd": 2.0, "on_limit": "ask"}
    )
    assert (edited.status, edited.objective, edited.budget_usd) == (
        Status.PROPOSED,
        "calculate 2+2",
        2.0,
    )
    assert (edited.on_limit, edited.approved_at) == ("ask", None)
    event = store.event_log[mission_id][-1]
    assert event.type == "mission_modified"
    assert "objective: 'calculate 1+1' → 'calculate 2+2'" in event.message
    assert "budget_usd: 1.0 → 2.0" in event.message and "approval withdrawn" in event.message


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"tool": "calculate", "inputs": {"url": "https://x.example"}}, ValidationFailed, "inputs"),
        ({"tool": "no_such_tool"}, ValidationFailed, "Unknown tool"),
    ],
    ids=["inputs-dont-fit", "unknown-tool"],
)
def test_an_edit_is_validated_as_a_create_is(
    app: bootstrap.App, store: FakeMissionStore, fields: dict, error: type, message: str
) -> None:
    """A tool that does not exist, or inputs it does not take, are refused and nothing
    changes."""
    mission_id = app.missions.create("alice", CreateMission(objective="calculate 1+1")).mission_id
    before = store.missions[mission_id]
    with pytest.raises(error, match=message):
        app.missions.modify("alice", mission_id, fields)
    assert store.missions[mission_id] == before


def test_while_stopped_only_the_limits_may_change_and_never_below_the_spent(
    app: bootstrap.App, store: FakeMissionStore
) -> None:
    """A failed mission takes a new budget and domains, refuses other fields (409), and
    refuses a budget below what it spent (422)."""
    mission_id = launched(app, "calculate 2+2", budget_usd=0.00005)
    assert app.runner.run(mission_id) == Outcome.FAILED
    with pytest.raises(
        InvalidTransition, match="Cannot change objective of a mission that is failed"
    ):
        app.missions.modify("alice", mission_id, {"objective": "other"})
    store.put(store.missions[mission_id].with_record(cost_usd=Cost(0.0001, actual=0.5)))
    with pytest.raises(ValidationFailed, match="already spent"):
        app.missions.modify("alice", mission_id, {"budget_usd": 0.1})
    edited = app.missions.modify(
        "alice", mission_id, {"budget_usd": 1.0, "allowed_domains": ("example.com",)}
    )
    assert (edited.budget_usd, edited.scope.allowed_domains) == (1.0, ("example.com",))


@pytest.mark.parametrize("status", ["queued", "running", "completed", "cancelled"])
def test_no_edit_while_it_runs_or_after_it_ended(
    app: bootstrap.App, store: FakeMissionStore, status: str
) -> None:
    """Queued, running and finished missions refuse edits with a 409 that says why."""
    mission_id = app.missions.create("alice", CreateMission(objective="calculate 1+1")).mission_id
    store.put(replace(store.missions[mission_id], status=Status(status)))
    with pytest.raises(InvalidTransition, match=f"Cannot edit a mission that is {status}"):
        app.missions.modify("alice", mission_id, {"budget_usd": 2.0})


# ---- pause and resume ------------------------------------------------------------------------


def test_a_queued_mission_pauses_at_once_and_stops_counting_against_the_limit(
    make_app: Callable[..., bootstrap.App], store: FakeMissionStore, publisher: FakePublisher
) -> None:
    """Pausing a queued mission holds nothing: another mission can be executed under a limit
    of one, and the paused one's late message runs nothing."""
    app = make_app(interval=0, max_active_missions=1)
    first = launched(app)
    paused = app.missions.pause("alice", first)
    assert (paused.status, paused.pause_reason and paused.pause_reason.code) == (
        Status.PAUSED,
        "requested",
    )
    assert store.event_types(first)[-1] == "mission_paused"
    second = launched(app)
    assert store.missions[second].status == Status.QUEUED
    assert app.runner.run(first) == Outcome.SKIPPED  # its message, delivered late
    assert store.missions[first].status == Status.PAUSED


def pause_when(store: FakeMissionStore, mission_id: str, step: str) -> Callable[[], None]:
    """A store hook: the owner asks for a pause once the run is in `step`."""

    def hook() -> None:
        mission = store.missions[mission_id]
        if mission.current_step_name == step and not mission.pause_requested:
            store.put(replace(mission, pause_requested=True))

    return hook


def test_a_running_mission_pauses_at_the_next_boundary_and_resumes_where_it_stopped(
    app: bootstrap.App, store: FakeMissionStore, publisher: FakePublisher
) -> None:
    """Paused at a step boundary, it holds no lease, says why and where; resumed, it runs the
    remaining steps only: each step once, percent never down, gapless events."""
    mission_id = launched(app)
    store.before_apply = pause_when(store, mission_id, "budget_check")
    assert app.runner.run(mission_id) == Outcome.PAUSED
    store.before_apply = lambda: None
    mission = store.missions[mission_id]
    assert (mission.status, mission.lease_expires_at, mission.run_id) == (Status.PAUSED, None, None)
    assert mission.pause_reason is not None
    assert (mission.pause_reason.code, mission.pause_reason.step_name) == (
        "requested",
        "tool_selection",
    )
    assert [s.step_name for s in mission.progress.completed_steps] == list(STAGE_NAMES[:3])  # type: ignore[union-attr]

    resumed = app.missions.resume("alice", mission_id)
    assert resumed.status == Status.QUEUED and publisher.published[-1] == mission_id
    assert app.runner.run(mission_id) == Outcome.COMPLETED
    assert_one_run_of_each_step(store, mission_id)
    types = store.event_types(mission_id)
    assert types.count("mission_paused") == 1 and types.count("mission_resumed") == 1
    assert store.missions[mission_id].record.runs == 2


def test_a_long_tool_pauses_between_items_and_carries_on_from_the_last_it_finished(
    make_app: Callable[..., bootstrap.App], store: FakeMissionStore
) -> None:
    """A pause asked for during a long tool stops it between items, keeping the items it
    finished; resumed, it works the rest: every item once, percent never down."""
    mission_id: list[str] = []

    def ask_for_pause(n: int) -> None:
        if n == 2:
            mission = store.missions[mission_id[0]]
            store.put(replace(mission, pause_requested=True))

    items = Items(total=5, on_item=ask_for_pause)
    app = runner_with(make_app, items)
    mission_id.append(launched(app, "count items", tool="items"))
    assert app.runner.run(mission_id[0]) == Outcome.PAUSED
    paused = store.missions[mission_id[0]]
    assert paused.status == Status.PAUSED and paused.current_step_name == "tool_execution"
    # Learnt with item 2's progress write: the tool stopped before item 3, having saved 2.
    assert store.checkpoints[mission_id[0]] == {"done": 2}
    percent_at_pause = paused.percent
    assert percent_at_pause > 55

    app.missions.resume("alice", mission_id[0])
    assert app.runner.run(mission_id[0]) == Outcome.COMPLETED
    assert items.worked == [1, 2, 3, 4, 5]
    assert_one_run_of_each_step(store, mission_id[0])


def test_a_pause_racing_completion_ends_in_one_state(
    app: bootstrap.App, store: FakeMissionStore
) -> None:
    """A pause asked for during the last step loses the race: completed, and stays so."""
    mission_id = launched(app)
    store.before_apply = pause_when(store, mission_id, "finalize")
    assert app.runner.run(mission_id) == Outcome.COMPLETED
    mission = store.missions[mission_id]
    assert mission.status == Status.COMPLETED
    assert "mission_paused" not in store.event_types(mission_id)
    with pytest.raises(InvalidTransition):
        app.missions.resume("alice", mission_id)


def test_a_resume_whose_publish_fails_is_undone_back_to_paused(
    app: bootstrap.App, store: FakeMissionStore, publisher: FakePublisher
) -> None:
    """Pub/Sub down at resume: 503, and the mission is paused again with its reason."""
    mission_id = launched(app)
    app.missions.pause("alice", mission_id)
    before = store.missions[mission_id]
    publisher.down = True
    with pytest.raises(DependencyUnavailable):
        app.missions.resume("alice", mission_id)
    after = store.missions[mission_id]
    assert (after.status, after.pause_reason) == (Status.PAUSED, before.pause_reason)
    assert store.event_types(mission_id)[-1] == "mission_paused"


# ---- ask instead of fail ---------------------------------------------------------------------


def test_an_ask_mission_over_budget_pauses_saying_what_it_needs_and_an_edit_lifts_it(
    app: bootstrap.App, store: FakeMissionStore, clock: FakeClock
) -> None:
    """With on_limit ask, the estimate over budget pauses at budget_check with the amount it
    needs and an expiry; raising the budget and resuming completes it."""
    mission_id = launched(app, "calculate 2+2", budget_usd=0.00005, on_limit="ask")
    assert app.runner.run(mission_id) == Outcome.PAUSED
    reason = store.missions[mission_id].pause_reason
    assert reason is not None
    assert reason.message == (
        "Budget exceeded: $0.0001 > $0.00005 limit — raise the budget to continue"
    )
    assert (reason.code, reason.step_name, reason.needed_usd) == (
        "budget_exceeded",
        "budget_check",
        0.0001,
    )
    assert reason.expires_at == clock.now + timedelta(hours=72)
    app.missions.modify("alice", mission_id, {"budget_usd": 0.0001})
    app.missions.resume("alice", mission_id)
    assert app.runner.run(mission_id) == Outcome.COMPLETED
    assert_one_run_of_each_step(store, mission_id)


def test_without_ask_the_same_mission_fails_as_before(
    app: bootstrap.App, store: FakeMissionStore
) -> None:
    """The default (fail) keeps the original design's failure, word for word."""
    mission_id = launched(app, "calculate 2+2", budget_usd=0.00005)
    assert app.runner.run(mission_id) == Outcome.FAILED
    error = store.missions[mission_id].record.error
    assert error is not None and error.message == "Budget exceeded: $0.0001 > $0.00005 limit"


def test_an_actual_cost_over_budget_asks_before_finalize_and_keeps_the_tools_result(
    make_app: Callable[..., bootstrap.App], store: FakeMissionStore
) -> None:
    """A tool that cost more than the budget (its estimate fitting): the ask comes at
    finalize, and lifting it does not run the tool again."""
    runs: list[int] = []
    pricey = FakeTool(
        "pricey",
        on_run=lambda: runs.append(1),
        result=ToolResult("t", "s", "c", cost_usd=0.5),
    )
    app = runner_with(make_app, pricey)
    mission_id = launched(app, "calculate 1+1", tool="pricey", budget_usd=0.2, on_limit="ask")
    assert app.runner.run(mission_id) == Outcome.PAUSED
    reason = store.missions[mission_id].pause_reason
    assert reason is not None and (reason.step_name, reason.needed_usd) == ("finalize", 0.5)
    app.missions.modify("alice", mission_id, {"budget_usd": 0.5})
    app.missions.resume("alice", mission_id)
    assert app.runner.run(mission_id) == Outcome.COMPLETED
    assert runs == [1]


class NeedsHost(FakeTool):
    """A tool that needs example.org until it is allowed."""

    def run(self, context: ToolContext) -> ToolResult:
        if "example.org" not in context.allowed_domains:
            raise ToolPaused(host="example.org")
        return super().run(context)


def test_a_host_outside_the_scope_asks_for_it_and_allowing_it_lifts_the_pause(
    make_app: Callable[..., bootstrap.App], store: FakeMissionStore
) -> None:
    """A tool that needs a host outside the allowed domains pauses the mission naming it;
    adding the host and resuming completes the mission."""
    app = runner_with(make_app, NeedsHost("needs_host"))
    mission_id = launched(app, "calculate 1+1", tool="needs_host", on_limit="ask")
    assert app.runner.run(mission_id) == Outcome.PAUSED
    reason = store.missions[mission_id].pause_reason
    assert reason is not None
    assert (reason.code, reason.host) == ("out_of_scope", "example.org")
    assert reason.message == "example.org is outside the allowed domains — allow it to continue"
    app.missions.modify("alice", mission_id, {"allowed_domains": ("example.org",)})
    app.missions.resume("alice", mission_id)
    assert app.runner.run(mission_id) == Outcome.COMPLETED


def test_an_unanswered_ask_fails_at_its_expiry(
    app: bootstrap.App, store: FakeMissionStore, clock: FakeClock
) -> None:
    """The sweeper fails an ask nobody answered once it expired, saying so; not before."""
    mission_id = launched(app, "calculate 2+2", budget_usd=0.00005, on_limit="ask")
    app.runner.run(mission_id)
    clock.advance(71 * 3600)
    assert app.recovery.sweep()["expired"] == 0
    clock.advance(2 * 3600)
    assert app.recovery.sweep()["expired"] == 1
    mission = store.missions[mission_id]
    assert mission.status == Status.FAILED and mission.record.error is not None
    assert mission.record.error.code == "pause_expired"
    assert mission.record.error.message.startswith("Paused since it asked (Budget exceeded")


# ---- retry and clone -------------------------------------------------------------------------


def test_a_retry_resumes_at_the_failed_step_keeping_the_steps_before(
    make_app: Callable[..., bootstrap.App], store: FakeMissionStore
) -> None:
    """A mission whose tool failed for good runs again from tool_execution on its next run:
    the earlier steps are not run again, and it completes."""
    from buddy.tools import ToolError

    fails = {"left": 1}

    def down_once() -> None:
        if fails["left"]:
            fails["left"] -= 1
            raise ToolError("example.com answered HTTP 404")

    app = runner_with(make_app, FakeTool("site", on_run=down_once))
    mission_id = launched(app, "calculate 1+1", tool="site")
    assert app.runner.run(mission_id) == Outcome.FAILED
    retried = app.missions.retry("alice", mission_id)
    assert retried.status == Status.QUEUED and retried.record.run == 2
    assert store.event_log[mission_id][-1].message == "Run 2 starts at tool_execution"
    assert app.runner.run(mission_id) == Outcome.COMPLETED
    assert_one_run_of_each_step(store, mission_id)
    started = [e.step_name for e in store.event_log[mission_id] if e.type == "step_started"]
    assert started.count("intent_classification") == 1 and started.count("tool_execution") == 2


def test_a_retry_may_raise_the_budget_that_failed_it(
    app: bootstrap.App, store: FakeMissionStore
) -> None:
    """A mission failed for its budget is retried with a higher one and completes."""
    mission_id = launched(app, "calculate 2+2", budget_usd=0.00005)
    assert app.runner.run(mission_id) == Outcome.FAILED
    app.missions.retry("alice", mission_id, {"budget_usd": 0.01})
    assert app.runner.run(mission_id) == Outcome.COMPLETED
    types = store.event_types(mission_id)
    assert types.index("mission_modified") < types.index("mission_retried")


def test_a_clone_is_a_new_proposed_mission_with_the_same_fields(
    app: bootstrap.App, store: FakeMissionStore
) -> None:
    """Cloning copies the create fields (overrides win), records where it came from, and
    does not touch the source."""
    source = launched(app, "calculate 6*7", budget_usd=0.5)
    app.runner.run(source)
    before = store.missions[source]
    copy = app.missions.clone("alice", source, {"budget_usd": 0.25})
    assert (copy.status, copy.objective, copy.budget_usd, copy.cloned_from) == (
        Status.PROPOSED,
        "calculate 6*7",
        0.25,
        source,
    )
    assert copy.mission_id != source and copy.execution_record is None
    assert store.event_types(copy.mission_id) == ["mission_created", "mission_cloned"]
    assert store.missions[source] == before


def test_steering_another_users_mission_is_not_found(app: bootstrap.App) -> None:
    """Bob can pause, resume, retry, edit or clone none of Alice's missions."""
    from buddy.errors import MissionNotFound

    mission_id = launched(app)
    service = app.missions
    for steer in (
        lambda: service.pause("bob", mission_id),
        lambda: service.resume("bob", mission_id),
        lambda: service.retry("bob", mission_id),
        lambda: service.modify("bob", mission_id, {"budget_usd": 2.0}),
        lambda: service.clone("bob", mission_id, {}),
    ):
        with pytest.raises(MissionNotFound):
            steer()


def test_a_tool_that_fails_keeps_what_it_saved_and_a_retry_carries_on_from_there(
    make_app: Callable[..., bootstrap.App], store: FakeMissionStore
) -> None:
    """A long tool failing after two items leaves its saved state with the failure; the
    retried mission hands it back, so the two items are not worked again."""

    def fail_at_third(n: int) -> None:
        if n == 3 and len(items.worked) == 3:
            raise ToolError("the third item is broken")

    items = Items(total=5, on_item=fail_at_third)
    app = runner_with(make_app, items)
    mission_id = launched(app, "count items", tool="items")
    assert app.runner.run(mission_id) == Outcome.FAILED
    error = store.missions[mission_id].record.error
    assert error is not None and "the third item is broken" in error.message
    assert store.checkpoints[mission_id] == {"done": 2}

    app.missions.retry("alice", mission_id)
    assert app.runner.run(mission_id) == Outcome.COMPLETED
    assert items.worked == [1, 2, 3, 3, 4, 5]
