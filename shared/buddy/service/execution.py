"""The stage worker's use case: run, or resume, a mission's stages.

A run claims the mission under a lease (see progress_writer) and runs the stages of
`stages.STAGES` in order. If its worker dies, a later delivery whose lease check finds the
lease expired takes over and resumes at the first stage not completed, with what the
completed stages produced read back from their memoized outputs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from buddy.domain.eta import Durations, LearnedEta, samples_of
from buddy.domain.intent import IntentClassifier
from buddy.domain.lifecycle import CLAIMABLE, MissionBusy, NotClaimable
from buddy.domain.mission import Mission, PauseReason, Status
from buddy.domain.progress import Clock, MissionProgressTracker
from buddy.errors import DependencyUnavailable, StorageRejected
from buddy.service.ports import DurationStatsStore, MissionStore, ToolStatsStore
from buddy.service.progress_writer import MissionCancelled, MissionPaused, ProgressWriter
from buddy.service.stages import (
    SELECTION,
    STAGE_NAMES,
    STAGES,
    StepContext,
    StepFailed,
    StepPaused,
    clip,
)
from buddy.tools import ToolCancelled, ToolPaused, ToolRegistry

log = logging.getLogger(__name__)

__all__ = ["MissionBusy", "MissionRunner", "Outcome", "RunSettings"]


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    SKIPPED = "skipped"  # not ours to run: missing, finished, or taken by another delivery


@dataclass(frozen=True)
class RunSettings:
    progress_min_interval_seconds: float = 1.0
    lease_seconds: float = 60.0
    tool_max_attempts: int = 3
    retry_backoff_seconds: float = 1.0
    # Test hook for fault injection: pause this long at the start of every step.
    step_delay_seconds: float = 0.0
    # How long a mission waits for its owner to lift a limit before it fails.
    pause_timeout_seconds: float = 72 * 3600


Heartbeat = Callable[[ProgressWriter], contextlib.AbstractContextManager[None]]


@dataclass
class MissionRunner:
    store: MissionStore
    tools: ToolRegistry
    classifier: IntentClassifier
    clock: Clock
    stats: DurationStatsStore
    settings: RunSettings = RunSettings()
    ratings: ToolStatsStore | None = None  # what owners' ratings teach tool selection
    sleep: Callable[[float], None] = time.sleep
    # What renews the lease and writes pending progress while a step runs: a thread by
    # default; tests drive it by hand.
    heartbeat: Heartbeat | None = field(default=None)

    def run(self, mission_id: str) -> Outcome:
        """Runs the mission, or resumes it. Raises MissionBusy while another run holds it."""
        mission = self.store.get(mission_id)
        if mission is None:
            log.warning("execution message for a missing mission", extra={"mission_id": mission_id})
            return Outcome.SKIPPED
        if mission.status == Status.RUNNING and mission.lease_live(self.clock()):
            mission = self._outlive_lease(mission)
        taking_over = mission.status == Status.RUNNING
        if not taking_over and mission.status not in CLAIMABLE:
            log.info(
                "mission is not queued, dropping delivery",
                extra={"mission_id": mission_id, "status": mission.status.value},
            )
            return Outcome.SKIPPED
        # A run taken over from a dead worker, or one resumed after a pause or a retry.
        resuming = taking_over or mission.progress is not None
        history = self.stats.load()
        memo = self._memo(mission) if resuming else {}
        tracker = self._tracker(mission, history, memo)
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
            with (self.heartbeat or self._heartbeat)(writer):
                try:
                    outcome = self._run_stages(mission, memo, history, tracker, writer)
                except StorageRejected as e:
                    reason = {"mission_id": mission_id, "reason": str(e)}
                    log.error("a write was refused", extra=reason)
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
        except MissionPaused:
            log.info("mission paused", extra={"mission_id": mission_id})
            return Outcome.PAUSED
        if outcome == Outcome.COMPLETED:
            self._record_durations(tracker, memo)
        log.info(
            "mission finished",
            extra={"mission_id": mission_id, "outcome": outcome.value, "writes": writer.writes},
        )
        return outcome

    def _outlive_lease(self, mission: Mission) -> Mission:
        """Watches another run's lease: a live run renews it (MissionBusy), a dead one lets it
        run out within a lease period, and then this delivery takes over at once."""
        lease = mission.lease_expires_at
        assert lease is not None
        while (wait := (lease - self.clock()).total_seconds()) > 0:
            self.sleep(min(wait + 0.05, 1.0))
            fresh = self.store.get(mission.mission_id)
            if fresh is None or fresh.status != Status.RUNNING:
                return fresh or mission
            if fresh.lease_expires_at != lease:
                raise MissionBusy(mission.mission_id)
            mission = fresh
        return mission

    def _memo(self, mission: Mission) -> dict[str, Any]:
        """What the completed stages of a stopped run produced: one lookup for all of them."""
        progress = mission.progress
        done = progress.done if progress else frozenset()
        memo = {
            name: mission.record.outputs[name] for name in done if name in mission.record.outputs
        }
        if any(stage.private and stage.name in done for stage in STAGES):
            private = self.store.private_outputs(mission.mission_id)
            memo.update({name: private[name] for name in done if name in private})
        return memo

    def _tracker(
        self, mission: Mission, history: Durations, memo: dict[str, Any]
    ) -> MissionProgressTracker:
        tool = (memo.get(SELECTION) or {}).get("tool")
        estimator = LearnedEta(history, STAGE_NAMES, tool)
        if mission.progress is not None:
            return MissionProgressTracker.resume(mission.progress, STAGES, self.clock, estimator)
        return MissionProgressTracker(mission.mission_id, STAGES, self.clock, estimator)

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
        self,
        mission: Mission,
        memo: dict[str, Any],
        history: Durations,
        tracker: MissionProgressTracker,
        writer: ProgressWriter,
    ) -> Outcome:
        if mission.status == Status.RUNNING:
            resumed = " (resumed after the previous worker stopped)"
        else:
            resumed = " (resumed)" if mission.progress is not None else ""
        context: StepContext | None = None
        try:
            for stage in STAGES:
                if stage.name in tracker.done:
                    continue
                tool = (memo.get(SELECTION) or {}).get("tool", "the tool")
                tracker.start_stage(stage, stage.start_message.format(tool=tool) + resumed)
                resumed = ""
                if self.settings.step_delay_seconds:
                    self.sleep(self.settings.step_delay_seconds)
                context = StepContext(mission, stage, memo, self, tracker, writer, history)
                if stage.private and mission.progress is not None:
                    context.checkpoint = self.store.checkpoint(mission.mission_id)
                tracker.complete_step(clip(stage.action(context)))
            if not writer.ended:
                # Every step had completed before this run (a run whose write of its end
                # failed once its last step was recorded): only the end is left to write.
                writer.complete()
        except StepFailed as e:
            if context is not None and context.saved is not None:
                writer.keep_checkpoint(context.saved)
            tracker.fail_step(clip(str(e)))
            return Outcome.FAILED
        except StepPaused as e:
            writer.pause_in_step(e.reason, None)  # raises MissionPaused once recorded
        except ToolPaused as e:
            assert context is not None
            writer.pause_in_step(self._pause_reason(context, e), context.saved)
        except ToolCancelled:
            writer.cancel_in_step()  # raises MissionCancelled once recorded
        return Outcome.COMPLETED

    def _pause_reason(self, context: StepContext, paused: ToolPaused) -> PauseReason:
        """Why the tool stopped: its owner's pause, or a host it needs allowed."""
        step = context.stage.name
        if paused.host is None:
            return PauseReason("requested", "Paused by its owner", step_name=step)
        if len(paused.hosts) > 1:
            hosts = ", ".join(paused.hosts)
            message = f"{hosts} are outside the allowed domains — allow them to continue"
        else:
            message = f"{paused.host} is outside the allowed domains — allow it to continue"
        failure = context.over_limit("out_of_scope", message, host=paused.host, hosts=paused.hosts)
        assert isinstance(failure, StepPaused)  # a tool asks only for missions that ask
        return failure.reason

    def _record_durations(self, tracker: MissionProgressTracker, memo: dict[str, Any]) -> None:
        """Folds the run's step durations into the ETA statistics, after its terminal write:
        a worker that dies before it loses one sample, but a resumed run never counts the
        same mission twice."""
        tool = (memo.get(SELECTION) or {}).get("tool")
        try:
            self.stats.record(samples_of(tracker.completed_steps, tool))
        except DependencyUnavailable:
            # Statistics only sharpen future ETAs; never fail a finished mission for them.
            log.warning("could not record step durations", extra={"tool": tool})
