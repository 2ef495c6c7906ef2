"""What no mission can pass, whatever its owner sends: the active-mission limit, an execute
whose publish failed, document sizes, refused writes and tool time budgets — with fakes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

import pytest

from buddy import bootstrap
from buddy.domain.mission import Status, artifact_id_of
from buddy.domain.sizes import MAX_DOCUMENT_BYTES, document_size
from buddy.errors import DependencyUnavailable, TooManyActiveMissions
from buddy.schemas import CreateMission
from buddy.service.execution import Outcome
from buddy.service.missions import MissionService
from buddy.service.recovery import Recovery
from buddy.tools import ToolRegistry, ToolResult

from .fakes import FakeClock, FakeMissionStore, FakePublisher, FakeTool, seed_mission


def approved(service: MissionService, owner: str = "alice") -> str:
    mid = service.create(owner, CreateMission(objective="calculate 3+4")).mission_id
    service.approve(owner, mid)
    return mid


@pytest.fixture
def limited(make_app: Callable[..., bootstrap.App]) -> MissionService:
    return make_app(max_active_missions=2).missions


def test_the_active_limit_refuses_the_execute_over_it_and_frees_with_a_finish(
    limited: MissionService, store: FakeMissionStore, publisher: FakePublisher, make_runner
) -> None:
    """With a limit of 2, a third execute is refused (nothing queued or published); once one
    mission ends, the same execute goes through. Another owner has a limit of their own."""
    first, second, third = (approved(limited) for _ in range(3))
    limited.execute("alice", first)
    limited.execute("alice", second)
    with pytest.raises(TooManyActiveMissions, match="You already have 2 missions queued"):
        limited.execute("alice", third)
    assert store.missions[third].status == Status.APPROVED
    assert store.event_types(third) == ["mission_created", "mission_approved"]
    assert publisher.published == [first, second]
    assert limited.execute("bob", approved(limited, "bob")).status == Status.QUEUED

    assert make_runner().run(first) == Outcome.COMPLETED
    assert limited.execute("alice", third).status == Status.QUEUED
    assert publisher.published[-1] == third


def test_a_publish_error_after_a_worker_took_the_message_answers_queued(
    service: MissionService, store: FakeMissionStore, publisher: FakePublisher, make_runner
) -> None:
    """A publish that errs although its message left (a timeout): when the worker has already
    claimed the mission, execute says queued, because it runs."""
    mid = approved(service)
    publisher.during_publish = lambda mission_id: make_runner().run(mission_id)
    publisher.down = True
    queued = service.execute("alice", mid)
    assert (queued.mission_id, queued.status) == (mid, Status.QUEUED)
    assert store.missions[mid].status == Status.COMPLETED


def test_a_publish_error_before_any_worker_saw_it_is_undone_and_the_late_message_dropped(
    service: MissionService, store: FakeMissionStore, publisher: FakePublisher, make_runner
) -> None:
    """execute answers 503 and puts the mission back to approved; when the message turns up
    after all, the worker drops it: a mission the owner was told is not queued never runs."""
    mid = approved(service)
    publisher.down = True
    with pytest.raises(DependencyUnavailable):
        service.execute("alice", mid)
    assert store.missions[mid].status == Status.APPROVED
    assert make_runner().run(mid) == Outcome.SKIPPED
    assert store.missions[mid].status == Status.APPROVED
    assert store.event_types(mid) == ["mission_created", "mission_approved"]


def test_a_publish_error_while_the_owner_cancels_answers_the_error(
    service: MissionService, store: FakeMissionStore, publisher: FakePublisher, make_runner
) -> None:
    """A publish that errs while the owner cancels the mission: execute answers 503, the
    mission stays cancelled, and a message that turns up later does not run it."""
    mid = approved(service)
    publisher.during_publish = lambda mission_id: service.cancel("alice", mission_id)
    publisher.down = True
    with pytest.raises(DependencyUnavailable):
        service.execute("alice", mid)
    assert store.missions[mid].status == Status.CANCELLED
    assert make_runner().run(mid) == Outcome.SKIPPED
    assert store.event_types(mid)[-1] == "mission_cancelled"


def test_when_even_the_undo_fails_the_mission_stays_queued_and_the_sweeper_sends_it(
    service: MissionService, store: FakeMissionStore, publisher: FakePublisher, clock: FakeClock
) -> None:
    """Pub/Sub and then Firestore fail: the mission stays queued (execute says so, 202) and
    the sweeper republishes it once it has waited its queue timeout."""
    mid = approved(service)
    publisher.down = True

    def firestore_down() -> None:
        if store.missions[mid].status == Status.QUEUED:
            raise DependencyUnavailable("Firestore is unavailable")

    store.before_apply = firestore_down
    assert service.execute("alice", mid).status == Status.QUEUED
    store.before_apply = lambda: None
    publisher.down = False
    assert store.missions[mid].status == Status.QUEUED and publisher.published == []
    clock.advance(301)
    Recovery(store, publisher, clock, queue_timeout_seconds=300).sweep()
    assert publisher.published == [mid]


CJK = "漢字かなカナ한국어" * 60_000  # 600,000 characters, 1.8 MB of UTF-8


def test_a_huge_cjk_result_fits_its_documents_and_says_it_was_cut(
    store: FakeMissionStore, make_runner
) -> None:
    """600,000 CJK characters (three times Firestore's 1 MiB in UTF-8), a 1 MB title and
    200 KiB of data: the mission completes, every document it wrote is under 1 MiB, the
    artifact is flagged truncated, and the title and data are kept small."""
    result = ToolResult(
        title="T" * 1_000_000,
        summary="S" * 100_000,
        content=CJK,
        data={"blob": "x" * 200_000},
    )
    mid = seed_mission(store, tool="fake")
    runner = make_runner(ToolRegistry([FakeTool("fake", result=result)]))
    assert runner.run(mid) == Outcome.COMPLETED
    artifact = store.artifacts[artifact_id_of(mid)]
    assert document_size(f"artifacts/{artifact.artifact_id}", asdict(artifact)) <= (
        MAX_DOCUMENT_BYTES
    )
    assert artifact.truncated is True
    assert 0 < len(artifact.content) < len(CJK) and CJK.startswith(artifact.content)
    assert len(artifact.content.encode()) > 900_000  # cut by bytes, close to the limit
    private = store.private[mid]
    assert document_size(f"missions/{mid}/private/outputs", private) <= MAX_DOCUMENT_BYTES
    assert CJK.startswith(private["tool_execution"]["content"])
    assert len(artifact.title) <= 300 and "omitted" in artifact.data
    mission = store.missions[mid]
    assert "tool_execution" not in mission.record.outputs  # the tool's result is kept apart
    assert document_size(f"missions/{mid}", asdict(mission)) < 64 * 1024
    assert mission.record.result_summary is not None
    assert len(mission.record.result_summary) <= 500


def test_a_write_firestore_refuses_fails_the_mission_at_once_with_a_true_message(
    store: FakeMissionStore, make_runner
) -> None:
    """When Firestore refuses a step's write as invalid, the run does not retry or strand the
    mission: it ends failed, saying what could not be saved, without the refused artifact,
    with gapless events and progress that never went back."""
    mid = seed_mission(store)
    store.refuse_when = lambda change: change.artifact is not None
    assert make_runner(interval=0).run(mid) == Outcome.FAILED
    mission = store.missions[mid]
    error = mission.record.error
    assert mission.status == Status.FAILED and error is not None
    assert error.code == "storage_rejected"
    assert error.message == (
        "Could not save artifact_creation's result: Firestore refused the write: invalid argument"
    )
    assert store.artifacts == {}
    assert mission.record.artifact_reference is None
    events = store.event_log[mid]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "mission_failed"
    percents = store.written_percents()
    assert percents == sorted(percents)


def test_a_tool_over_its_time_budget_is_stopped_and_fails_its_step(
    store: FakeMissionStore, make_runner
) -> None:
    """A tool still working when its budget runs out is stopped at its next check and the
    step fails with a message naming the budget; it is not retried."""
    done: list[int] = []

    def one_item() -> None:
        done.append(1)
        time.sleep(0.01)

    slow = FakeTool("slow", substeps=50, on_substep=one_item, time_budget_seconds=0.1)
    mid = seed_mission(store, tool="slow")
    assert make_runner(ToolRegistry([slow])).run(mid) == Outcome.FAILED
    assert len(done) < 50  # 50 items take at least 0.5 s: it was stopped on the way
    mission = store.missions[mid]
    error = mission.record.error
    assert mission.status == Status.FAILED and error is not None
    assert (error.step_name, error.message) == (
        "tool_execution",
        "Tool execution failed: slow took longer than its time budget of 0.1 s",
    )
    assert "retry_scheduled" not in store.event_types(mid)
