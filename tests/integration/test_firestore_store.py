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
