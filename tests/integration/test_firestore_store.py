"""The Firestore adapter's guarantees, checked on the real emulator."""

from __future__ import annotations

import pytest
from google.cloud import firestore

from buddy.adapters.firestore_store import FirestoreMissionStore
from buddy.domain.lifecycle import Change, InvalidTransition, NewEvent
from buddy.domain.progress import utc_now

from .conftest import User


def test_a_change_and_its_documents_commit_together_or_not_at_all(
    alice: User, db: firestore.Client
) -> None:
    """Side documents (an artifact, a tool result) land with their step, never alone."""
    store = FirestoreMissionStore(db, utc_now)
    mission_id = alice.create()["mission_id"]
    artifact = f"artifacts/a_{mission_id}"

    def refuse(_doc: dict) -> Change:
        raise InvalidTransition("test", "proposed", "something else")

    with pytest.raises(InvalidTransition):
        store.apply(mission_id, refuse)
    assert store.get_document(artifact) is None

    def write(_doc: dict) -> Change:
        return Change(
            updates={"tool": "calculate"},
            events=(NewEvent("step_completed", "ok"),),
            documents=((artifact, {"owner_uid": alice.uid, "content": "14"}),),
        )

    written = store.apply(mission_id, write)
    assert store.get_document(artifact) == {"owner_uid": alice.uid, "content": "14"}
    assert written["tool"] == "calculate" and written["event_seq"] == 2
    assert [e["seq"] for e in store.events(mission_id, 0)] == [1, 2]


def test_a_writer_that_knows_the_mission_skips_the_read_until_someone_else_writes(
    alice: User, db: firestore.Client
) -> None:
    """Consecutive writes by one store commit against the version it wrote, without a read;
    a write by anyone else makes it read and decide again on what is really there."""
    store = FirestoreMissionStore(db, utc_now)
    mission_id = alice.create()["mission_id"]  # created by the API, unknown to this store

    def set_tool(name: str):
        return lambda _doc: Change(updates={"tool": name}, events=(NewEvent("step_started", name),))

    store.apply(mission_id, set_tool("first"))
    store.apply(mission_id, set_tool("second"))
    assert store.apply_reads == 1
    ref = db.collection("missions").document(mission_id)
    assert ref.get().to_dict()["tool"] == "second"

    ref.update({"cancel_requested": True})  # the owner cancels, through another process
    seen = []

    def only_when_cancelled(doc: dict) -> Change:
        seen.append(bool(doc.get("cancel_requested")))
        if not doc.get("cancel_requested"):
            raise InvalidTransition("test", doc["status"], "cancelled")
        return Change(updates={"tool": "third"}, events=(NewEvent("step_started", "third"),))

    written = store.apply(mission_id, only_when_cancelled)
    assert seen == [False, True]  # the remembered copy was stale: decided again, fresh
    assert store.apply_reads == 2
    assert written["tool"] == ref.get().to_dict()["tool"] == "third"
    assert [e["seq"] for e in store.events(mission_id, 0)] == [1, 2, 3, 4]
