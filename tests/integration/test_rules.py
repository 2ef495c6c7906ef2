"""firestore.rules, checked by the Firestore emulator with real users' ID tokens."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import requests

from .conftest import MissionWatcher, User

PROJECT = os.environ.get("GCLOUD_PROJECT", "demo-buddy")


def rest(path: str = "") -> str:
    host = os.environ["FIRESTORE_EMULATOR_HOST"]
    return f"http://{host}/v1/projects/{PROJECT}/databases/(default)/documents{path}"


def as_user(user: User | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}"} if user else {}


def owner_query(user: User, collection: str, owner_field_value: str) -> dict:
    return {
        "structuredQuery": {
            "from": [{"collectionId": collection}],
            "where": {
                "fieldFilter": {
                    "field": {"fieldPath": "owner_uid"},
                    "op": "EQUAL",
                    "value": {"stringValue": owner_field_value},
                }
            },
        }
    }


@pytest.fixture
def finished_mission(alice: User, watch: Callable[[str], MissionWatcher]) -> dict[str, str]:
    mission_id = alice.launch()
    final = watch(mission_id).wait_terminal()
    return {
        "mission": f"/missions/{mission_id}",
        "event": f"/missions/{mission_id}/events/1",
        "artifact": f"/artifacts/{final['execution_record']['artifact_reference']['artifact_id']}",
    }


@pytest.mark.parametrize("kind", ["mission", "event", "artifact"])
def test_owner_reads_others_are_denied(
    alice: User, bob: User, finished_mission: dict[str, str], kind: str
) -> None:
    """The owner reads their mission, events and artifact; another user and anonymous can't."""
    path = finished_mission[kind]
    assert requests.get(rest(path), headers=as_user(alice), timeout=10).status_code == 200
    assert requests.get(rest(path), headers=as_user(bob), timeout=10).status_code == 403
    assert requests.get(rest(path), headers=as_user(None), timeout=10).status_code == 403


@pytest.mark.parametrize("kind", ["mission", "event", "artifact"])
def test_clients_write_nothing(alice: User, finished_mission: dict[str, str], kind: str) -> None:
    """Even the owner can't update, delete or create documents directly."""
    path = finished_mission[kind]
    body = {"fields": {"status": {"stringValue": "completed"}}}
    headers = as_user(alice)
    assert requests.patch(rest(path), json=body, headers=headers, timeout=10).status_code == 403
    assert requests.delete(rest(path), headers=headers, timeout=10).status_code == 403
    parent = path.rsplit("/", 1)[0]
    created = requests.post(
        rest(parent),
        json={"fields": {"owner_uid": {"stringValue": alice.uid}}},
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 403


@pytest.mark.parametrize("collection", ["missions", "artifacts"])
def test_list_must_be_constrained_to_the_owner(
    alice: User, bob: User, finished_mission: dict[str, str], collection: str
) -> None:
    """A query filtered on the caller's uid is allowed; unfiltered or someone else's is denied."""
    run = rest(":runQuery")
    mine = requests.post(
        run, json=owner_query(alice, collection, alice.uid), headers=as_user(alice), timeout=10
    )
    assert mine.status_code == 200
    assert any("document" in row for row in mine.json())
    unconstrained = {"structuredQuery": {"from": [{"collectionId": collection}]}}
    for who in (alice, None):
        denied = requests.post(run, json=unconstrained, headers=as_user(who), timeout=10)
        assert denied.status_code == 403
    theirs = requests.post(
        run, json=owner_query(bob, collection, alice.uid), headers=as_user(bob), timeout=10
    )
    assert theirs.status_code == 403


def test_event_log_lists_must_be_constrained_to_the_owner(
    alice: User, bob: User, finished_mission: dict[str, str]
) -> None:
    """The owner lists a mission's events filtered on their uid (what a live log does);
    unfiltered, someone else's or anonymous queries are denied."""
    parent = rest(finished_mission["mission"]) + ":runQuery"
    constrained = owner_query(alice, "events", alice.uid)
    constrained["structuredQuery"]["orderBy"] = [{"field": {"fieldPath": "seq"}}]
    mine = requests.post(parent, json=constrained, headers=as_user(alice), timeout=10)
    assert mine.status_code == 200
    seqs = [
        int(row["document"]["fields"]["seq"]["integerValue"])
        for row in mine.json()
        if "document" in row
    ]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 18
    unconstrained = {"structuredQuery": {"from": [{"collectionId": "events"}]}}
    for who, query in ((alice, unconstrained), (None, unconstrained), (bob, constrained)):
        assert (
            requests.post(parent, json=query, headers=as_user(who), timeout=10).status_code == 403
        )
