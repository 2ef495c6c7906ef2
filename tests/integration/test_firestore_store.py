"""The Firestore adapter's guarantees, checked on the real emulator."""

from __future__ import annotations

import uuid

from google.cloud import firestore

from buddy.adapters.firestore_store import FirestoreMissionStore
from buddy.domain.progress import utc_now


def test_artifact_is_created_once(db: firestore.Client) -> None:
    """Writing a mission's artifact twice keeps the first one and says so."""
    store = FirestoreMissionStore(db, utc_now)
    artifact_id = f"a_test_{uuid.uuid4().hex[:10]}"
    first = {"artifact_id": artifact_id, "owner_uid": "u1", "content": "first"}
    assert store.put_artifact_once(first) is True
    assert store.put_artifact_once({**first, "content": "second"}) is False
    assert store.get_artifact(artifact_id) == first
