"""Persisting a run's progress: few writes, each one a checkpoint under a lease.

The claim and the end of a run are written at once. Everything between (step boundaries,
in-step updates, retries) is written at most once per `min_interval_seconds`: the events pile
up and the latest progress wins, so a run of quick steps costs one write, however many
sub-steps a tool reports. Nothing waits longer than that interval: the heartbeat writes what
is pending.

A step's effects (record fields, what it produced, the artifact) are staged until the step
completes and are written with its completion in one transaction, so a resumed run never
repeats them. Every write renews the run's lease and checks the run still owns the mission;
the heartbeat also renews the lease while a long step is quiet.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from buddy.domain import lifecycle
from buddy.domain.mission import (
    Artifact,
    Change,
    ExecutionStep,
    Mission,
    NewEvent,
    PauseReason,
    Progress,
    Status,
    StepError,
)
from buddy.domain.progress import Clock, MissionProgressTracker, ProgressEvent
from buddy.errors import StorageRejected
from buddy.service.ports import Decide, MissionStore


class MissionCancelled(Exception):
    """Signal: the owner asked to cancel, and the run stopped and recorded it. The delivery
    is acknowledged."""


class MissionPaused(Exception):
    """Signal: the mission paused (its owner asked, or it asks them to lift a limit), and the
    run stopped and recorded it, letting go of its lease. The delivery is acknowledged; a
    resume sends a new one."""


@dataclass
class Effects:
    """What a write carries besides progress and events: record fields, stage outputs (kept
    with the mission, or apart when private) and an artifact."""

    record: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    private: dict[str, Any] = field(default_factory=dict)
    artifact: Artifact | None = None

    def __bool__(self) -> bool:
        return bool(self.record or self.outputs or self.private or self.artifact)

    def merge(self, other: Effects) -> None:
        self.record.update(other.record)
        self.outputs.update(other.outputs)
        self.private.update(other.private)
        self.artifact = other.artifact or self.artifact

    def applied(self, mission: Mission) -> Mission:
        if not (self.record or self.outputs):
            return mission
        outputs = {**mission.record.outputs, **self.outputs}
        return mission.with_record(**self.record, outputs=outputs)


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
    pause_requested: bool = False
    # Pending: what the next write carries. Staged: the running step's effects, pending once
    # the step completes. The heartbeat thread writes too, so both sit under _lock.
    _events: list[NewEvent] = field(default_factory=list)
    _pending: Effects = field(default_factory=Effects)
    _staged: Effects = field(default_factory=Effects)
    _snapshot: Progress | None = None  # the tracker at the last event
    _claimed: bool = False
    _last_write: float = float("-inf")
    _boundary: Progress | None = None
    # Why Firestore refused this run's pending write; the heartbeat then only renews the lease.
    _rejected: str | None = None
    _effects_of: str | None = None  # the step whose effects the next write carries
    # The run's end is owed: its last step completed, or a step failed. Only the write of
    # the end may carry that: the heartbeat writing it alone would leave a mission at its
    # end but running.
    _ending: bool = False
    ended: bool = False  # the run's end (completed, failed or cancelled) is written
    # Where the failing step's tool got to, written with the failure: a retry carries on.
    _checkpoint: Mapping[str, Any] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def resuming(self) -> None:
        """This run carries on where a stopped one left off (its tracker was restored)."""
        self._boundary = self.tracker.snapshot()

    def include(self, **record_fields: Any) -> None:
        """Execution-record fields the running step produced, written with its completion."""
        with self._lock:
            self._staged.record.update(record_fields)

    def produce(self, stage: str, output: Any, private: bool = False) -> None:
        """What a stage produced (memoized for a resumed run), written with its completion."""
        with self._lock:
            (self._staged.private if private else self._staged.outputs)[stage] = output

    def attach(self, artifact: Artifact) -> None:
        with self._lock:
            self._staged.artifact = artifact

    def __call__(self, event: ProgressEvent, step: ExecutionStep) -> None:
        new = NewEvent(event, step.message, step.step_name, step.progress_percent)
        with self._lock:
            if event == "step_progress" and self._events and self._events[-1].type == event:
                self._events[-1] = new  # the latest in-step update wins
            else:
                self._events.append(new)
            self._snapshot = self.tracker.snapshot()
            if event in ("step_completed", "step_failed"):
                if self._staged:
                    self._effects_of = step.step_name
                self._pending.merge(self._staged)
                self._staged = Effects()
            if event == "step_completed" and step.step_index == step.total_steps:
                self._ending = True
                self._flush(terminal=Status.COMPLETED)
            elif event == "step_completed":
                self._boundary = self._snapshot
            elif event == "step_failed":
                self._ending = True
                code = "storage_rejected" if self._rejected else "step_failed"
                self._flush(
                    terminal=Status.FAILED, error=StepError(step.step_name, code, step.message)
                )
            elif event == "step_started" and (
                not self._claimed or self.cancel_requested or self.pause_requested
            ):
                # Claim at once; and a cancel or pause seen earlier stops the run here.
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
                    self.tracker.percent,
                    attempt=attempt,
                )
            )
            self._pending.record["attempt"] = attempt
            if self._due():
                self._flush()

    def fail_unsaved(self, reason: str) -> None:
        """Firestore refused a write of this run as invalid: end the mission failed, saying
        so, without the effects it refused (retrying or redelivering would not help)."""
        with self._lock:
            self._rejected = reason
            self._pending, self._staged = Effects(), Effects()
            self._checkpoint = None  # perhaps what was refused: the failure must be written
            step = self.tracker.current_step
            blamed = self._effects_of or (step.step_name if step else "finalize")
            message = f"Could not save {blamed}'s result: {reason}"
            if step is not None and step.status == "started":
                self.tracker.fail_step(message)  # written as the run's failure
                return
            self._flush(
                terminal=Status.FAILED, error=StepError(blamed, "storage_rejected", message)
            )

    def keep_checkpoint(self, state: Mapping[str, Any]) -> None:
        """What the running step's tool saved, to write with the step's failure, so that a
        retried mission does not do it again (a research's fetched sources)."""
        with self._lock:
            self._checkpoint = state

    def complete(self) -> None:
        """Writes the run's completion when every step had completed before it: a run whose
        write of its end was lost (Firestore too busy), taken over by this one."""
        with self._lock:
            self._flush(terminal=Status.COMPLETED)

    def cancel_in_step(self) -> None:
        """A tool stopped for a cancel: record where the mission got to, then stop."""
        with self._lock:
            self._flush(terminal=Status.CANCELLED)

    def pause_in_step(self, reason: PauseReason, checkpoint: Mapping[str, Any] | None) -> None:
        """The running step stopped for its owner (a pause asked for, or a limit to lift):
        record where it got to and what its tool saved, then let go of the mission."""
        with self._lock:
            self._staged = Effects()  # the step did not complete: it runs again on resume
            self._flush(pause=reason, checkpoint=checkpoint)

    def heartbeat(self) -> None:
        """Writes pending progress once the interval has passed; otherwise renews the lease
        when nothing was written for a third of it."""
        with self._lock:
            if self._ending:
                return  # the run's own write of its end failed: a redelivery writes it
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
            self._apply(
                lambda m: Change(
                    lifecycle.progressed(lifecycle.owned(m, self.run_id), now, self.lease_seconds)
                )
            )

    def _due(self) -> bool:
        return self.clock().timestamp() - self._last_write >= self.min_interval_seconds

    def _flush(
        self,
        terminal: Status | None = None,
        error: StepError | None = None,
        at_boundary: bool = False,
        snapshot: Progress | None = None,
        pause: PauseReason | None = None,
        checkpoint: Mapping[str, Any] | None = None,
    ) -> None:
        # From another thread, the snapshot taken at the last event: the tracker may be
        # halfway through a change. Its updated_at still dates its ETA for clients.
        progress = snapshot or self.tracker.snapshot()
        events, effects = tuple(self._events), self._pending
        if checkpoint is None and terminal == Status.FAILED:
            checkpoint = self._checkpoint
        now, lease, run_id = self.clock(), self.lease_seconds, self.run_id
        boundary = self._boundary

        def decide(found: Mission) -> Change:
            mission = (
                lifecycle.owned(found, run_id)
                if self._claimed
                else lifecycle.claim(found, run_id, now, lease)
            )
            mission = effects.applied(lifecycle.progressed(mission, now, lease))
            stopping = at_boundary and boundary is not None
            if stopping and (mission.cancel_requested or mission.pause_requested):
                # Stop at the boundary: the step that was about to start never ran; the
                # completed step's effects are kept with its completion.
                starting = events[-1] if events and events[-1].type == "step_started" else None
                kept = events[:-1] if starting else events
                assert boundary is not None
                if mission.cancel_requested:
                    ending = lifecycle.cancelled_at_boundary(mission, now, boundary)
                else:
                    at = starting.step_name if starting else None
                    reason = PauseReason("requested", "Paused by its owner", step_name=at)
                    ending = lifecycle.paused(
                        mission.with_record(progress_tracker=boundary), now, reason
                    )
            else:
                kept, mission = events, mission.with_record(progress_tracker=progress)
                if pause is not None:
                    ending = lifecycle.paused(mission, now, pause)
                else:
                    ending = _ending(mission, now, terminal, error)
            return Change(
                ending.mission,
                (*kept, *ending.events),
                artifact=effects.artifact,
                private=dict(effects.private),
                checkpoint=checkpoint,
            )

        written = self._apply(decide)
        self.ended = written.terminal
        self._claimed = True
        self._effects_of = None
        self._events.clear()
        self._pending = Effects()
        if written.status == Status.CANCELLED:
            raise MissionCancelled(self.tracker.mission_id)
        if written.status == Status.PAUSED:
            raise MissionPaused(self.tracker.mission_id)

    def _apply(self, decide: Decide) -> Mission:
        written = self.store.apply(self.tracker.mission_id, decide)
        self.writes += 1
        self._last_write = self.clock().timestamp()
        self.cancel_requested = written.cancel_requested
        self.pause_requested = written.pause_requested
        return written


def _ending(
    mission: Mission, now: datetime, terminal: Status | None, error: StepError | None
) -> Change:
    """The write as it stands, or the end of the run when it ends here."""
    if terminal == Status.COMPLETED:
        return lifecycle.completed(mission, now)
    if terminal == Status.FAILED:
        assert error is not None
        return lifecycle.failed(mission, now, error)
    if terminal == Status.CANCELLED:
        return lifecycle.cancelled_in_step(mission, now)
    return Change(mission)
