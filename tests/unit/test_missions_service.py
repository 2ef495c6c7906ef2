"""MissionService: the lifecycle as a mission's owner sees it, over fakes."""

from __future__ import annotations

import pytest

from buddy.domain.lifecycle import InvalidTransition, MissionNotFound
from buddy.schemas import CreateMission
from buddy.service.missions import MissionService, progress_view
from buddy.service.ports import DependencyUnavailable, ValidationFailed

from .fakes import FakeClock, FakeMissionStore, FakePublisher


def create(service: MissionService, owner: str = "alice", **fields) -> str:
    request = CreateMission(objective=fields.pop("objective", "calculate 3+4"), **fields)
    return service.create(owner, request)["mission_id"]


def approved(service: MissionService, owner: str = "alice") -> str:
    mid = create(service, owner)
    service.approve(owner, mid)
    return mid


def test_create_stores_a_proposed_mission(service: MissionService, store: FakeMissionStore) -> None:
    """A new mission is stored as proposed for its owner, with a mission_created event."""
    created = service.create("alice", CreateMission(objective="calculate 3+4", budget_usd=2))
    mid = created["mission_id"]
    assert mid.startswith("m_")
    assert store.missions[mid] == created
    assert (created["status"], created["owner_uid"], created["budget_usd"]) == (
        "proposed",
        "alice",
        2.0,
    )
    assert created["scope"] == {"allowed_domains": []}
    assert created["event_seq"] == 1
    assert store.event_types(mid) == ["mission_created"]
    assert store.event_log[mid][0]["owner_uid"] == "alice"


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
    before = store.get(mid)
    with pytest.raises(MissionNotFound, match=f"Mission {mid} not found"):
        call(service, mid)
    assert store.get(mid) == before
    assert publisher.published == []


def test_missing_mission_is_not_found(service: MissionService) -> None:
    """Acting on an id that does not exist raises MissionNotFound."""
    with pytest.raises(MissionNotFound):
        service.approve("alice", "m_nope")


def test_approve_then_execute_queues_and_publishes_once(
    service: MissionService, store: FakeMissionStore, publisher: FakePublisher
) -> None:
    """Execute queues the mission and publishes exactly one message; a second execute fails."""
    mid = approved(service)
    assert service.execute("alice", mid) == {"mission_id": mid, "status": "queued"}
    assert publisher.published == [mid]
    assert store.missions[mid]["status"] == "queued"
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
    assert (mission["status"], mission["queued_at"]) == ("approved", None)
    assert store.events(mid, 0) == before_events
    assert mission["event_seq"] == 2

    publisher.down = False
    assert service.execute("alice", mid)["status"] == "queued"
    assert publisher.published == [mid]
    assert [e["seq"] for e in store.events(mid, 0)] == [1, 2, 3]
    assert store.event_types(mid)[-1] == "mission_queued"


def test_cancel_before_running_records_an_event(
    service: MissionService, store: FakeMissionStore
) -> None:
    """Cancelling an approved mission makes it cancelled, visible in its events."""
    mid = approved(service)
    assert service.cancel("alice", mid)["status"] == "cancelled"
    assert store.event_types(mid)[-1] == "mission_cancelled"


def test_events_after_seq(service: MissionService) -> None:
    """Events are returned in order after the given seq; a negative seq is refused."""
    mid = approved(service)
    assert [e["type"] for e in service.events("alice", mid, 0)] == [
        "mission_created",
        "mission_approved",
    ]
    assert [e["seq"] for e in service.events("alice", mid, 1)] == [2]
    assert service.events("alice", mid, 2) == []
    with pytest.raises(ValidationFailed, match="after_seq must be between 0 and 2147483648"):
        service.events("alice", mid, -1)


def test_list_returns_own_missions_newest_first(service: MissionService, clock: FakeClock) -> None:
    """Listing shows only the caller's missions, newest first, filtered by status."""
    first = create(service)
    clock.advance(1)
    second = approved(service)
    create(service, owner="bob")
    assert [m["mission_id"] for m in service.list("alice", None, 20)] == [second, first]
    assert [m["mission_id"] for m in service.list("alice", "approved", 20)] == [second]
    assert [m["mission_id"] for m in service.list("alice", None, 1)] == [second]


@pytest.mark.parametrize(
    ("status", "limit", "message"),
    [
        ("done", 20, "Unknown status 'done'"),
        (None, 0, "limit must be between 1 and 100"),
        (None, 101, "limit must be between 1 and 100"),
    ],
    ids=["bad-status", "limit-zero", "limit-too-big"],
)
def test_list_validates_status_and_limit(
    service: MissionService, status: str | None, limit: int, message: str
) -> None:
    """An unknown status or a limit outside 1..100 fails validation."""
    with pytest.raises(ValidationFailed, match=message):
        service.list("alice", status, limit)


def test_progress_of_a_new_mission(service: MissionService) -> None:
    """Before it runs, a mission shows 0% and the default ETA."""
    mid = create(service)
    assert service.progress("alice", mid) == {
        "mission_id": mid,
        "status": "proposed",
        "current_step": None,
        "completed_steps": [],
        "progress_percent": 0,
        "elapsed_seconds": 0.0,
        "estimated_time_remaining": 15.0,
        "stalled": False,
    }


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_progress_view_eta_is_zero_when_terminal(clock: FakeClock, status: str) -> None:
    """A finished mission has no time remaining, whatever its percent."""
    doc = {
        "mission_id": "m_1",
        "status": status,
        "started_at": clock(),
        "execution_record": {"progress_tracker": {"progress_percent": 40, "elapsed_seconds": 8.0}},
    }
    clock.advance(60)
    view = progress_view(doc, clock)
    assert view["estimated_time_remaining"] == 0.0
    assert (view["progress_percent"], view["elapsed_seconds"]) == (40, 8.0)


def test_progress_view_of_running_mission_counts_elapsed_from_start(clock: FakeClock) -> None:
    """While running, elapsed time runs to now and the worker's ETA counts down since it wrote."""
    tracker = {"progress_percent": 50, "elapsed_seconds": 1.0, "estimated_time_remaining": 12.0}
    doc = {
        "mission_id": "m_1",
        "status": "running",
        "started_at": clock(),
        "execution_record": {"progress_tracker": tracker},
    }
    clock.advance(10)
    view = progress_view(doc, clock)
    assert (view["elapsed_seconds"], view["estimated_time_remaining"]) == (10.0, 3.0)
    clock.advance(60)
    assert progress_view(doc, clock)["estimated_time_remaining"] == 0.0
