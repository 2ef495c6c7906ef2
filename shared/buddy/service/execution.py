"""The stage worker's use case: run a mission's seven steps and persist their progress."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from buddy.domain.intent import IntentClassifier
from buddy.domain.lifecycle import Change, LifecycleError, NewEvent, Status, status_of
from buddy.domain.progress import (
    STAGES,
    TOTAL_STEPS,
    Clock,
    MissionProgressTracker,
    ProgressEvent,
    iso,
)
from buddy.service.ports import MissionStore
from buddy.tools import Tool, ToolError, ToolRegistry, ToolResult

log = logging.getLogger(__name__)

MIN_TOOL_CONFIDENCE = 0.15
PREVIEW_CHARS = 500
# Statuses a delivery may start from; `proposed` is claimed only to fail it visibly.
CLAIMABLE = frozenset({Status.PROPOSED, Status.APPROVED, Status.QUEUED})
(VERIFICATION, INTENT, BUDGET, SELECTION, EXECUTION, ARTIFACT, FINALIZE) = STAGES


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # not ours to run: missing, finished, or run by another delivery


class NotClaimable(LifecycleError):
    """Another delivery owns this mission, or it is no longer in flight."""


class MissionCancelled(Exception):
    """The owner asked to cancel; the run stopped at a step boundary."""


class StepFailed(Exception):
    """A step failed; its message is written for the mission's owner."""


def money(amount: float) -> str:
    """Dollars with cents, and with the digits that tell small amounts apart: $0.00005."""
    whole, _, cents = f"{amount:.10f}".rstrip("0").partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


@dataclass
class ProgressWriter:
    """Tracker callback that persists progress with few writes.

    A step's completion is held back and written together with the next step's
    start; in-step updates are written at most once per `min_interval_seconds`;
    the terminal state is always written. Each write is one transaction that
    also checks this run still owns the mission and whether a cancel was asked.
    """

    store: MissionStore
    tracker: MissionProgressTracker
    clock: Clock
    min_interval_seconds: float
    run_id: str = field(default_factory=lambda: secrets.token_hex(8))
    writes: int = 0
    _events: list[NewEvent] = field(default_factory=list)
    _updates: dict[str, Any] = field(default_factory=dict)
    _claimed: bool = False
    _last_write: float = float("-inf")
    _boundary: dict[str, Any] | None = None

    def include(self, **record_fields: Any) -> None:
        """Execution-record fields to write with the next flush."""
        self._updates.update({f"execution_record.{k}": v for k, v in record_fields.items()})

    def __call__(self, event: ProgressEvent, step: dict[str, Any]) -> None:
        new = NewEvent(event, step["message"], step["step_name"], step["progress_percent"])
        if event == "step_progress":
            self._events = [e for e in self._events if e.type != "step_progress"] + [new]
            if self.clock().timestamp() - self._last_write >= self.min_interval_seconds:
                self._flush()
            return
        self._events.append(new)
        if event == "step_started":
            self._flush(at_boundary=self._boundary is not None)
        elif event == "step_completed" and step["step_index"] == TOTAL_STEPS:
            self._flush(terminal=Status.COMPLETED)
        elif event == "step_completed":
            self._boundary = self.tracker.to_dict()
        elif event == "step_failed":
            error = {
                "step_name": step["step_name"],
                "code": "step_failed",
                "message": step["message"],
            }
            self.include(error=error)
            self._flush(terminal=Status.FAILED)

    def _flush(self, terminal: Status | None = None, at_boundary: bool = False) -> None:
        snapshot = self.tracker.to_dict()
        events, updates = list(self._events), dict(self._updates)
        now = self.clock()

        def decide(doc: dict[str, Any]) -> Change:
            status = status_of(doc)
            changes: dict[str, Any] = {**updates, "updated_at": now}
            if not self._claimed:
                if status not in CLAIMABLE:
                    raise NotClaimable(f"mission is {status}")
                changes.update(self._claim(now))
            elif status != Status.RUNNING or doc.get("run_id") != self.run_id:
                raise NotClaimable(f"mission is {status}, run {doc.get('run_id')}")
            if at_boundary and doc.get("cancel_requested"):
                return self._cancellation(changes, events, now)
            changes["execution_record.progress_tracker"] = snapshot
            if terminal is not None:
                changes.update(self._terminal(terminal, now))
                events.append(_terminal_event(terminal, snapshot))
            return Change(updates=changes, events=tuple(events))

        written = self.store.apply(self.tracker.mission_id, decide)
        self.writes += 1
        self._claimed = True
        self._events.clear()
        self._updates.clear()
        self._last_write = self.clock().timestamp()
        if status_of(written) == Status.CANCELLED:
            raise MissionCancelled(self.tracker.mission_id)

    def _claim(self, now: Any) -> dict[str, Any]:
        return {
            "status": Status.RUNNING.value,
            "started_at": now,
            "run_id": self.run_id,
            "execution_record.status": Status.RUNNING.value,
            "execution_record.attempt": 1,
        }

    def _cancellation(self, changes: dict[str, Any], events: list[NewEvent], now: Any) -> Change:
        # Stop at the boundary: the step that was about to start never ran.
        boundary = self._boundary or {}
        percent = boundary.get("progress_percent", 0)
        kept = [e for e in events if e.type != "step_started"]
        kept.append(
            NewEvent(
                "mission_cancelled", f"Mission cancelled at {percent}%", progress_percent=percent
            )
        )
        changes.update(self._terminal(Status.CANCELLED, now))
        changes["execution_record.progress_tracker"] = {**boundary, "estimated_time_remaining": 0}
        return Change(updates=changes, events=tuple(kept))

    @staticmethod
    def _terminal(status: Status, now: Any) -> dict[str, Any]:
        return {
            "status": status.value,
            "finished_at": now,
            "execution_record.status": status.value,
        }


def _terminal_event(status: Status, snapshot: dict[str, Any]) -> NewEvent:
    percent = snapshot["progress_percent"]
    if status == Status.COMPLETED:
        return NewEvent("mission_completed", "Mission completed", progress_percent=percent)
    step = snapshot.get("current_step") or {}
    return NewEvent(
        "mission_failed",
        f"Mission failed at {step.get('step_name')}: {step.get('message')}",
        step_name=step.get("step_name"),
        progress_percent=percent,
    )


@dataclass
class MissionRunner:
    store: MissionStore
    tools: ToolRegistry
    classifier: IntentClassifier
    clock: Clock
    progress_min_interval_seconds: float = 1.0

    def run(self, mission_id: str) -> Outcome:
        doc = self.store.get(mission_id)
        if doc is None:
            log.warning("execution message for a missing mission", extra={"mission_id": mission_id})
            return Outcome.SKIPPED
        if status_of(doc) not in CLAIMABLE:
            log.info(
                "mission not claimable, skipping delivery",
                extra={"mission_id": mission_id, "status": doc["status"]},
            )
            return Outcome.SKIPPED
        tracker = MissionProgressTracker(mission_id, self.clock)
        writer = ProgressWriter(self.store, tracker, self.clock, self.progress_min_interval_seconds)
        tracker.register_callback(writer)
        try:
            outcome = self._run_stages(doc, tracker, writer)
        except NotClaimable as e:
            log.info(
                "another delivery owns the mission",
                extra={"mission_id": mission_id, "reason": str(e)},
            )
            return Outcome.SKIPPED
        except MissionCancelled:
            log.info("mission cancelled", extra={"mission_id": mission_id})
            return Outcome.CANCELLED
        log.info(
            "mission finished",
            extra={"mission_id": mission_id, "outcome": outcome.value, "writes": writer.writes},
        )
        return outcome

    def _run_stages(
        self, doc: dict[str, Any], tracker: MissionProgressTracker, writer: ProgressWriter
    ) -> Outcome:
        try:
            self._stages(doc, tracker, writer)
        except StepFailed as e:
            tracker.fail_step(str(e))
            return Outcome.FAILED
        return Outcome.COMPLETED

    def _stages(
        self, doc: dict[str, Any], tracker: MissionProgressTracker, writer: ProgressWriter
    ) -> None:
        tracker.start_stage(VERIFICATION, "Verifying mission eligibility")
        if status_of(doc) == Status.PROPOSED:
            raise StepFailed("Mission not approved: it is still proposed")
        tracker.complete_step("Mission is approved and not yet executed")

        tracker.start_stage(INTENT, "Classifying the objective")
        intent = self.classifier.classify(doc["objective"])
        writer.include(intent={"name": intent.name, "confidence": intent.confidence})
        tracker.complete_step(f"Intent: {intent.name} ({intent.reason})")

        tracker.start_stage(BUDGET, "Estimating cost")
        candidate = self._candidate(doc, intent.name)
        estimate = candidate.estimated_cost_usd if candidate else 0.0
        budget = float(doc["budget_usd"])
        if estimate > budget:
            raise StepFailed(f"Budget exceeded: {money(estimate)} > {money(budget)} limit")
        tracker.complete_step(f"Estimated cost {money(estimate)} within {money(budget)} budget")

        tracker.start_stage(SELECTION, "Selecting a tool")
        tool, confidence = self._select(doc, candidate, intent.name, intent.confidence)
        writer.include(tool_used=tool.name, tool_confidence=confidence)
        tracker.complete_step(f"Selected {tool.name} (confidence {confidence:.2f})")

        tracker.start_stage(EXECUTION, f"Running {tool.name}")
        result = self._execute(doc, tool, tracker)
        tracker.complete_step(f"{tool.name} finished: {result.summary}"[:500])

        tracker.start_stage(ARTIFACT, "Writing the artifact")
        reference = self._write_artifact(doc, tool, result)
        writer.include(artifact_reference=reference)
        tracker.complete_step(f"Artifact ready: {reference['title']}"[:500])

        tracker.start_stage(FINALIZE, "Recording cost and result")
        writer.include(
            cost_usd={"estimated": estimate, "actual": result.cost_usd},
            result_summary=result.summary,
        )
        tracker.complete_step(f"Execution complete: {result.summary}"[:500])

    def _candidate(self, doc: dict[str, Any], intent: str) -> Tool | None:
        chosen = doc.get("tool")
        return self.tools.get(chosen) if chosen else self.tools.for_intent(intent)

    def _select(
        self, doc: dict[str, Any], candidate: Tool | None, intent: str, confidence: float
    ) -> tuple[Tool, float]:
        if doc.get("tool") and candidate is not None:
            # The owner chose the tool; it is trusted fully when it serves the intent.
            return candidate, 1.0 if intent in candidate.intents else max(confidence, 0.5)
        if confidence < MIN_TOOL_CONFIDENCE:
            raise StepFailed(
                f"Tool selection failed: confidence {confidence:.2f} < {MIN_TOOL_CONFIDENCE}"
            )
        if candidate is None:
            raise StepFailed(f"Tool selection failed: no available tool for intent '{intent}'")
        return candidate, confidence

    def _execute(
        self, doc: dict[str, Any], tool: Tool, tracker: MissionProgressTracker
    ) -> ToolResult:
        def report(done: int, total: int, unit: str, message: str | None) -> None:
            tracker.report_detail(done, total, unit, message)

        try:
            return tool.run(doc["objective"], doc.get("inputs") or {}, report)
        except ToolError as e:
            raise StepFailed(f"Tool execution failed: {e}") from e
        except Exception as e:
            # A bug or resource blow-up in a tool must still end the mission, not strand it.
            log.exception(
                "tool crashed", extra={"mission_id": doc["mission_id"], "tool": tool.name}
            )
            raise StepFailed(f"Tool execution failed: unexpected {type(e).__name__}") from e

    def _write_artifact(
        self, doc: dict[str, Any], tool: Tool, result: ToolResult
    ) -> dict[str, Any]:
        artifact_id = "a_" + doc["mission_id"]
        artifact = {
            "artifact_id": artifact_id,
            "mission_id": doc["mission_id"],
            "owner_uid": doc["owner_uid"],
            "tool": tool.name,
            "type": result.type,
            "title": result.title,
            "summary": result.summary,
            "content": result.content,
            "data": result.data,
            "preview": result.content[:PREVIEW_CHARS],
            "created_at": iso(self.clock()),
        }
        self.store.put_artifact_once(artifact)
        return {"artifact_id": artifact_id, "title": result.title, "type": result.type}
