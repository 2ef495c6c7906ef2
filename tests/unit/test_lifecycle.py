"""The mission state machine: which transitions are allowed, and what they change."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from buddy.domain import lifecycle
from buddy.domain.lifecycle import InvalidTransition, Status, with_updates

from .fakes import START

ALL = [s.value for s in Status]


def queue(mission: dict[str, Any], now: Any) -> lifecycle.Change:
    return lifecycle.queue(mission, now, max_active=10)


def doc(status: str, **extra: Any) -> dict[str, Any]:
    return {"mission_id": "m_1", "owner_uid": "alice", "status": status, "event_seq": 3, **extra}


@pytest.mark.parametrize(
    ("action", "allowed_from", "to", "event"),
    [
        (lifecycle.approve, "proposed", "approved", "mission_approved"),
        (queue, "approved", "queued", "mission_queued"),
    ],
    ids=["approve", "queue"],
)
def test_allowed_transition(action, allowed_from: str, to: str, event: str) -> None:
    """Approve moves proposed→approved and queue moves approved→queued, with one event."""
    change = action(doc(allowed_from), START)
    assert change.updates["status"] == to
    assert change.updates["updated_at"] == START
    assert [e.type for e in change.events] == [event]


@pytest.mark.parametrize(
    ("action", "verb", "status", "allowed"),
    [(lifecycle.approve, "approve", s, "proposed") for s in ALL if s != "proposed"]
    + [(queue, "execute", s, "approved") for s in ALL if s != "approved"],
    ids=[f"approve-from-{s}" for s in ALL if s != "proposed"]
    + [f"queue-from-{s}" for s in ALL if s != "approved"],
)
def test_refused_transition_has_readable_message(
    action, verb: str, status: str, allowed: str
) -> None:
    """A transition from the wrong status raises InvalidTransition saying what is required."""
    with pytest.raises(InvalidTransition) as raised:
        action(doc(status), START)
    assert str(raised.value) == f"Cannot {verb} a mission that is {status}; it must be {allowed}"


@pytest.mark.parametrize("status", ["proposed", "approved", "queued"])
def test_cancel_before_running_cancels_at_once(status: str) -> None:
    """Cancelling a mission that has not started makes it cancelled with an event."""
    change = lifecycle.cancel(doc(status), START)
    assert change.updates == {
        "status": "cancelled",
        "cancel_requested": True,
        "finished_at": START,
        "updated_at": START,
    }
    (event,) = change.events
    assert event.type == "mission_cancelled"
    assert event.message == f"Mission cancelled before it ran (was {status})"
    assert event.progress_percent == 0


def test_cancel_running_only_requests_cancellation() -> None:
    """Cancelling a running mission only sets cancel_requested; the worker stops it."""
    running = doc("running", execution_record={"progress_tracker": {"progress_percent": 40}})
    change = lifecycle.cancel(running, START)
    assert change.updates == {"cancel_requested": True, "updated_at": START}
    assert change.events == ()


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancel_finished_mission_is_refused(status: str) -> None:
    """A finished mission cannot be cancelled."""
    with pytest.raises(InvalidTransition) as raised:
        lifecycle.cancel(doc(status), START)
    assert str(raised.value) == (
        f"Cannot cancel a mission that is {status}; "
        "it must be proposed, approved, queued or running"
    )


def test_unqueue_restores_approved_and_retracts_the_queued_event() -> None:
    """Unqueue with the queued event's seq puts the mission back to approved."""
    change = lifecycle.unqueue(doc("queued"), 3, START)
    assert change.updates == {"status": "approved", "queued_at": None, "updated_at": START}
    assert change.retract_seq == 3
    assert change.events == ()


@pytest.mark.parametrize(
    ("status", "seq"),
    [("queued", 2), ("running", 3), ("approved", 3), ("cancelled", 3)],
    ids=["later-event", "running", "approved", "cancelled"],
)
def test_unqueue_changes_nothing_once_the_mission_moved_on(status: str, seq: int) -> None:
    """Unqueue is a no-op unless the mission is still queued with the same event_seq."""
    change = lifecycle.unqueue(doc(status), seq, START)
    assert (change.updates, change.events, change.retract_seq) == ({}, (), None)


def test_with_updates_reaches_into_maps_without_touching_the_original() -> None:
    """Dotted keys update nested maps in a copy, leaving the original document intact."""
    original = {"status": "running", "execution_record": {"status": "running", "attempt": 1}}
    snapshot = copy.deepcopy(original)
    updated = with_updates(
        original,
        {
            "status": "completed",
            "execution_record.status": "completed",
            "execution_record.progress_tracker.progress_percent": 100,
        },
    )
    assert updated == {
        "status": "completed",
        "execution_record": {
            "status": "completed",
            "attempt": 1,
            "progress_tracker": {"progress_percent": 100},
        },
    }
    assert original == snapshot


def test_with_updates_replaces_a_non_map_parent() -> None:
    """A dotted key under a null field creates the map."""
    updated = with_updates({"execution_record": None}, {"execution_record.intent": "calculate"})
    assert updated == {"execution_record": {"intent": "calculate"}}
