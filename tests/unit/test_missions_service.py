"""MissionService: the lifecycle as a mission's owner sees it, over fakes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from buddy.domain import lifecycle
from buddy.domain.mission import (
    Artifact,
    ArtifactReference,
    ExecutionRecord,
    ExecutionStep,
    Mission,
    Progress,
    Scope,
    Status,
    artifact_id_of,
)
from buddy.errors import DependencyUnavailable, InvalidTransition, MissionNotFound, ValidationFailed
from buddy.schemas import CreateMission
from buddy.service.execution import Outcome
from buddy.service.missions import MissionService, ProgressView, progress_view

from .fakes import FakeClock, FakeMissionStore, FakePublisher


def create(service: MissionService, owner: str = "alice", **fields) -> str:
    request = CreateMission(objective=fields.pop("objective", "calculate 3+4"), **fields)
    return service.create(owner, request).mission_id


def approved(service: MissionService, owner: str = "alice") -> str:
    mid = create(service, owner)
    service.approve(owner, mid)
    return mid


def with_artifact(store: FakeMissionStore, mission_id: str) -> Artifact:
    """Puts an artifact in place for the mission, referenced from its record."""
    mission = store.missions[mission_id]
    artifact = Artifact(
        artifact_id=artifact_id_of(mission_id),
        mission_id=mission_id,
        owner_uid=mission.owner_uid,
        tool="calculate",
        type="calculation",
        title="3+4 = 7",
        summary="3+4 = 7",
        content="7",
        preview="3+4 = 7",
        created_at="2025-01-01T12:00:00Z",
    )
    store.artifacts[artifact.artifact_id] = artifact
    reference = ArtifactReference(artifact.artifact_id, artifact.title, artifact.type)
    store.put(mission.with_record(artifact_reference=reference))
    return artifact


def running_mission(clock: FakeClock, progress: Progress, **fields) -> Mission:
    new = lifecycle.proposed("m_1", "alice", "calculate 3+4", (), 1.0, None, {}, clock())
    record = ExecutionRecord(Status.RUNNING, progress_tracker=progress)
    fields = {"started_at": clock(), "status": Status.RUNNING, **fields}
    return replace(new, execution_record=record, **fields)


def test_create_stores_a_proposed_mission(service: MissionService, store: FakeMissionStore) -> None:
    """A new mission is stored as proposed for its owner, with a mission_created event."""
    created = service.create("alice", CreateMission(objective="calculate 3+4", budget_usd=2))
    mid = created.mission_id
    assert mid.startswith("m_")
    assert store.missions[mid] == created
    assert (created.status, created.owner_uid, created.budget_usd) == (
        Status.PROPOSED,
        "alice",
        2.0,
    )
    assert (created.objective, created.tool, created.inputs) == ("calculate 3+4", None, {})
    assert created.scope == Scope(allowed_domains=())
    assert created.event_seq == 1
    assert created.execution_record is None
    assert store.event_types(mid) == ["mission_created"]
    assert store.event_log[mid][0].owner_uid == "alice"


def test_create_keeps_the_scope_asked_for(service: MissionService) -> None:
    """The allowed domains of the request, normalised, are the mission's scope."""
    request = CreateMission.model_validate(
        {"objective": "calculate 3+4", "scope": {"allowed_domains": ["Example.COM.", "a.org"]}}
    )
    assert service.create("alice", request).scope == Scope(("example.com", "a.org"))


def test_create_gives_each_mission_its_own_id(service: MissionService) -> None:
    """Two creations never share an id."""
    assert create(service) != create(service)


def test_create_with_unknown_tool_is_refused(
    service: MissionService, store: FakeMissionStore
) -> None:
    """Naming a tool that does not exist fails validation and lists the available tools."""
    expected = "Unknown tool 'teleport'; available tools: calculate"
    with pytest.raises(ValidationFailed, match=expected):
        create(service, tool="teleport")
    assert store.missions == {}


@pytest.mark.parametrize(
    "call",
    [
        lambda s, mid: s.get("mallory", mid),
        lambda s, mid: s.approve("mallory", mid),
        lambda s, mid: s.execute("mallory", mid),
        lambda s, mid: s.cancel("mallory", mid),
        lambda s, mid: s.progress("mallory", mid),
        lambda s, mid: s.events("mallory", mid, 0),
        lambda s, mid: s.artifact("mallory", mid),
    ],
    ids=["get", "approve", "execute", "cancel", "progress", "events", "artifact"],
)
def test_another_owners_mission_is_not_found(
    service: MissionService, store: FakeMissionStore, publisher: FakePublisher, call
) -> None:
    """Someone else's mission looks exactly like a missing one, and is left untouched."""
    mid = approved(service)
    with_artifact(store, mid)  # so that there is something to find for each call
    before = store.get(mid)
    with pytest.raises(MissionNotFound, match=f"Mission {mid} not found"):
        call(service, mid)
    assert store.get(mid) == before
    assert store.event_types(mid) == ["mission_created", "mission_approved"]
    assert publisher.published == []


def test_only_the_owner_gets_the_artifact(
    service: MissionService, store: FakeMissionStore, make_runner
) -> None:
    """The owner of a completed mission gets its artifact; another user gets not found."""
    mid = approved(service)
    service.execute("alice", mid)
    assert make_runner().run(mid) == Outcome.COMPLETED
    with pytest.raises(MissionNotFound, match=f"Mission {mid} not found"):
        service.artifact("mallory", mid)
    artifact = service.artifact("alice", mid)
    assert artifact == store.artifacts[artifact_id_of(mid)]
    assert (artifact.mission_id, artifact.owner_uid, artifact.content) == (mid, "alice", "7")


def test_no_artifact_yet_is_not_found(service: MissionService, store: FakeMissionStore) -> None:
    """The owner asking for the artifact of a mission that has none yet gets not found."""
    mid = approved(service)
    with pytest.raises(MissionNotFound, match=f"Mission {mid} not found"):
        service.artifact("alice", mid)
    assert with_artifact(store, mid) == service.artifact("alice", mid)


def test_missing_mission_is_not_found(service: MissionService) -> None:
    """Acting on an id that does not exist raises MissionNotFound."""
    with pytest.raises(MissionNotFound):
        service.approve("alice", "m_nope")


def test_approve_then_execute_queues_and_publishes_once(
    service: MissionService, store: FakeMissionStore, publisher: FakePublisher
) -> None:
    """Execute queues the mission and publishes exactly one message; a second execute fails."""
    mid = approved(service)
    queued = service.execute("alice", mid)
    assert (queued.mission_id, queued.status) == (mid, Status.QUEUED)
    assert publisher.published == [mid]
    assert store.missions[mid] == queued
    with pytest.raises(InvalidTransition, match="Cannot execute a mission that is queued"):
        service.execute("alice", mid)
    assert publisher.published == [mid]
    assert store.event_types(mid) == ["mission_created", "mission_approved", "mission_queued"]


def test_execute_before_approval_is_refused(
    service: MissionService, publisher: FakePublisher
) -> None:
    """A proposed mission cannot be executed and nothing is published."""
    mid = create(service)
    with pytest.raises(InvalidTransition, match="it must be approved"):
        service.execute("alice", mid)
    assert publisher.published == []


def test_publish_failure_puts_the_mission_back(
    service: MissionService, store: FakeMissionStore, publisher: FakePublisher
) -> None:
    """If Pub/Sub is down, execute re-raises and the mission is approved as before."""
    mid = approved(service)
    before_events = store.events(mid, 0)
    publisher.down = True
    with pytest.raises(DependencyUnavailable):
        service.execute("alice", mid)
    mission = store.missions[mid]
    assert (mission.status, mission.queued_at) == (Status.APPROVED, None)
    assert store.events(mid, 0) == before_events
    assert mission.event_seq == 2

    publisher.down = False
    assert service.execute("alice", mid).status == Status.QUEUED
    assert publisher.published == [mid]
    assert [e.seq for e in store.events(mid, 0)] == [1, 2, 3]
    assert store.event_types(mid)[-1] == "mission_queued"


def test_cancel_before_running_records_an_event(
    service: MissionService, store: FakeMissionStore
) -> None:
    """Cancelling an approved mission makes it cancelled, visible in its events."""
    mid = approved(service)
    cancelled = service.cancel("alice", mid)
    assert cancelled.status == Status.CANCELLED
    assert store.missions[mid] == cancelled
    assert store.event_types(mid)[-1] == "mission_cancelled"


def test_events_after_seq(service: MissionService) -> None:
    """Events are returned in order after the given seq; a seq outside 0..2^31 is refused."""
    mid = approved(service)
    assert [e.type for e in service.events("alice", mid, 0)] == [
        "mission_created",
        "mission_approved",
    ]
    assert [e.seq for e in service.events("alice", mid, 1)] == [2]
    assert service.events("alice", mid, 2) == []
    assert service.events("alice", mid, 2**31) == []
    for seq in (-1, 2**31 + 1):
        with pytest.raises(ValidationFailed, match="after_seq must be between 0 and 2147483648"):
            service.events("alice", mid, seq)


def test_missions_of_returns_own_missions_newest_first(
    service: MissionService, clock: FakeClock
) -> None:
    """Listing shows only the caller's missions, newest first, filtered by status."""
    first = create(service)
    clock.advance(1)
    second = approved(service)
    create(service, owner="bob")
    assert [m.mission_id for m in service.missions_of("alice", None, 20)] == [second, first]
    assert [m.mission_id for m in service.missions_of("alice", "approved", 20)] == [second]
    assert [m.mission_id for m in service.missions_of("alice", None, 1)] == [second]


@pytest.mark.parametrize(
    ("status", "limit", "message"),
    [
        ("done", 20, "Unknown status 'done'"),
        (None, 0, "limit must be between 1 and 100"),
        (None, 101, "limit must be between 1 and 100"),
    ],
    ids=["bad-status", "limit-zero", "limit-too-big"],
)
def test_missions_of_validates_status_and_limit(
    service: MissionService, status: str | None, limit: int, message: str
) -> None:
    """An unknown status or a limit outside 1..100 fails validation."""
    with pytest.raises(ValidationFailed, match=message):
        service.missions_of("alice", status, limit)


def test_missions_of_accepts_the_limits_bounds(service: MissionService) -> None:
    """Limits of 1 and 100 are accepted."""
    mid = create(service)
    assert [m.mission_id for m in service.missions_of("alice", None, 1)] == [mid]
    assert [m.mission_id for m in service.missions_of("alice", "proposed", 100)] == [mid]


def test_progress_of_a_new_mission(service: MissionService) -> None:
    """Before it runs, a mission shows 0% and the default ETA."""
    mid = create(service)
    assert service.progress("alice", mid) == ProgressView(
        mission_id=mid,
        status=Status.PROPOSED,
        current_step=None,
        completed_steps=(),
        progress_percent=0,
        elapsed_seconds=0.0,
        estimated_time_remaining=15.0,
        stalled=False,
    )


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_progress_view_eta_is_zero_when_terminal(clock: FakeClock, status: str) -> None:
    """A finished mission has no time remaining, whatever its percent."""
    progress = Progress(
        "m_1",
        "2025-01-01T12:00:00Z",
        progress_percent=40,
        elapsed_seconds=8.0,
        estimated_time_remaining=12.0,
    )
    mission = running_mission(clock, progress, status=Status(status))
    clock.advance(60)
    view = progress_view(mission, clock())
    assert view.estimated_time_remaining == 0.0
    assert (view.status, view.progress_percent, view.elapsed_seconds) == (status, 40, 8.0)
    assert view.stalled is False


def test_progress_view_of_running_mission_counts_elapsed_from_start(clock: FakeClock) -> None:
    """While running, elapsed time runs to now and the worker's ETA counts down since it wrote."""
    step = ExecutionStep("tool_execution", 5, 7, 50, "started", "Running", "t")
    done = ExecutionStep("verification", 1, 7, 10, "completed", "ok", "t")
    progress = Progress(
        "m_1",
        "2025-01-01T12:00:00Z",
        current_step=step,
        completed_steps=(done,),
        progress_percent=50,
        elapsed_seconds=1.0,
        estimated_time_remaining=12.0,
    )
    mission = running_mission(clock, progress, lease_expires_at=clock() + timedelta(seconds=600))
    clock.advance(10)
    view = progress_view(mission, clock())
    assert (view.elapsed_seconds, view.estimated_time_remaining) == (10.0, 3.0)
    assert (view.current_step, view.completed_steps, view.progress_percent) == (step, (done,), 50)
    assert view.stalled is False
    clock.advance(60)
    assert progress_view(mission, clock()).estimated_time_remaining == 0.0


def test_progress_view_of_a_running_mission_whose_lease_ran_out_is_stalled(
    clock: FakeClock,
) -> None:
    """A running mission whose worker stopped renewing its lease shows as stalled."""
    progress = Progress("m_1", "2025-01-01T12:00:00Z", progress_percent=30)
    mission = running_mission(clock, progress, lease_expires_at=clock() + timedelta(seconds=60))
    clock.advance(59)
    assert progress_view(mission, clock()).stalled is False
    clock.advance(1)
    assert progress_view(mission, clock()).stalled is True
    # Not yet claimed by any run: nothing to have stalled.
    assert progress_view(replace(mission, lease_expires_at=None), clock()).stalled is False
