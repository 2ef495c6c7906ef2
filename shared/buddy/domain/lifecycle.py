"""The mission state machine and the changes it asks storage to make.

Decisions are pure functions of the stored mission document: they return a
`Change` (field updates plus events to append) or raise a `LifecycleError`.
Storage applies a change atomically and numbers its events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})


class LifecycleError(Exception):
    """A request that the mission's current state does not allow."""


class MissionNotFound(LifecycleError):
    def __init__(self, mission_id: str) -> None:
        super().__init__(f"Mission {mission_id} not found")


class InvalidTransition(LifecycleError):
    def __init__(self, action: str, status: str, allowed: str) -> None:
        super().__init__(f"Cannot {action} a mission that is {status}; it must be {allowed}")


@dataclass(frozen=True)
class NewEvent:
    """An event to append to a mission's log; storage gives it `seq` and `timestamp`."""

    type: str
    message: str
    step_name: str | None = None
    progress_percent: int | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class Change:
    updates: dict[str, Any] = field(default_factory=dict)
    events: tuple[NewEvent, ...] = ()
    # Other documents written in the same transaction, by path (e.g. "artifacts/a_m1").
    documents: tuple[tuple[str, dict[str, Any]], ...] = ()
    # Retracts the newest event when it has this seq (undoing an action that
    # never took effect, such as a queueing whose message could not be published).
    retract_seq: int | None = None
    # A change that makes the mission active (queued or running) commits only while its
    # owner has fewer active missions than this; storage keeps the count with every change.
    active_limit: int | None = None


def active_delta(doc: dict[str, Any], change: Change) -> int:
    """+1 when the change moves the mission into the active set, -1 out of it, else 0."""
    before = Status(doc["status"]) in ACTIVE
    after = Status(change.updates.get("status", doc["status"])) in ACTIVE
    return int(after) - int(before)


def event_record(
    doc: dict[str, Any], seq: int, event: NewEvent, now: datetime, keep_for: timedelta
) -> dict[str, Any]:
    """The stored form of an event in `missions/{id}/events/{seq}`; a TTL policy on
    `expire_at` deletes it after `keep_for`."""
    return {
        "seq": seq,
        "type": event.type,
        "step_name": event.step_name,
        "progress_percent": event.progress_percent,
        "message": event.message,
        "attempt": event.attempt,
        "timestamp": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "owner_uid": doc["owner_uid"],
        "expire_at": now + keep_for,
    }


def status_of(doc: dict[str, Any]) -> Status:
    return Status(doc["status"])


def percent_of(doc: dict[str, Any]) -> int:
    tracker = (doc.get("execution_record") or {}).get("progress_tracker") or {}
    return int(tracker.get("progress_percent") or 0)


def proposed(
    mission_id: str,
    owner_uid: str,
    objective: str,
    scope: dict[str, Any],
    budget_usd: float,
    tool: str | None,
    inputs: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """A new mission's document: proposed, nothing done yet."""
    return {
        "mission_id": mission_id,
        "owner_uid": owner_uid,
        "objective": objective,
        "scope": scope,
        "budget_usd": budget_usd,
        "tool": tool,
        "inputs": inputs,
        "status": Status.PROPOSED.value,
        "created_at": now,
        "updated_at": now,
        "approved_at": None,
        "queued_at": None,
        "started_at": None,
        "finished_at": None,
        "cancel_requested": False,
        "execution_record": None,
    }


def approve(doc: dict[str, Any], now: datetime) -> Change:
    _require(doc, "approve", {Status.PROPOSED})
    return Change(
        updates={"status": Status.APPROVED, "approved_at": now, "updated_at": now},
        events=(NewEvent("mission_approved", "Mission approved"),),
    )


def queue(doc: dict[str, Any], now: datetime, max_active: int) -> Change:
    _require(doc, "execute", {Status.APPROVED})
    return Change(
        updates={"status": Status.QUEUED, "queued_at": now, "updated_at": now},
        events=(NewEvent("mission_queued", "Mission queued for execution"),),
        active_limit=max_active,
    )


def unqueue(doc: dict[str, Any], queued_seq: int, now: datetime) -> Change:
    """Undo `queue` when its message never left: the mission is as it was."""
    if status_of(doc) != Status.QUEUED or doc.get("event_seq") != queued_seq:
        return Change()
    return Change(
        updates={"status": Status.APPROVED, "queued_at": None, "updated_at": now},
        retract_seq=queued_seq,
    )


def cancel(doc: dict[str, Any], now: datetime) -> Change:
    status = status_of(doc)
    if status in TERMINAL:
        raise InvalidTransition("cancel", status, "proposed, approved, queued or running")
    if status == Status.RUNNING:
        # The worker stops at the next step boundary and records the cancellation.
        return Change(updates={"cancel_requested": True, "updated_at": now})
    return Change(
        updates={
            "status": Status.CANCELLED,
            "cancel_requested": True,
            "finished_at": now,
            "updated_at": now,
        },
        events=(
            NewEvent(
                "mission_cancelled",
                f"Mission cancelled before it ran (was {status})",
                progress_percent=percent_of(doc),
            ),
        ),
    )


def _require(doc: dict[str, Any], action: str, allowed: set[Status]) -> None:
    status = status_of(doc)
    if status not in allowed:
        raise InvalidTransition(action, status, " or ".join(sorted(allowed)))


def with_updates(doc: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """The document after Firestore-style updates (dotted keys reach into maps)."""
    result = dict(doc)
    for path, value in updates.items():
        *parents, leaf = path.split(".")
        target = result
        for key in parents:
            child = target.get(key)
            target[key] = child = dict(child) if isinstance(child, dict) else {}
            target = child
        target[leaf] = value
    return result
