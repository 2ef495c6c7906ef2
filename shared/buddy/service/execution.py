"""The stage worker's use case: run a mission's seven steps and persist their progress."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pydantic

from buddy.domain.eta import Durations, LearnedEta, samples_of
from buddy.domain.intent import Intent, IntentClassifier
from buddy.domain.lifecycle import Change, LifecycleError, NewEvent, Status, status_of
from buddy.domain.progress import (
    STAGES,
    TOTAL_STEPS,
    Clock,
    MissionProgressTracker,
    ProgressEvent,
    iso,
)
from buddy.schemas import validation_message
from buddy.service.ports import DependencyUnavailable, DurationStatsStore, MissionStore
from buddy.tools import (
    Tool,
    ToolCancelled,
    ToolContext,
    ToolError,
    ToolInputs,
    ToolRegistry,
    ToolResult,
)

log = logging.getLogger(__name__)

MIN_TOOL_CONFIDENCE = 0.15
PREVIEW_CHARS = 1000
MAX_ARTIFACT_CHARS = 500_000
MAX_MESSAGE_CHARS = 500
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

    def cancel_in_step(self) -> None:
        """A tool stopped for a cancel: record where the mission got to, then stop."""
        self._flush(terminal=Status.CANCELLED)

    def _flush(self, terminal: Status | None = None, at_boundary: bool = False) -> None:
        snapshot = self.tracker.to_dict()
        if terminal is not None:
            snapshot["estimated_time_remaining"] = 0.0
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


@dataclass
class MissionRunner:
    store: MissionStore
    tools: ToolRegistry
    classifier: IntentClassifier
    clock: Clock
    stats: DurationStatsStore
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
        history = self.stats.load()
        tracker = MissionProgressTracker(mission_id, self.clock, LearnedEta(history))
        writer = ProgressWriter(self.store, tracker, self.clock, self.progress_min_interval_seconds)
        tracker.register_callback(writer)
        try:
            outcome = self._run_stages(doc, history, tracker, writer)
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
        self,
        doc: dict[str, Any],
        history: Durations,
        tracker: MissionProgressTracker,
        writer: ProgressWriter,
    ) -> Outcome:
        try:
            self._stages(doc, history, tracker, writer)
        except StepFailed as e:
            tracker.fail_step(str(e))
            return Outcome.FAILED
        except ToolCancelled:
            writer.cancel_in_step()  # raises MissionCancelled once recorded
        return Outcome.COMPLETED

    def _stages(
        self,
        doc: dict[str, Any],
        history: Durations,
        tracker: MissionProgressTracker,
        writer: ProgressWriter,
    ) -> None:
        tracker.start_stage(VERIFICATION, "Verifying mission eligibility")
        if status_of(doc) == Status.PROPOSED:
            raise StepFailed("Mission not approved: it is still proposed")
        tracker.complete_step("Mission is approved and not yet executed")

        tracker.start_stage(INTENT, "Classifying the objective")
        intent = self.classifier.classify(doc["objective"], doc.get("inputs") or {})
        writer.include(intent={"name": intent.name, "confidence": intent.confidence})
        tracker.complete_step(f"Intent: {intent.name} ({intent.reason})")

        tracker.start_stage(BUDGET, "Estimating cost")
        candidate = self._candidate(doc, intent.name)
        estimate = (
            candidate.estimate_cost(self._inputs(candidate, doc, strict=False))
            if candidate
            else 0.0
        )
        budget = float(doc["budget_usd"])
        if estimate > budget:
            raise StepFailed(f"Budget exceeded: {money(estimate)} > {money(budget)} limit")
        tracker.complete_step(f"Estimated cost {money(estimate)} within {money(budget)} budget")

        tracker.start_stage(SELECTION, "Selecting a tool")
        tool, confidence, why = self._select(doc, candidate, intent)
        self._inputs(tool, doc, strict=True)
        tracker.estimator = LearnedEta(history, tool.name)
        writer.include(tool_used=tool.name, tool_confidence=confidence)
        tracker.complete_step(f"Selected {tool.name} (confidence {confidence:.2f}){why}")

        tracker.start_stage(EXECUTION, f"Running {tool.name}")
        result = self._execute(doc, tool, tracker)
        tracker.complete_step(_clip(f"{tool.name} finished: {result.summary}"))

        tracker.start_stage(ARTIFACT, "Writing the artifact")
        reference = self._write_artifact(doc, tool, result)
        writer.include(artifact_reference=reference)
        tracker.complete_step(_clip(f"Artifact ready: {reference['title']}"))

        tracker.start_stage(FINALIZE, "Recording cost and result")
        writer.include(
            cost_usd={"estimated": estimate, "actual": result.cost_usd},
            result_summary=result.summary,
        )
        self._record_durations(tracker, tool)
        tracker.complete_step(_clip(f"Execution complete: {result.summary}"))

    def _candidate(self, doc: dict[str, Any], intent: str) -> Tool | None:
        chosen = self.tools.get(doc["tool"]) if doc.get("tool") else None
        if chosen is not None and intent in chosen.intents:
            return chosen
        return self.tools.for_intent(intent) or chosen

    @staticmethod
    def _inputs(tool: Tool, doc: dict[str, Any], strict: bool) -> ToolInputs:
        try:
            return tool.input_model.model_validate(doc.get("inputs") or {})
        except pydantic.ValidationError as e:
            if not strict:
                return tool.input_model()
            problems = validation_message(e, prefix="inputs")
            raise StepFailed(
                f"Tool selection failed: inputs don't fit {tool.name}: {problems}"
            ) from e

    def _select(
        self, doc: dict[str, Any], candidate: Tool | None, intent: Intent
    ) -> tuple[Tool, float, str]:
        """The tool to run, its confidence, and a note when the owner's choice was overruled."""
        chosen = doc.get("tool")
        note = ""
        if candidate is not None and candidate.name == chosen:
            # The owner picked it: fully trusted when it serves the intent.
            confidence = 1.0 if intent.name in candidate.intents else max(intent.confidence, 0.5)
        else:
            confidence = intent.confidence
            if chosen and candidate is not None:
                note = f"; {chosen} does not fit a {intent.name} objective"
            if confidence < MIN_TOOL_CONFIDENCE:
                raise StepFailed(
                    f"Tool selection failed: confidence {confidence:.2f} < {MIN_TOOL_CONFIDENCE}"
                )
        if candidate is None:
            raise StepFailed(f"Tool selection failed: no tool serves a {intent.name} objective")
        if candidate.unavailable_reason is not None:
            raise StepFailed(f"Tool selection failed: {candidate.unavailable_reason}")
        return candidate, confidence, note

    def _execute(
        self, doc: dict[str, Any], tool: Tool, tracker: MissionProgressTracker
    ) -> ToolResult:
        def report(done: int, total: int, unit: str, message: str | None) -> None:
            tracker.report_detail(done, total, unit, message)

        context = ToolContext(
            objective=doc["objective"],
            inputs=doc.get("inputs") or {},
            allowed_domains=tuple((doc.get("scope") or {}).get("allowed_domains") or ()),
            report=report,
            cancelled=self._cancel_probe(doc["mission_id"]),
        )
        try:
            return tool.run(context)
        except (ToolCancelled, MissionCancelled, NotClaimable):
            raise
        except ToolError as e:
            raise StepFailed(f"Tool execution failed: {e}") from e
        except Exception as e:
            # A bug or resource blow-up in a tool must still end the mission, not strand it.
            log.exception(
                "tool crashed", extra={"mission_id": doc["mission_id"], "tool": tool.name}
            )
            raise StepFailed(f"Tool execution failed: unexpected {type(e).__name__}") from e

    def _cancel_probe(self, mission_id: str) -> Callable[[], bool]:
        """Whether the owner asked to cancel; reads the mission at most once an interval."""
        last_read = float("-inf")
        requested = False

        def cancelled() -> bool:
            nonlocal last_read, requested
            now = self.clock().timestamp()
            if not requested and now - last_read >= self.progress_min_interval_seconds:
                last_read = now
                requested = bool((self.store.get(mission_id) or {}).get("cancel_requested"))
            return requested

        return cancelled

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
            # Keeps the document well under Firestore's 1 MiB limit.
            "content": result.content[:MAX_ARTIFACT_CHARS],
            "preview": (result.preview or result.content)[:PREVIEW_CHARS],
            "data": result.data,
            "created_at": iso(self.clock()),
        }
        # A second run of this step (a redelivery) finds the artifact there and keeps it.
        self.store.put_artifact_once(artifact)
        return {"artifact_id": artifact_id, "title": result.title, "type": result.type}

    def _record_durations(self, tracker: MissionProgressTracker, tool: Tool) -> None:
        # Finalize is still running: its time so far is nearly all of it.
        finalize = {"step_name": FINALIZE.name, "duration_seconds": tracker.current_step_seconds()}
        try:
            self.stats.record(samples_of([*tracker.completed_steps, finalize], tool.name))
        except DependencyUnavailable:
            # Statistics only sharpen future ETAs; never fail a finished mission for them.
            log.warning("could not record step durations", extra={"tool": tool.name})


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
