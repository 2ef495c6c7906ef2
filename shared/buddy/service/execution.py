"""The stage worker's use case: run, or resume, a mission's seven steps.

A run claims the mission under a lease (see progress_writer). If its worker
dies, a later delivery whose lease check finds the lease expired takes over
and resumes at the first step not completed, with what earlier steps produced
read back from the mission (intent, estimate, tool) and from the run's private
result document.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

import pydantic
import tenacity

from buddy.domain.eta import Durations, LearnedEta, samples_of
from buddy.domain.intent import Intent, IntentClassifier
from buddy.domain.lifecycle import Status, status_of
from buddy.domain.progress import STAGES, Clock, MissionProgressTracker, iso
from buddy.domain.sizes import fit_text_field, value_size
from buddy.schemas import validation_message
from buddy.service.ports import (
    DependencyUnavailable,
    DurationStatsStore,
    MissionStore,
    StorageRejected,
)
from buddy.service.progress_writer import (
    CLAIMABLE,
    MissionBusy,
    MissionCancelled,
    NotClaimable,
    ProgressWriter,
    lease_live,
)
from buddy.tools import (
    Tool,
    ToolCancelled,
    ToolContext,
    ToolCrashed,
    ToolError,
    ToolInputs,
    ToolOverBudget,
    ToolRegistry,
    ToolResult,
)

log = logging.getLogger(__name__)

MIN_TOOL_CONFIDENCE = 0.15
PREVIEW_CHARS = 1000
MAX_MESSAGE_CHARS = 500
MAX_TITLE_CHARS = 300
MAX_DATA_BYTES = 64 * 1024
(VERIFICATION, INTENT, BUDGET, SELECTION, EXECUTION, ARTIFACT, FINALIZE) = STAGES

__all__ = ["MissionBusy", "MissionRunner", "Outcome", "RunSettings", "money"]


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # not ours to run: missing, finished, or taken by another delivery


class StepFailed(Exception):
    """A step failed for good; its message is written for the mission's owner."""


@dataclass(frozen=True)
class RunSettings:
    progress_min_interval_seconds: float = 1.0
    lease_seconds: float = 60.0
    tool_max_attempts: int = 3
    retry_backoff_seconds: float = 1.0
    # Test hook for fault injection: pause this long at the start of every step.
    step_delay_seconds: float = 0.0


def money(amount: float) -> str:
    """Dollars with cents, and with the digits that tell small amounts apart: $0.00005."""
    whole, _, cents = f"{amount:.10f}".rstrip("0").partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def result_path(mission_id: str) -> str:
    """Where a run keeps its tool's result between steps; clients cannot read it."""
    return f"missions/{mission_id}/private/result"


@dataclass
class Run:
    """What the steps of one mission produced so far."""

    doc: dict[str, Any]
    intent: Intent | None = None
    estimate: float = 0.0
    tool: Tool | None = None
    result: ToolResult | None = None

    @property
    def mission_id(self) -> str:
        return str(self.doc["mission_id"])


@dataclass
class MissionRunner:
    store: MissionStore
    tools: ToolRegistry
    classifier: IntentClassifier
    clock: Clock
    stats: DurationStatsStore
    settings: RunSettings = RunSettings()
    sleep: Callable[[float], None] = time.sleep

    def run(self, mission_id: str) -> Outcome:
        """Runs the mission, or resumes it. Raises MissionBusy while another run holds it."""
        doc = self.store.get(mission_id)
        if doc is None:
            log.warning("execution message for a missing mission", extra={"mission_id": mission_id})
            return Outcome.SKIPPED
        if status_of(doc) == Status.RUNNING and lease_live(doc, self.clock()):
            doc = self._outlive_lease(doc)
        status = status_of(doc)
        resuming = status == Status.RUNNING
        if not resuming and status not in CLAIMABLE:
            log.info(
                "mission is not queued, dropping delivery",
                extra={"mission_id": mission_id, "status": status.value},
            )
            return Outcome.SKIPPED
        history = self.stats.load()
        run = self._restore(doc) if resuming else Run(doc)
        tracker = self._tracker(doc, history, run, resuming)
        writer = ProgressWriter(
            self.store,
            tracker,
            self.clock,
            self.settings.progress_min_interval_seconds,
            self.settings.lease_seconds,
        )
        tracker.register_callback(writer)
        if resuming:
            writer.resuming()
            log.info("resuming a stalled mission", extra={"mission_id": mission_id})
        try:
            with self._heartbeat(writer):
                try:
                    outcome = self._run_stages(run, history, tracker, writer)
                except StorageRejected as e:
                    log.error(
                        "a write was refused", extra={"mission_id": mission_id, "reason": str(e)}
                    )
                    writer.fail_unsaved(str(e))
                    outcome = Outcome.FAILED
        except NotClaimable as e:
            log.info(
                "another run owns the mission", extra={"mission_id": mission_id, "reason": str(e)}
            )
            return Outcome.SKIPPED
        except MissionCancelled:
            log.info("mission cancelled", extra={"mission_id": mission_id})
            return Outcome.CANCELLED
        if outcome == Outcome.COMPLETED:
            self._record_durations(tracker, run)
        log.info(
            "mission finished",
            extra={"mission_id": mission_id, "outcome": outcome.value, "writes": writer.writes},
        )
        return outcome

    def _outlive_lease(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Watches another run's lease: a live run renews it (MissionBusy), a dead one lets it
        run out within a lease period, and then this delivery takes over at once."""
        lease = doc["lease_expires_at"]
        while (wait := (lease - self.clock()).total_seconds()) > 0:
            self.sleep(min(wait + 0.05, 1.0))
            fresh = self.store.get(doc["mission_id"])
            if fresh is None or status_of(fresh) != Status.RUNNING:
                return fresh or doc
            if fresh.get("lease_expires_at") != lease:
                raise MissionBusy(doc["mission_id"])
            doc = fresh
        return doc

    def _tracker(
        self, doc: dict[str, Any], history: Durations, run: Run, resuming: bool
    ) -> MissionProgressTracker:
        estimator = LearnedEta(history, run.tool.name if run.tool else None)
        saved = ((doc.get("execution_record") or {}).get("progress_tracker")) if resuming else None
        if saved:
            return MissionProgressTracker.resume(doc["mission_id"], saved, self.clock, estimator)
        return MissionProgressTracker(doc["mission_id"], self.clock, estimator)

    def _restore(self, doc: dict[str, Any]) -> Run:
        """Reads back what the stopped run's completed steps produced."""
        record = doc.get("execution_record") or {}
        intent = record.get("intent")
        tool = self.tools.get(record["tool_used"]) if record.get("tool_used") else None
        tracker = record.get("progress_tracker") or {}
        done = {step["step_name"] for step in tracker.get("completed_steps", [])}
        result = None
        if EXECUTION.name in done:
            stored = self.store.get_document(result_path(doc["mission_id"]))
            result = ToolResult(**stored) if stored else None
        return Run(
            doc=doc,
            intent=Intent(**intent) if intent else None,
            estimate=float((record.get("cost_usd") or {}).get("estimated") or 0.0),
            tool=tool,
            result=result,
        )

    @contextlib.contextmanager
    def _heartbeat(self, writer: ProgressWriter) -> Iterator[None]:
        stop = threading.Event()
        # Often enough to write pending progress soon after its interval, and to renew leases.
        interval, lease = self.settings.progress_min_interval_seconds, self.settings.lease_seconds
        tick = max(0.05, min(interval / 4, lease / 6))

        def beat() -> None:
            while not stop.wait(tick):
                try:
                    writer.heartbeat()
                except (NotClaimable, DependencyUnavailable) as e:
                    # The run's next write will find out and stop; nothing to do here.
                    log.warning("heartbeat failed", extra={"reason": str(e)})

        thread = threading.Thread(target=beat, name="lease-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _run_stages(
        self, run: Run, history: Durations, tracker: MissionProgressTracker, writer: ProgressWriter
    ) -> Outcome:
        steps: list[tuple[Any, str, Callable[..., str]]] = [
            (VERIFICATION, "Verifying mission eligibility", self._verify),
            (INTENT, "Classifying the objective", self._classify),
            (BUDGET, "Estimating cost", self._check_budget),
            (SELECTION, "Selecting a tool", self._select),
            (EXECUTION, "Running {tool}", self._execute),
            (ARTIFACT, "Writing the artifact", self._write_artifact),
            (FINALIZE, "Recording cost and result", self._finalize),
        ]
        done = {step.step_name for step in tracker.completed_steps}
        resumed = bool(done) or status_of(run.doc) == Status.RUNNING
        try:
            for stage, start_message, action in steps:
                if stage.name in done:
                    continue
                if resumed:
                    start_message += " (resumed after the previous worker stopped)"
                    resumed = False
                tool = run.tool.name if run.tool else "the tool"
                tracker.start_stage(stage, start_message.format(tool=tool))
                if self.settings.step_delay_seconds:
                    self.sleep(self.settings.step_delay_seconds)
                message = action(run, history, tracker, writer)
                tracker.complete_step(_clip(message))
        except StepFailed as e:
            tracker.fail_step(_clip(str(e)))
            return Outcome.FAILED
        except ToolCancelled:
            writer.cancel_in_step()  # raises MissionCancelled once recorded
        return Outcome.COMPLETED

    def _verify(self, run: Run, *_: Any) -> str:
        # The claim already checked it: only a queued mission is started.
        return "Mission is approved, queued and not yet executed"

    def _classify(self, run: Run, _h: Durations, _t: Any, writer: ProgressWriter) -> str:
        run.intent = self.classifier.classify(run.doc["objective"], run.doc.get("inputs") or {})
        writer.include(
            intent={
                "name": run.intent.name,
                "confidence": run.intent.confidence,
                "reason": run.intent.reason,
            }
        )
        return f"Intent: {run.intent.name} ({run.intent.reason})"

    def _check_budget(self, run: Run, _h: Durations, _t: Any, writer: ProgressWriter) -> str:
        assert run.intent is not None
        candidate = self._candidate(run.doc, run.intent.name)
        run.estimate = (
            candidate.estimate_cost(self._inputs(candidate, run.doc, strict=False))
            if candidate
            else 0.0
        )
        budget = float(run.doc["budget_usd"])
        if run.estimate > budget:
            raise StepFailed(f"Budget exceeded: {money(run.estimate)} > {money(budget)} limit")
        writer.include(cost_usd={"estimated": run.estimate, "actual": None})
        return f"Estimated cost {money(run.estimate)} within {money(budget)} budget"

    def _select(
        self, run: Run, history: Durations, tracker: MissionProgressTracker, writer: ProgressWriter
    ) -> str:
        assert run.intent is not None
        candidate = self._candidate(run.doc, run.intent.name)
        tool, confidence, why = self._choose(run.doc, candidate, run.intent)
        self._inputs(tool, run.doc, strict=True)
        run.tool = tool
        tracker.estimator = LearnedEta(history, tool.name)
        writer.include(tool_used=tool.name, tool_confidence=confidence)
        return f"Selected {tool.name} (confidence {confidence:.2f}){why}"

    def _execute(
        self, run: Run, _h: Durations, tracker: MissionProgressTracker, writer: ProgressWriter
    ) -> str:
        tool = run.tool
        assert tool is not None
        budget = tool.time_budget_seconds
        context = ToolContext(
            objective=run.doc["objective"],
            inputs=run.doc.get("inputs") or {},
            allowed_domains=tuple((run.doc.get("scope") or {}).get("allowed_domains") or ()),
            report=lambda done, total, unit, message: tracker.report_detail(
                done, total, unit, message
            ),
            cancelled=lambda: writer.cancel_requested,
            deadline=time.monotonic() + budget,
        )
        attempts = self.settings.tool_max_attempts
        retrying = tenacity.Retrying(
            # Retries share the tool's time budget: none starts after it.
            stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_before_delay(budget),
            wait=tenacity.wait_exponential_jitter(
                initial=self.settings.retry_backoff_seconds,
                max=60,
                jitter=self.settings.retry_backoff_seconds,
            ),
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, ToolError) and e.transient),
            before_sleep=lambda state: writer.retry_scheduled(
                state.attempt_number + 1,
                attempts,
                str(state.outcome.exception()) if state.outcome else "",
                state.next_action.sleep if state.next_action else 0.0,
            ),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            run.result = bounded(retrying(self._tool_call(tool), context))
        except (ToolCancelled, MissionCancelled, NotClaimable, DependencyUnavailable):
            raise
        except ToolOverBudget as e:
            raise StepFailed(
                f"Tool execution failed: {tool.name} took longer than its time budget "
                f"of {budget:g} s"
            ) from e
        except ToolError as e:
            tries = f" (after {attempts} attempts)" if e.transient else ""
            raise StepFailed(f"Tool execution failed: {e}{tries}") from e
        except ToolCrashed as e:
            log.error("tool crashed", extra={"mission_id": run.mission_id, "tool": tool.name})
            raise StepFailed(f"Tool execution failed: {e}") from e
        except Exception as e:
            # A bug or resource blow-up in a tool must still end the mission, not strand it.
            log.exception("tool crashed", extra={"mission_id": run.mission_id, "tool": tool.name})
            raise StepFailed(f"Tool execution failed: unexpected {type(e).__name__}") from e
        result = run.result
        path = result_path(run.mission_id)
        stored = asdict(result)
        fit_text_field(path, stored, "content")
        writer.attach(path, stored)
        return f"{tool.name} finished: {result.summary}"

    @staticmethod
    def _tool_call(tool: Tool) -> Callable[[ToolContext], ToolResult]:
        """How the tool runs: CPU-bound ones in a child process that cannot hold our GIL
        (the lease heartbeat runs on), the rest in this process, bounded by their deadline."""
        if tool.isolated:
            from buddy.tools.isolation import run_isolated

            return lambda context: run_isolated(tool, context)
        return tool.run

    def _write_artifact(self, run: Run, _h: Durations, _t: Any, writer: ProgressWriter) -> str:
        tool, result = run.tool, run.result
        assert tool is not None and result is not None
        artifact_id = "a_" + run.mission_id
        path = f"artifacts/{artifact_id}"
        artifact = {
            "artifact_id": artifact_id,
            "mission_id": run.mission_id,
            "owner_uid": run.doc["owner_uid"],
            "tool": tool.name,
            "type": result.type,
            "title": result.title,
            "summary": result.summary,
            "content": result.content,
            "preview": result.preview or result.content[:PREVIEW_CHARS],
            "data": result.data,
            "created_at": iso(self.clock()),
        }
        # Cut by encoded size, not characters: a CJK character is 3 bytes of the 1 MiB.
        artifact["truncated"] = fit_text_field(path, artifact, "content") or bool(
            result.data.get("truncated")
        )
        # Written in the same transaction that records this step as completed: once.
        writer.attach(path, artifact)
        reference = {"artifact_id": artifact_id, "title": result.title, "type": result.type}
        writer.include(artifact_reference=reference)
        return f"Artifact ready: {result.title}"

    def _finalize(
        self, run: Run, _h: Durations, tracker: MissionProgressTracker, writer: ProgressWriter
    ) -> str:
        tool, result = run.tool, run.result
        assert tool is not None and result is not None
        writer.include(
            cost_usd={"estimated": run.estimate, "actual": result.cost_usd},
            result_summary=result.summary,
        )
        return f"Execution complete: {result.summary}"

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

    def _choose(
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

    def _record_durations(self, tracker: MissionProgressTracker, run: Run) -> None:
        """Folds the run's step durations into the ETA statistics, after its terminal write:
        a worker that dies before it loses one sample, but a resumed run never counts the
        same mission twice."""
        tool = run.tool.name if run.tool else None
        try:
            self.stats.record(samples_of(tracker.completed_steps, tool))
        except DependencyUnavailable:
            # Statistics only sharpen future ETAs; never fail a finished mission for them.
            log.warning("could not record step durations", extra={"tool": tool})


def bounded(result: ToolResult) -> ToolResult:
    """A tool's result with every field a mission document carries kept small: whatever a
    page or a tool says, the mission and its artifact stay far below Firestore's 1 MiB."""
    data = result.data
    if value_size(data) > MAX_DATA_BYTES:
        data = {"omitted": f"the tool's data was over {MAX_DATA_BYTES // 1024} KiB"}
    return replace(
        result,
        title=_clip(result.title, MAX_TITLE_CHARS),
        summary=_clip(result.summary, MAX_MESSAGE_CHARS),
        preview=_clip(result.preview, PREVIEW_CHARS),
        type=result.type[:64],
        data=data,
    )


def _clip(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"
