"""Persisting a run's progress: few writes, each one a checkpoint under a lease.

The claim and the end of a run are written at once. Everything between (step
boundaries, in-step updates, retries) is written at most once per
`min_interval_seconds`: the events pile up and the latest progress wins, so a
run of quick steps costs one write, however many sub-steps a tool reports.
Nothing waits longer than that interval: the heartbeat writes what is pending.

A step's effects (record fields, documents such as the tool's result or the
artifact) are staged until the step completes and are written with its
completion in one transaction, so a resumed run never repeats them. Every write
renews the run's lease and checks the run still owns the mission; the heartbeat
also renews the lease while a long step is quiet.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from buddy.domain.lifecycle import (
    TERMINAL,
    Change,
    LifecycleError,
    NewEvent,
    Status,
    status_of,
)
from buddy.domain.progress import TOTAL_STEPS, Clock, MissionProgressTracker, ProgressEvent
from buddy.service.ports import MissionStore, StorageRejected

# The status a delivery may start from. A message for an approved mission is one whose
# execute was undone (its publish failed or timed out, and the owner was told so): dropped.
CLAIMABLE = frozenset({Status.QUEUED})


class NotClaimable(LifecycleError):
    """The mission is finished, or another run took it over."""


class MissionBusy(Exception):
    """Another run holds a live lease on the mission: try again later."""


class MissionCancelled(Exception):
    """The owner asked to cancel; the run stopped and recorded it."""


def lease_live(doc: dict[str, Any], now: datetime) -> bool:
    expires = doc.get("lease_expires_at")
    return expires is not None and expires > now


@dataclass
class ProgressWriter:
    store: MissionStore
    tracker: MissionProgressTracker
    clock: Clock
    min_interval_seconds: float
    lease_seconds: float
    run_id: str = field(default_factory=lambda: secrets.token_hex(8))
    writes: int = 0
    cancel_requested: bool = False
    # Pending: what the next write carries. Staged: the running step's effects, pending
    # once the step completes. The heartbeat thread writes too, so both sit under _lock.
    _events: list[NewEvent] = field(default_factory=list)
    _updates: dict[str, Any] = field(default_factory=dict)
    _documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    _staged_updates: dict[str, Any] = field(default_factory=dict)
    _staged_documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    _snapshot: dict[str, Any] = field(default_factory=dict)  # the tracker at the last event
    _claimed: bool = False
    _last_write: float = float("-inf")
    _boundary: dict[str, Any] | None = None
    # Why Firestore refused this run's pending write; the heartbeat then only renews the lease.
    _rejected: str | None = None
    _effects_of: str | None = None  # the step whose effects the next write carries
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def resuming(self) -> None:
        """This run carries on where a stopped one left off (its tracker was restored)."""
        self._boundary = self.tracker.to_dict()

    def include(self, **record_fields: Any) -> None:
        """Execution-record fields the running step produced, written with its completion."""
        with self._lock:
            self._staged_updates.update(_record_fields(record_fields))

    def attach(self, path: str, document: dict[str, Any]) -> None:
        """A document the running step produced, written with its completion."""
        with self._lock:
            self._staged_documents[path] = document

    def __call__(self, event: ProgressEvent, step: dict[str, Any]) -> None:
        new = NewEvent(event, step["message"], step["step_name"], step["progress_percent"])
        with self._lock:
            if event == "step_progress" and self._events and self._events[-1].type == event:
                self._events[-1] = new  # the latest in-step update wins
            else:
                self._events.append(new)
            self._snapshot = self.tracker.to_dict()
            if event in ("step_completed", "step_failed"):
                if self._staged_updates or self._staged_documents:
                    self._effects_of = step["step_name"]
                self._updates.update(self._staged_updates)
                self._documents.update(self._staged_documents)
                self._staged_updates.clear()
                self._staged_documents.clear()
            if event == "step_completed" and step["step_index"] == TOTAL_STEPS:
                self._flush(terminal=Status.COMPLETED)
            elif event == "step_completed":
                self._boundary = self._snapshot
            elif event == "step_failed":
                error = {
                    "step_name": step["step_name"],
                    "code": "storage_rejected" if self._rejected else "step_failed",
                    "message": step["message"],
                }
                self._updates.update(_record_fields({"error": error}))
                self._flush(terminal=Status.FAILED)
            elif event == "step_started" and (not self._claimed or self.cancel_requested):
                # Claim at once; and a cancel seen earlier stops the run at this boundary.
                self._flush(at_boundary=self._boundary is not None)
            elif self._due():
                self._flush(at_boundary=event == "step_started" and self._boundary is not None)

    def retry_scheduled(self, attempt: int, of: int, reason: str, delay: float) -> None:
        """Tells clients a step is about to try again, why, and when."""
        step = self.tracker.current_step
        with self._lock:
            self._events.append(
                NewEvent(
                    "retry_scheduled",
                    f"Attempt {attempt - 1} of {of} failed: {reason}; trying again in {delay:.1f}s",
                    step.step_name if step else None,
                    self.tracker.get_progress_percent(),
                    attempt=attempt,
                )
            )
            self._updates.update(_record_fields({"attempt": attempt}))
            if self._due():
                self._flush()

    def fail_unsaved(self, reason: str) -> None:
        """Firestore refused a write of this run as invalid: end the mission failed, saying
        so, without the effects it refused (retrying or redelivering would not help)."""
        with self._lock:
            self._rejected = reason
            for pending in (
                self._updates,
                self._staged_updates,
                self._documents,
                self._staged_documents,
            ):
                pending.clear()
            step = self.tracker.current_step
            running = step is not None and step.status == "started"
            blamed = self._effects_of or (step.step_name if step else "finalize")
            message = f"Could not save {blamed}'s result: {reason}"
            if running:
                self.tracker.fail_step(message)  # written as the run's failure
                return
            error = {"step_name": blamed, "code": "storage_rejected", "message": message}
            self._updates.update(_record_fields({"error": error}))
            self._flush(terminal=Status.FAILED)

    def cancel_in_step(self) -> None:
        """A tool stopped for a cancel: record where the mission got to, then stop."""
        with self._lock:
            self._flush(terminal=Status.CANCELLED)

    def heartbeat(self) -> None:
        """Writes pending progress once the interval has passed; otherwise renews the lease
        when nothing was written for a third of it."""
        with self._lock:
            if self._events and self._due() and self._rejected is None:
                try:
                    self._flush(snapshot=self._snapshot)
                except StorageRejected as e:
                    # The run's own next write meets it too, and fails the mission; until
                    # then keep the lease, or another run would take over and repeat this.
                    self._rejected = str(e)
                return
            if self.clock().timestamp() - self._last_write < self.lease_seconds / 3:
                return
            now = self.clock()

            def decide(doc: dict[str, Any]) -> Change:
                self._check_owner(doc)
                return Change(updates={"lease_expires_at": self._lease_end(now)})

            self._apply(decide)

    def _due(self) -> bool:
        return self.clock().timestamp() - self._last_write >= self.min_interval_seconds

    def _flush(
        self,
        terminal: Status | None = None,
        at_boundary: bool = False,
        snapshot: dict[str, Any] | None = None,
    ) -> None:
        # From another thread, the snapshot taken at the last event: the tracker may be
        # halfway through a change. Its updated_at still dates its ETA for clients.
        snapshot = dict(snapshot or self.tracker.to_dict())
        if terminal is not None:
            snapshot["estimated_time_remaining"] = 0.0
        events, updates = tuple(self._events), dict(self._updates)
        documents = tuple(self._documents.items())
        now = self.clock()

        def decide(doc: dict[str, Any]) -> Change:
            changes: dict[str, Any] = {
                **updates,
                "updated_at": now,
                "lease_expires_at": self._lease_end(now),
            }
            if self._claimed:
                self._check_owner(doc)
            else:
                changes.update(self._claim(doc, now))
            if at_boundary and doc.get("cancel_requested"):
                return self._cancellation(changes, events, documents, now)
            changes["execution_record.progress_tracker"] = snapshot
            written = events
            if terminal is not None:
                changes.update(_terminal(terminal, now))
                written = (*events, _terminal_event(terminal, snapshot))
            return Change(updates=changes, events=written, documents=documents)

        written = self._apply(decide)
        self._claimed = True
        self._effects_of = None
        self._events.clear()
        self._updates.clear()
        self._documents.clear()
        if status_of(written) == Status.CANCELLED:
            raise MissionCancelled(self.tracker.mission_id)

    def _apply(self, decide: Any) -> dict[str, Any]:
        written = self.store.apply(self.tracker.mission_id, decide)
        self.writes += 1
        self._last_write = self.clock().timestamp()
        self.cancel_requested = bool(written.get("cancel_requested"))
        return written

    def _lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.lease_seconds)

    def _check_owner(self, doc: dict[str, Any]) -> None:
        if status_of(doc) != Status.RUNNING or doc.get("run_id") != self.run_id:
            raise NotClaimable(f"mission is {doc['status']}, run {doc.get('run_id')}")

    def _claim(self, doc: dict[str, Any], now: datetime) -> dict[str, Any]:
        status = status_of(doc)
        record = doc.get("execution_record") or {}
        if status == Status.RUNNING:
            if lease_live(doc, now):
                raise MissionBusy(self.tracker.mission_id)
            # The previous run stopped heart-beating: take over where it left off.
            return {"run_id": self.run_id, "execution_record.runs": record.get("runs", 1) + 1}
        if status not in CLAIMABLE:
            raise NotClaimable(f"mission is {status}")
        return {
            "status": Status.RUNNING.value,
            "started_at": now,
            "run_id": self.run_id,
            "execution_record.status": Status.RUNNING.value,
            "execution_record.attempt": 1,
            "execution_record.runs": 1,
        }

    def _cancellation(
        self,
        changes: dict[str, Any],
        events: tuple[NewEvent, ...],
        documents: tuple[tuple[str, dict[str, Any]], ...],
        now: datetime,
    ) -> Change:
        # Stop at the boundary: the step that was about to start never ran.
        boundary = self._boundary or {}
        percent = boundary.get("progress_percent", 0)
        kept = list(events[:-1] if events and events[-1].type == "step_started" else events)
        kept.append(
            NewEvent(
                "mission_cancelled", f"Mission cancelled at {percent}%", progress_percent=percent
            )
        )
        changes.update(_terminal(Status.CANCELLED, now))
        changes["execution_record.progress_tracker"] = {**boundary, "estimated_time_remaining": 0}
        # The completed step's effects (e.g. its artifact) are kept with its completion.
        return Change(updates=changes, events=tuple(kept), documents=documents)


def _record_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {f"execution_record.{k}": v for k, v in fields.items()}


def _terminal(status: Status, now: datetime) -> dict[str, Any]:
    assert status in TERMINAL
    return {
        "status": status.value,
        "finished_at": now,
        "lease_expires_at": None,
        "execution_record.status": status.value,
    }


def _terminal_event(status: Status, snapshot: dict[str, Any]) -> NewEvent:
    percent = snapshot["progress_percent"]
    step = snapshot.get("current_step") or {}
    if status == Status.COMPLETED:
        return NewEvent("mission_completed", "Mission completed", progress_percent=percent)
    if status == Status.CANCELLED:
        return NewEvent(
            "mission_cancelled",
            f"Mission cancelled at {percent}% during {step.get('step_name')}",
            step_name=step.get("step_name"),
            progress_percent=percent,
        )
    return NewEvent(
        "mission_failed",
        f"Mission failed at {step.get('step_name')}: {step.get('message')}",
        step_name=step.get("step_name"),
        progress_percent=percent,
    )
