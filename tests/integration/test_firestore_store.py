"""The Firestore adapter's guarantees, checked on the real emulator."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from buddy.adapters import firestore_store
from buddy.adapters.firestore_base import LostAnswers
from buddy.adapters.firestore_store import FirestoreMissionStore
from buddy.domain import lifecycle
from buddy.domain.mission import (
    Artifact,
    Change,
    Cost,
    ExecutionStep,
    Mission,
    NewEvent,
    Progress,
    Status,
    StepDetail,
)
from buddy.domain.progress import utc_now
from buddy.errors import (
    DependencyUnavailable,
    InvalidTransition,
    StorageRejected,
    TooManyActiveMissions,
)
from buddy.service.missions import new_mission_id

from .conftest import User


def artifact_for(mission: Mission, content: str = "14") -> Artifact:
    return Artifact(
        artifact_id=f"a_{mission.mission_id}",
        mission_id=mission.mission_id,
        owner_uid=mission.owner_uid,
        tool="calculate",
        type="calculation",
        title="t",
        summary="s",
        content=content,
        preview="p",
        created_at="2026-01-01T00:00:00Z",
    )


def test_a_change_and_its_artifact_commit_together_or_not_at_all(
    alice: User, db: firestore.Client
) -> None:
    """An artifact and private outputs land with their step, never alone."""
    store = FirestoreMissionStore(db, utc_now)
    mission_id = alice.create()["mission_id"]

    def refuse(_mission: Mission) -> Change:
        raise InvalidTransition("test", "proposed", "something else")

    with pytest.raises(InvalidTransition):
        store.apply(mission_id, refuse)
    assert store.artifact(f"a_{mission_id}") is None

    def write(mission: Mission) -> Change:
        return Change(
            replace(mission, tool="calculate"),
            (NewEvent("step_completed", "ok"),),
            artifact=artifact_for(mission),
            private={"tool_execution": {"content": "14"}},
        )

    written = store.apply(mission_id, write)
    assert store.artifact(f"a_{mission_id}") == artifact_for(written)
    assert store.private_outputs(mission_id) == {"tool_execution": {"content": "14"}}
    assert written.tool == "calculate" and written.event_seq == 2
    assert [e.seq for e in store.events(mission_id, 0)] == [1, 2]


def test_a_mission_round_trips_through_its_document(alice: User, db: firestore.Client) -> None:
    """Every typed field a run writes (progress with sub-step detail, costs, outputs, lease)
    reads back equal, and the document keeps the field names clients read."""
    store = FirestoreMissionStore(db, utc_now)
    mission_id = alice.create()["mission_id"]
    now = utc_now()
    step = ExecutionStep(
        "tool_execution", 5, 7, 61, "started", "pages 2/5", "2026-01-01T00:00:00Z", 0.0,
        StepDetail(2, 5, "pages"),
    )  # fmt: skip
    progress = Progress(mission_id, "2026-01-01T00:00:00Z", step, (), 61, 1.5, 3.0, "x")

    def run(mission: Mission) -> Change:
        claimed = lifecycle.claim(replace(mission, status=Status.QUEUED), "run-1", now, 60)
        moved = lifecycle.progressed(claimed, now, 60, progress).with_record(
            cost_usd=Cost(0.001), outputs={"budget_check": {"estimate": 0.001}}
        )
        return Change(moved)

    written = store.apply(mission_id, run)
    fresh = FirestoreMissionStore(db, utc_now).get(mission_id)
    assert fresh == written
    document = db.collection("missions").document(mission_id).get().to_dict()
    tracker = document["execution_record"]["progress_tracker"]
    assert tracker["current_step"]["detail"] == {"done": 2, "total": 5, "unit": "pages"}
    assert (document["status"], document["run_id"]) == ("running", "run-1")
    assert document["execution_record"]["cost_usd"] == {"estimated": 0.001, "actual": None}


def test_a_writer_that_knows_the_mission_skips_the_read_until_someone_else_writes(
    alice: User, db: firestore.Client
) -> None:
    """Consecutive writes by one store commit against the version it wrote, without a read;
    a write by anyone else makes it read and decide again on what is really there."""
    store = FirestoreMissionStore(db, utc_now)
    mission_id = alice.create()["mission_id"]  # created by the API, unknown to this store

    def set_tool(name: str):
        return lambda m: Change(replace(m, tool=name), (NewEvent("step_started", name),))

    store.apply(mission_id, set_tool("first"))
    store.apply(mission_id, set_tool("second"))
    assert store.apply_reads == 1
    ref = db.collection("missions").document(mission_id)
    assert ref.get().to_dict()["tool"] == "second"

    ref.update({"cancel_requested": True})  # the owner cancels, through another process
    seen = []

    def only_when_cancelled(mission: Mission) -> Change:
        seen.append(mission.cancel_requested)
        if not mission.cancel_requested:
            raise InvalidTransition("test", mission.status, "cancelled")
        return Change(replace(mission, tool="third"), (NewEvent("step_started", "third"),))

    written = store.apply(mission_id, only_when_cancelled)
    assert seen == [False, True]  # the remembered copy was stale: decided again, fresh
    assert store.apply_reads == 2
    assert written.tool == ref.get().to_dict()["tool"] == "third"
    assert [e.seq for e in store.events(mission_id, 0)] == [1, 2, 3, 4]


def test_a_write_firestore_refuses_as_invalid_is_storage_rejected(
    alice: User, db: firestore.Client
) -> None:
    """An artifact over Firestore's 1 MiB is refused by Firestore itself: StorageRejected,
    and nothing of the change is written."""
    store = FirestoreMissionStore(db, utc_now)
    mission_id = alice.create()["mission_id"]

    def too_big(mission: Mission) -> Change:
        huge = artifact_for(mission, content="x" * 1_100_000)
        return Change(replace(mission, tool="calculate"), (NewEvent("x", "x"),), artifact=huge)

    with pytest.raises(StorageRejected, match="Firestore refused the write"):
        store.apply(mission_id, too_big)
    assert store.get(mission_id).tool is None  # type: ignore[union-attr]
    assert store.artifact(f"a_{mission_id}") is None
    assert len(store.events(mission_id, 0)) == 1


def test_the_active_count_follows_every_change_into_and_out_of_the_active_states(
    alice: User, db: firestore.Client
) -> None:
    """users/{uid}.active_missions goes up with a queueing, down with an end, and a
    queueing over the limit is refused and leaves nothing behind."""
    store = FirestoreMissionStore(db, utc_now)
    first, second = (alice.create()["mission_id"] for _ in range(2))
    for mission_id in (first, second):
        store.apply(mission_id, lambda m: lifecycle.approve(m, utc_now()))
    counter = db.collection("users").document(alice.uid)
    store.apply(first, lambda m: lifecycle.queue(m, utc_now(), max_active=1))
    assert counter.get().to_dict() == {"active_missions": 1}
    with pytest.raises(TooManyActiveMissions):
        store.apply(second, lambda m: lifecycle.queue(m, utc_now(), max_active=1))
    # Counted, found over the limit, and taken back: as it was, its queued event gone.
    assert counter.get().to_dict() == {"active_missions": 1}
    refused = FirestoreMissionStore(db, utc_now).get(second)
    assert refused is not None and (refused.status, refused.queued_at) == (Status.APPROVED, None)
    assert [e.type for e in store.events(second, 0)] == ["mission_created", "mission_approved"]
    store.apply(first, lambda m: lifecycle.cancel(m, utc_now()))
    assert counter.get().to_dict() == {"active_missions": 0}
    store.apply(second, lambda m: lifecycle.queue(m, utc_now(), max_active=1))
    assert counter.get().to_dict() == {"active_missions": 1}


class LostAnswer(FirestoreMissionStore):
    """A store whose first commit lands but answers like a conflict, as a retried RPC does
    when its first try had gone through."""

    lost = 1

    def _commit_batch(self, batch: Any, answers: LostAnswers, turn: Any) -> list[Any] | None:
        results = super()._commit_batch(batch, answers, turn)
        if self.lost:
            self.lost -= 1
            return None
        return results


def test_a_commit_that_landed_but_answered_a_conflict_is_not_decided_again(
    alice: User, db: firestore.Client
) -> None:
    """The store recognises its own write on the fresh read and returns it: deciding again
    would refuse it (an execute answering 409 for the mission it had just queued)."""
    store = LostAnswer(db, utc_now)
    mission_id = alice.create()["mission_id"]
    decided: list[Status] = []

    def approve(mission: Mission) -> Change:
        decided.append(mission.status)
        return lifecycle.approve(mission, utc_now())

    written = store.apply(mission_id, approve)
    assert written.status == Status.APPROVED and decided == [Status.PROPOSED]
    assert [e.type for e in store.events(mission_id, 0)] == ["mission_created", "mission_approved"]


class Unanswered(FirestoreMissionStore):
    """A store whose next `times` commits raise `error` as a lost answer does: after they
    were written (`landed`) or before they were sent."""

    def __init__(
        self, db: firestore.Client, error: type[Exception], landed: bool, times: int = 1
    ) -> None:
        super().__init__(db, utc_now)
        self.error, self.landed, self.times = error, landed, times

    def _commit_batch(self, batch: Any, answers: LostAnswers, turn: Any) -> list[Any] | None:
        if self.times:
            self.times -= 1
            send = batch.commit

            def lose(**options: Any) -> Any:
                if self.landed:
                    send(**options)
                raise self.error("the answer was lost")

            batch.commit = lose
        return super()._commit_batch(batch, answers, turn)


# Every kind of answer that leaves a commit's fate unknown (Cancelled: the emulator under load).
LOST = [gexc.DeadlineExceeded, gexc.ServiceUnavailable, gexc.Cancelled, gexc.InternalServerError]
LOST_IDS = ["deadline", "unavailable", "cancelled", "internal"]


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not-sent"])
@pytest.mark.parametrize("error", LOST, ids=LOST_IDS)
def test_a_change_whose_answer_was_lost_is_written_once(
    alice: User, db: firestore.Client, error: type[Exception], landed: bool
) -> None:
    """A commit that timed out may have landed: the store reads the mission again and
    returns its own write when it finds it, or makes it again when not; never a 503 for a
    change that is there, never the change twice."""
    store = Unanswered(db, error, landed)
    mission_id = alice.create()["mission_id"]
    decided: list[Status] = []

    def approve(mission: Mission) -> Change:
        decided.append(mission.status)
        return lifecycle.approve(mission, utc_now())

    assert store.apply(mission_id, approve).status == Status.APPROVED
    assert decided == [Status.PROPOSED] * (1 if landed else 2)
    assert [e.type for e in store.events(mission_id, 0)] == ["mission_created", "mission_approved"]


@pytest.mark.parametrize("error", LOST, ids=LOST_IDS)
def test_a_queueing_whose_answer_was_lost_is_counted_once(
    alice: User, db: firestore.Client, error: type[Exception]
) -> None:
    """An execute whose commit landed unanswered: queued, counted once against the limit,
    and the next queueing over the limit is still refused."""
    first, second = (alice.create()["mission_id"] for _ in range(2))
    plain = FirestoreMissionStore(db, utc_now)
    for mission_id in (first, second):
        plain.apply(mission_id, lambda m: lifecycle.approve(m, utc_now()))
    store = Unanswered(db, error, landed=True)
    queued = store.apply(first, lambda m: lifecycle.queue(m, utc_now(), max_active=1))
    assert queued.status == Status.QUEUED
    counter = db.collection("users").document(alice.uid)
    assert counter.get().to_dict() == {"active_missions": 1}
    with pytest.raises(TooManyActiveMissions):
        plain.apply(second, lambda m: lifecycle.queue(m, utc_now(), max_active=1))
    assert [e.type for e in store.events(first, 0)][-1] == "mission_queued"


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not-landed"])
def test_a_store_out_of_patience_looks_once_more_before_answering_busy(
    alice: User, db: firestore.Client, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """The last commit before a write gives up on a contended document (the emulator's
    lock timeout answers Aborted, sometimes after writing): queued when it landed, counted
    once, no 503; when it did not, 503 and the mission as it was."""
    mission_id = alice.create()["mission_id"]
    FirestoreMissionStore(db, utc_now).apply(mission_id, lambda m: lifecycle.approve(m, utc_now()))
    monkeypatch.setattr(firestore_store, "wait_a_little", lambda attempt, started: False)
    store = Unanswered(db, gexc.Aborted, landed, times=1)
    counter = db.collection("users").document(alice.uid)

    def queue(mission: Mission) -> Change:
        return lifecycle.queue(mission, utc_now(), max_active=10)

    if landed:
        assert store.apply(mission_id, queue).status == Status.QUEUED
        assert counter.get().to_dict() == {"active_missions": 1}
    else:
        with pytest.raises(DependencyUnavailable, match="too busy"):
            store.apply(mission_id, queue)
        assert (counter.get().to_dict() or {}).get("active_missions", 0) == 0
    stored = FirestoreMissionStore(db, utc_now).get(mission_id)
    assert stored is not None
    assert stored.status == (Status.QUEUED if landed else Status.APPROVED)
    queued = ["mission_queued"] if landed else []
    events = [e.type for e in store.events(mission_id, 0)]
    assert events == ["mission_created", "mission_approved", *queued]


def test_firestore_that_never_answers_is_unavailable_and_nothing_changes(
    alice: User, db: firestore.Client
) -> None:
    """After a second lost answer the store gives up (503), having written nothing."""
    store = Unanswered(db, gexc.DeadlineExceeded, landed=False, times=100)
    mission_id = alice.create()["mission_id"]
    with pytest.raises(DependencyUnavailable):
        store.apply(mission_id, lambda m: lifecycle.approve(m, utc_now()))
    assert store.times == 100 - 2  # the first try and one more, not APPLY_ATTEMPTS of them
    stored = FirestoreMissionStore(db, utc_now).get(mission_id)
    assert stored is not None and stored.status == Status.PROPOSED
    assert [e.type for e in store.events(mission_id, 0)] == ["mission_created"]


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not-sent"])
def test_a_new_mission_whose_answer_was_lost_is_stored_once(
    alice: User, db: firestore.Client, landed: bool
) -> None:
    """A create that timed out is looked up rather than refused (its retry would find the
    mission there already) or lost: one mission, its events once."""
    template = FirestoreMissionStore(db, utc_now).get(alice.create()["mission_id"])
    assert template is not None
    mission = replace(template, mission_id=new_mission_id(), event_seq=0)
    store = Unanswered(db, gexc.DeadlineExceeded, landed)
    created = store.create(mission, NewEvent("mission_created", "Mission proposed"))
    assert created.mission_id == mission.mission_id and created.event_seq == 1
    stored = FirestoreMissionStore(db, utc_now).get(mission.mission_id)
    assert stored is not None and stored.owner_uid == alice.uid
    assert [e.type for e in store.events(mission.mission_id, 0)] == ["mission_created"]
