"""The seven stages of a mission run, as data: name, percent band, start message, action.

Each action gets one StepContext, does its work, says what it produced (`ctx.produce`) and
what clients should see (`ctx.show`, `ctx.attach`), and returns its completion message. What
it produced is memoized under the stage's name and written with the step's completion, so a
run resumed after a crash reads it back instead of running the stage again. Adding a stage
is one entry in STAGES.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pydantic
import tenacity

from buddy.domain import stats
from buddy.domain.eta import Durations, LearnedEta
from buddy.domain.mission import (
    Artifact,
    ArtifactReference,
    Cost,
    Intent,
    Mission,
    PauseReason,
    artifact_id_of,
    iso,
)
from buddy.domain.sizes import fit_text_field, value_size
from buddy.errors import DependencyUnavailable
from buddy.schemas import validation_message
from buddy.tools import (
    Tool,
    ToolCancelled,
    ToolContext,
    ToolCrashed,
    ToolError,
    ToolInputs,
    ToolOverBudget,
    ToolPaused,
    ToolResult,
)

if TYPE_CHECKING:
    from buddy.domain.progress import MissionProgressTracker
    from buddy.service.execution import MissionRunner
    from buddy.service.progress_writer import ProgressWriter

log = logging.getLogger(__name__)

MIN_TOOL_CONFIDENCE = 0.15
OWNERS_PICK = 0.9  # the confidence of a tool the owner named that serves the intent
PREVIEW_CHARS = 1000
MAX_MESSAGE_CHARS = 500
MAX_TITLE_CHARS = 300
MAX_DATA_BYTES = 64 * 1024


class StepFailed(Exception):
    """Signal: the step failed for good. Its message is written for the mission's owner; the
    run records the failure and ends, and the delivery is acknowledged."""


class StepPaused(Exception):
    """Signal: the step met a limit its owner can lift, and the mission asks instead of
    failing (`on_limit: "ask"`). The run records the pause and its reason and ends; the
    step runs again when the owner resumes."""

    def __init__(self, reason: PauseReason) -> None:
        super().__init__(reason.message)
        self.reason = reason


@dataclass(frozen=True)
class Stage:
    name: str
    start_percent: int
    end_percent: int
    start_message: str  # "{tool}" stands for the selected tool's name
    action: Callable[[StepContext], str]
    # Its output is too large for the mission document: it is kept apart, unreadable to clients.
    private: bool = False


@dataclass
class StepContext:
    """What a stage's action works with."""

    mission: Mission
    stage: Stage
    memo: dict[str, Any]  # what the stages before it produced, by stage name
    runner: MissionRunner
    tracker: MissionProgressTracker
    writer: ProgressWriter
    history: Durations  # how long steps took in earlier missions
    # Where this step's tool got to when the mission last paused or failed inside it, and
    # what it has saved since (written with a pause or the step's failure).
    checkpoint: Mapping[str, Any] | None = None
    saved: Mapping[str, Any] | None = None

    def output(self, stage: str) -> Any:
        """What an earlier stage produced."""
        return self.memo[stage]

    def produce(self, value: Any) -> None:
        """What this stage produced: kept for the stages after it, and for a resumed run."""
        self.memo[self.stage.name] = value
        self.writer.produce(self.stage.name, value, private=self.stage.private)

    def show(self, **record_fields: Any) -> None:
        """Execution-record fields for clients, written with this step's completion."""
        self.writer.include(**record_fields)

    def attach(self, artifact: Artifact) -> None:
        self.writer.attach(artifact)

    def over_limit(self, code: str, message: str, **details: Any) -> Exception:
        """What to raise at a limit the owner can lift: a pause asking them, when the
        mission says to ask; else the step's failure, with the same message."""
        if self.mission.on_limit != "ask":
            return StepFailed(message)
        timeout = timedelta(seconds=self.runner.settings.pause_timeout_seconds)
        reason = PauseReason(
            code,  # type: ignore[arg-type]
            message,
            step_name=self.stage.name,
            expires_at=self.runner.clock() + timeout,
            **details,
        )
        return StepPaused(reason)


def money(amount: float) -> str:
    """Dollars with cents, and with the digits that tell small amounts apart: $0.00005."""
    whole, _, cents = f"{amount:.10f}".rstrip("0").partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


# ---- the actions, in stage order ----------------------------------------------------------


def verify(ctx: StepContext) -> str:
    # The claim checked it already: only a queued mission starts a run.
    ctx.produce(None)
    return "Mission is approved, queued and not yet executed"


def classify(ctx: StepContext) -> str:
    mission = ctx.mission
    intent = ctx.runner.classifier.classify(mission.objective, dict(mission.inputs))
    ctx.produce(asdict(intent))
    ctx.show(intent=intent)
    return f"Intent: {intent.name} ({intent.reason})"


def check_budget(ctx: StepContext) -> str:
    mission, intent = ctx.mission, Intent(**ctx.output(INTENT))
    candidate = _candidate(ctx, intent.name)
    estimate = (
        candidate.estimate_cost(_inputs(candidate, mission, strict=False)) if candidate else 0.0
    )
    if estimate > mission.budget_usd:
        message = f"Budget exceeded: {money(estimate)} > {money(mission.budget_usd)} limit"
        if mission.on_limit == "ask":
            message += " — raise the budget to continue"
        raise ctx.over_limit("budget_exceeded", message, needed_usd=estimate)
    ctx.produce({"estimate": estimate})
    ctx.show(cost_usd=Cost(estimated=estimate))
    return f"Estimated cost {money(estimate)} within {money(mission.budget_usd)} budget"


def select(ctx: StepContext) -> str:
    intent = Intent(**ctx.output(INTENT))
    tool, confidence, learned, note = _choose(ctx, _candidate(ctx, intent.name), intent)
    _inputs(tool, ctx.mission, strict=True)
    ctx.tracker.estimator = LearnedEta(ctx.history, STAGE_NAMES, tool.name)
    ctx.produce({"tool": tool.name, "confidence": confidence})
    ctx.show(tool_used=tool.name, tool_confidence=confidence)
    return f"Selected {tool.name} (confidence {confidence:.2f}{learned}){note}"


def execute(ctx: StepContext) -> str:
    tool = selected_tool(ctx)
    result = bounded(_run_tool(ctx, tool))
    stored = asdict(result)
    fit_text_field(stored, "content")
    ctx.produce(stored)
    return f"{tool.name} finished: {result.summary}"


def write_artifact(ctx: StepContext) -> str:
    mission, tool, result = ctx.mission, selected_tool(ctx), ToolResult(**ctx.output(EXECUTION))
    artifact_id = artifact_id_of(mission.mission_id)
    fields: dict[str, Any] = {
        "artifact_id": artifact_id,
        "mission_id": mission.mission_id,
        "owner_uid": mission.owner_uid,
        "tool": tool.name,
        "type": result.type,
        "format": result.format,
        "title": result.title,
        "summary": result.summary,
        "content": result.content,
        "preview": result.preview or result.content[:PREVIEW_CHARS],
        "data": result.data,
        "created_at": iso(ctx.runner.clock()),
    }
    # Cut by encoded size, not characters: a CJK character is 3 bytes of the 1 MiB.
    cut = fit_text_field(fields, "content")
    ctx.attach(Artifact(**fields, truncated=cut or bool(result.data.get("truncated"))))
    ctx.produce({"artifact_id": artifact_id})
    ctx.show(artifact_reference=ArtifactReference(artifact_id, result.title, result.type))
    return f"Artifact ready: {result.title}"


def finalize(ctx: StepContext) -> str:
    result = ToolResult(**ctx.output(EXECUTION))
    estimate = float(ctx.output(BUDGET)["estimate"])
    budget = ctx.mission.budget_usd
    if result.cost_usd > budget:
        message = f"Budget exceeded: the tool cost {money(result.cost_usd)} > {money(budget)} limit"
        if ctx.mission.on_limit == "ask":
            message += " — raise the budget to continue"
        raise ctx.over_limit("budget_exceeded", message, needed_usd=result.cost_usd)
    ctx.produce(None)
    ctx.show(cost_usd=Cost(estimate, result.cost_usd), result_summary=result.summary)
    return f"Execution complete: {result.summary}"


STAGES: tuple[Stage, ...] = (
    Stage("verification", 5, 10, "Verifying mission eligibility", verify),
    Stage("intent_classification", 20, 30, "Classifying the objective", classify),
    Stage("budget_check", 30, 40, "Estimating cost", check_budget),
    Stage("tool_selection", 40, 55, "Selecting a tool", select),
    Stage("tool_execution", 55, 80, "Running {tool}", execute, private=True),
    Stage("artifact_creation", 80, 90, "Writing the artifact", write_artifact),
    Stage("finalize", 90, 100, "Recording cost and result", finalize),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
INTENT, BUDGET, SELECTION, EXECUTION = (
    "intent_classification",
    "budget_check",
    "tool_selection",
    "tool_execution",
)


# ---- helpers of the actions ---------------------------------------------------------------


def selected_tool(ctx: StepContext) -> Tool:
    name = ctx.output(SELECTION)["tool"]
    tool = ctx.runner.tools.get(name)
    if tool is None:  # the registry changed between runs of one mission (a deploy)
        raise StepFailed(f"Tool execution failed: {name} is no longer available")
    return tool


def _candidate(ctx: StepContext, intent: str) -> Tool | None:
    tools, chosen_name = ctx.runner.tools, ctx.mission.tool
    chosen = tools.get(chosen_name) if chosen_name else None
    if chosen is not None and intent in chosen.intents:
        return chosen
    return tools.for_intent(intent) or chosen


def _inputs(tool: Tool, mission: Mission, strict: bool) -> ToolInputs:
    try:
        return tool.input_model.model_validate(dict(mission.inputs))
    except pydantic.ValidationError as e:
        if not strict:
            return tool.input_model()
        problems = validation_message(e, prefix="inputs")
        raise StepFailed(f"Tool selection failed: inputs don't fit {tool.name}: {problems}") from e


def _choose(
    ctx: StepContext, candidate: Tool | None, intent: Intent
) -> tuple[Tool, float, str, str]:
    """The tool to run, its confidence (with what its ratings for this intent add), and
    what to say about both."""
    chosen = ctx.mission.tool
    learned = _ratings(ctx, candidate.name, intent.name) if candidate else (0, 0.0)
    owners_pick = candidate is not None and candidate.name == chosen
    if candidate is not None and owners_pick:
        # The owner picked it: trusted when it serves the intent (below 1.0, so that good
        # ratings can still raise it; an owner's pick is never refused for its confidence).
        base = OWNERS_PICK if intent.name in candidate.intents else max(intent.confidence, 0.5)
    else:
        base = intent.confidence
    confidence = stats.adjusted(base, *learned)
    said = _learned_words(confidence - base, learned[0])
    note = ""
    if chosen and candidate is not None and not owners_pick:
        note = f"; {chosen} does not fit a {intent.name} objective"
    if not owners_pick and confidence < MIN_TOOL_CONFIDENCE:
        raise StepFailed(
            f"Tool selection failed: confidence {confidence:.2f}{said} < {MIN_TOOL_CONFIDENCE}"
        )
    if candidate is None:
        raise StepFailed(f"Tool selection failed: no tool serves a {intent.name} objective")
    if candidate.unavailable_reason is not None:
        raise StepFailed(f"Tool selection failed: {candidate.unavailable_reason}")
    return candidate, confidence, said, note


def _ratings(ctx: StepContext, tool: str, intent: str) -> tuple[int, float]:
    """Everyone's ratings of the tool for this intent: how many, and their sum. Without
    them (the statistics unreachable) a tool is selected on its own confidence."""
    ratings = ctx.runner.ratings
    if ratings is None:
        return 0, 0.0
    try:
        return ratings.ratings(tool, intent)
    except DependencyUnavailable:
        log.warning("ratings unavailable; selecting without them", extra={"tool": tool})
        return 0, 0.0


def _learned_words(change: float, count: int) -> str:
    """What the ratings changed (as applied: the confidence stays within 0 to 1)."""
    if not count:
        return ""
    plural = "" if count == 1 else "s"
    return f", {change:+.2f} from {count} rating{plural}"


def _run_tool(ctx: StepContext, tool: Tool) -> ToolResult:
    """Runs the tool within its time budget, retrying transient errors visibly; its failures
    become the step's, in words for the owner."""
    mission, settings, writer = ctx.mission, ctx.runner.settings, ctx.writer
    budget = tool.time_budget_seconds
    context = ToolContext(
        objective=mission.objective,
        inputs=dict(mission.inputs),
        allowed_domains=mission.scope.allowed_domains,
        report=lambda done, total, unit, message: ctx.tracker.report_detail(
            done, total, unit, message
        ),
        cancelled=lambda: writer.cancel_requested,
        deadline=time.monotonic() + budget,
        paused=lambda: writer.pause_requested,
        on_limit=mission.on_limit,
        checkpoint=ctx.checkpoint,
        save=lambda state: setattr(ctx, "saved", state),
    )
    attempts = settings.tool_max_attempts
    retrying = tenacity.Retrying(
        # Retries share the tool's time budget: none starts after it.
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_before_delay(budget),
        wait=tenacity.wait_exponential_jitter(
            initial=settings.retry_backoff_seconds, max=60, jitter=settings.retry_backoff_seconds
        ),
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, ToolError) and e.transient),
        before_sleep=lambda state: writer.retry_scheduled(
            state.attempt_number + 1,
            attempts,
            str(state.outcome.exception()) if state.outcome else "",
            state.next_action.sleep if state.next_action else 0.0,
        ),
        sleep=ctx.runner.sleep,
        reraise=True,
    )
    try:
        result: ToolResult = retrying(_tool_call(tool), context)
    except (ToolCancelled, ToolPaused, DependencyUnavailable):
        raise
    except ToolOverBudget as e:
        raise StepFailed(
            f"Tool execution failed: {tool.name} took longer than its time budget of {budget:g} s"
        ) from e
    except ToolError as e:
        tries = f" (after {attempts} attempts)" if e.transient else ""
        raise StepFailed(f"Tool execution failed: {e}{tries}") from e
    except ToolCrashed as e:
        log.error("tool crashed", extra={"mission_id": mission.mission_id, "tool": tool.name})
        raise StepFailed(f"Tool execution failed: {e}") from e
    except Exception as e:
        # A bug or resource blow-up in a tool must still end the mission, not strand it.
        log.exception("tool crashed", extra={"mission_id": mission.mission_id, "tool": tool.name})
        raise StepFailed(f"Tool execution failed: unexpected {type(e).__name__}") from e
    return result


def _tool_call(tool: Tool) -> Callable[[ToolContext], ToolResult]:
    """CPU-bound tools run in a child process that cannot hold our GIL (the lease heartbeat
    runs on it); the rest in this process, bounded by their deadline."""
    if tool.isolated:
        from buddy.tools.isolation import run_isolated

        return lambda context: run_isolated(tool, context)
    return tool.run


def bounded(result: ToolResult) -> ToolResult:
    """A tool's result with every field a mission document carries kept small: whatever a
    page or a tool says, the mission and its artifact stay far below Firestore's 1 MiB."""
    data = result.data
    if value_size(data) > MAX_DATA_BYTES:
        data = {"omitted": f"the tool's data was over {MAX_DATA_BYTES // 1024} KiB"}
    return replace(
        result,
        title=clip(result.title, MAX_TITLE_CHARS),
        summary=clip(result.summary),
        preview=clip(result.preview, PREVIEW_CHARS),
        type=result.type[:64],
        data=data,
    )


def clip(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"
