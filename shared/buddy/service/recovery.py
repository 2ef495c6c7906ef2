"""No mission stays in flight forever: dead letters end them, a sweeper revives or ends them.

The sweeper finds running missions whose lease expired (their worker stopped
heart-beating) and queued missions that never started, and republishes them so
a worker resumes them — or, after `max_recoveries` tries, or when their owner
asked to cancel, ends them. Every decision is re-checked inside a transaction,
so a sweep racing a worker, or another sweep, changes nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from buddy.domain.lifecycle import (
    TERMINAL,
    Change,
    MissionNotFound,
    NewEvent,
    Status,
    percent_of,
    status_of,
)
from buddy.domain.progress import Clock
from buddy.service.ports import DependencyUnavailable, ExecutionPublisher, MissionStore
from buddy.service.progress_writer import lease_live

log = logging.getLogger(__name__)


def _ended(
    doc: dict[str, Any],
    now: datetime,
    status: Status,
    event: NewEvent,
    error: dict[str, str] | None = None,
) -> Change:
    record = dict(doc.get("execution_record") or {})
    record["status"] = status.value
    if error is not None:
        record["error"] = error
    if record.get("progress_tracker"):
        record["progress_tracker"] = {**record["progress_tracker"], "estimated_time_remaining": 0}
    return Change(
        updates={
            "status": status.value,
            "finished_at": now,
            "updated_at": now,
            "lease_expires_at": None,
            "execution_record": record,
        },
        events=(event,),
    )


def _current_step(doc: dict[str, Any]) -> str:
    tracker = (doc.get("execution_record") or {}).get("progress_tracker") or {}
    return str((tracker.get("current_step") or {}).get("step_name") or "delivery")


def give_up(doc: dict[str, Any], now: datetime, code: str, message: str) -> Change:
    step = _current_step(doc)
    event = NewEvent("mission_failed", message, step_name=step, progress_percent=percent_of(doc))
    return _ended(
        doc, now, Status.FAILED, event, {"step_name": step, "code": code, "message": message}
    )


@dataclass
class Recovery:
    store: MissionStore
    publisher: ExecutionPublisher
    clock: Clock
    max_recoveries: int = 5
    queue_timeout_seconds: float = 300.0

    def dead_lettered(self, mission_id: str, attempts: int) -> None:
        """Pub/Sub gave up delivering the mission's message: end it, unless a run is alive."""
        now = self.clock()

        def decide(doc: dict[str, Any]) -> Change:
            status = status_of(doc)
            if status in TERMINAL or (status == Status.RUNNING and lease_live(doc, now)):
                return Change()  # finished, or a live run has it: this was a duplicate
            return give_up(
                doc,
                now,
                "dead_lettered",
                f"Execution gave up: the worker could not take the mission after "
                f"{attempts} delivery attempts",
            )

        try:
            self.store.apply(mission_id, decide)
        except MissionNotFound:
            log.warning("dead letter for a missing mission", extra={"mission_id": mission_id})

    def sweep(self) -> dict[str, int]:
        """One pass over stalled and stuck missions; returns what it did, by action."""
        now = self.clock()
        stalled = self.store.in_flight_before(Status.RUNNING.value, "lease_expires_at", now)
        stuck = self.store.in_flight_before(
            Status.QUEUED.value, "queued_at", now - timedelta(seconds=self.queue_timeout_seconds)
        )
        done = {"republished": 0, "failed": 0, "cancelled": 0, "skipped": 0}
        for doc in stalled + stuck:
            action = self._recover(doc["mission_id"], now)
            done[action] += 1
            log.info("swept a mission", extra={"mission_id": doc["mission_id"], "action": action})
        return done

    def _recover(self, mission_id: str, now: datetime) -> str:
        outcome = "skipped"

        def decide(doc: dict[str, Any]) -> Change:
            nonlocal outcome
            status = status_of(doc)
            queue_deadline = now - timedelta(seconds=self.queue_timeout_seconds)
            stalled = status == Status.RUNNING and not lease_live(doc, now)
            stuck = status == Status.QUEUED and (doc.get("queued_at") or now) <= queue_deadline
            if not (stalled or stuck):
                outcome = "skipped"  # a worker got to it meanwhile
                return Change()
            record = doc.get("execution_record") or {}
            recoveries = int(record.get("recoveries") or 0)
            if doc.get("cancel_requested"):
                outcome = "cancelled"
                event = NewEvent(
                    "mission_cancelled",
                    f"Mission cancelled at {percent_of(doc)}% (its worker had stopped)",
                    progress_percent=percent_of(doc),
                )
                return _ended(doc, now, Status.CANCELLED, event)
            if recoveries >= self.max_recoveries:
                outcome = "failed"
                what = "its worker stopped" if stalled else "no worker picked it up"
                return give_up(
                    doc,
                    now,
                    "stalled",
                    f"Stalled: {what}, and {recoveries} recoveries did not help",
                )
            outcome = "republished"
            record = {**record, "recoveries": recoveries + 1}
            updates: dict[str, Any] = {"execution_record": record, "updated_at": now}
            if stuck:
                updates["queued_at"] = now  # counts the wait afresh from this republish
            return Change(updates=updates)

        try:
            self.store.apply(mission_id, decide)
            if outcome == "republished":
                self.publisher.publish_execution(mission_id)
        except (MissionNotFound, DependencyUnavailable) as e:
            log.warning(
                "could not recover a mission", extra={"mission_id": mission_id, "reason": str(e)}
            )
            return "skipped"
        return outcome
