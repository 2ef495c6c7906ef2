"""The mission and what it carries: its execution record, progress, events and artifact.

Plain frozen dataclasses; code reads them by name and changes them only through the
transitions in `lifecycle` (each returns a new mission). How they are stored is the storage
adapter's business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal


class Status(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"  # waits for its owner: holds no lease and no worker
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
# What counts against a user's limit of missions in flight.
ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})

StepStatus = Literal["started", "completed", "failed"]
# What a mission does when it meets a limit its owner can lift (budget, allowed domains).
OnLimit = Literal["fail", "ask"]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class StepDetail:
    """Sub-step progress of a long step: 45/100 items."""

    done: int
    total: int
    unit: str


@dataclass(frozen=True)
class ExecutionStep:
    step_name: str
    step_index: int
    total_steps: int
    progress_percent: int
    status: StepStatus
    message: str
    timestamp: str
    duration_seconds: float = 0.0
    detail: StepDetail | None = None


@dataclass(frozen=True)
class Progress:
    """Where a run is: the original design's progress tracker, as clients read it."""

    mission_id: str
    start_time: str
    current_step: ExecutionStep | None = None
    completed_steps: tuple[ExecutionStep, ...] = ()
    progress_percent: int = 0
    elapsed_seconds: float = 0.0
    estimated_time_remaining: float = 0.0
    updated_at: str = ""

    @property
    def done(self) -> frozenset[str]:
        return frozenset(step.step_name for step in self.completed_steps)

    def stopped(self) -> Progress:
        """The same, with nothing more to wait for (a mission that ended)."""
        return replace(self, estimated_time_remaining=0.0)


@dataclass(frozen=True)
class Intent:
    name: str
    confidence: float
    reason: str


@dataclass(frozen=True)
class Cost:
    estimated: float
    actual: float | None = None


@dataclass(frozen=True)
class ArtifactReference:
    artifact_id: str
    title: str
    type: str


@dataclass(frozen=True)
class StepError:
    step_name: str
    code: str
    message: str


@dataclass(frozen=True)
class PauseReason:
    """Why a mission is paused, and what would lift it."""

    code: Literal["requested", "budget_exceeded", "out_of_scope"]
    message: str
    step_name: str | None = None  # where it stopped
    # An ask that nobody answers fails the mission then (a pause its owner asked for waits).
    expires_at: datetime | None = None
    needed_usd: float | None = None  # budget_exceeded: the budget it needs
    host: str | None = None  # out_of_scope: the host it wants to reach (the first of hosts)
    hosts: tuple[str, ...] = ()  # out_of_scope: every host it wants, when it wants several


@dataclass(frozen=True)
class Feedback:
    """The owner's rating (1-5) of a finished mission; rating again replaces it."""

    rating: int
    at: datetime
    comment: str | None = None


@dataclass(frozen=True)
class ExecutionRecord:
    """What running the mission did and produced; `None` fields are not known yet."""

    status: Status
    run: int = 1  # a retry starts the next run
    attempt: int = 1
    runs: int = 1  # runs that claimed the mission: a recovered one counts again
    recoveries: int = 0  # times the sweeper sent it to a worker again
    intent: Intent | None = None
    tool_used: str | None = None
    tool_confidence: float | None = None
    cost_usd: Cost | None = None
    artifact_reference: ArtifactReference | None = None
    result_summary: str | None = None
    error: StepError | None = None
    progress_tracker: Progress | None = None
    # What each completed stage produced, by stage name (small values; a stage whose output
    # is large keeps it apart, see the storage port). A resumed run reads these back.
    outputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scope:
    allowed_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mission:
    mission_id: str
    owner_uid: str
    objective: str
    scope: Scope
    budget_usd: float
    tool: str | None
    inputs: Mapping[str, Any]
    status: Status
    created_at: datetime
    updated_at: datetime
    approved_at: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    on_limit: OnLimit = "fail"
    pause_requested: bool = False
    pause_reason: PauseReason | None = None
    cloned_from: str | None = None
    recipe: Mapping[str, Any] | None = None
    schedule_id: str | None = None
    scheduled_for: datetime | None = None  # the schedule's fire that created it
    feedback: Feedback | None = None
    # Kept in the aggregates (domain.stats): false for missions stored before they existed.
    counted: bool = False
    execution_record: ExecutionRecord | None = None
    # The run that holds the mission, and until when (it renews the lease as it goes).
    run_id: str | None = None
    lease_expires_at: datetime | None = None
    # The seq of the newest event in the mission's log (storage keeps it).
    event_seq: int = 0

    @property
    def record(self) -> ExecutionRecord:
        return self.execution_record or ExecutionRecord(status=self.status)

    @property
    def progress(self) -> Progress | None:
        return self.record.progress_tracker

    @property
    def percent(self) -> int:
        return self.progress.progress_percent if self.progress else 0

    @property
    def current_step_name(self) -> str | None:
        step = self.progress.current_step if self.progress else None
        return step.step_name if step else None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def spent_usd(self) -> float:
        """What the mission has cost so far (its tool's actual cost, once it ran)."""
        cost = self.record.cost_usd
        return cost.actual if cost is not None and cost.actual is not None else 0.0

    def lease_live(self, now: datetime) -> bool:
        return self.lease_expires_at is not None and self.lease_expires_at > now

    def with_record(self, **fields: Any) -> Mission:
        """The mission with some execution-record fields set."""
        return replace(self, execution_record=replace(self.record, **fields))


@dataclass(frozen=True)
class NewEvent:
    """An event to append to a mission's log; storage gives it `seq` and `timestamp`."""

    type: str
    message: str
    step_name: str | None = None
    progress_percent: int | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class Event:
    """An event in a mission's log, `seq` gapless from 1."""

    seq: int
    type: str
    message: str
    timestamp: str
    owner_uid: str
    step_name: str | None = None
    progress_percent: int | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class Artifact:
    """A mission's result, written once with its step's completion."""

    artifact_id: str
    mission_id: str
    owner_uid: str
    tool: str
    type: str
    title: str
    summary: str
    content: str
    preview: str
    created_at: str
    data: Mapping[str, Any] = field(default_factory=dict)
    truncated: bool = False
    # "markdown" | "text" | "json" | "table"; artifacts written before it are text.
    format: str = "text"


def artifact_id_of(mission_id: str) -> str:
    return f"a_{mission_id}"


@dataclass(frozen=True)
class Change:
    """What a transition asks storage to write, atomically; `Change()` writes nothing.

    `private` holds stage outputs too large for the mission document, by stage name, and
    `checkpoint` where a paused tool got to (both unreadable to clients). A change that makes
    the mission active commits only while its owner has fewer than `active_limit` active
    missions (storage counts them with every change).
    """

    mission: Mission | None = None
    events: tuple[NewEvent, ...] = ()
    artifact: Artifact | None = None
    private: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: Mapping[str, Any] | None = None
    # Retracts the newest event when it has this seq (undoing an action that never took
    # effect, such as a queueing whose message could not be published).
    retract_seq: int | None = None
    active_limit: int | None = None

    @property
    def empty(self) -> bool:
        return self.mission is None and not self.events


NO_CHANGE = Change()
