"""No mission stays in flight forever: dead letters end them, a sweeper revives or ends them.

The sweeper finds running missions whose lease expired (their worker stopped heart-beating)
and queued missions that never started, and republishes them so a worker resumes them — or,
after `max_recoveries` tries, or when their owner asked to cancel, ends them. It also fails
missions whose ask (raise the budget, allow a host) nobody answered before it expired. Every
decision is re-checked inside a transaction, so a sweep racing a worker, or another sweep,
changes nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from buddy.domain import lifecycle
from buddy.domain.mission import Change, Mission, Status
from buddy.domain.progress import Clock
from buddy.errors import DependencyUnavailable, MissionNotFound
from buddy.service.ports import ExecutionPublisher, MissionStore

log = logging.getLogger(__name__)


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

        def decide(mission: Mission) -> Change:
            if mission.terminal or (mission.status == Status.RUNNING and mission.lease_live(now)):
                return Change()  # finished, or a live run has it: this was a duplicate
            if mission.status not in (Status.QUEUED, Status.RUNNING):
                return Change()  # never queued (an undone execute's message): nothing to end
            return lifecycle.give_up(
                mission,
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
        deadline = now - timedelta(seconds=self.queue_timeout_seconds)
        found = self.store.stalled(now) + self.store.queued_before(deadline)
        done = {"republished": 0, "failed": 0, "cancelled": 0, "skipped": 0, "expired": 0}
        for mission in found:
            action = self._recover(mission.mission_id, now)
            done[action] += 1
            log.info("swept a mission", extra={"mission_id": mission.mission_id, "action": action})
        for mission in self.store.expired_pauses(now):
            action = self._expire(mission.mission_id, now)
            done[action] += 1
            log.info("swept a mission", extra={"mission_id": mission.mission_id, "action": action})
        return done

    def restarted(self, booted: datetime) -> dict[str, int]:
        """The local stack started again at `booted`: no worker outlived the stop and the
        Pub/Sub emulator forgot its messages, so every running or queued mission untouched
        since then is sent again now (a recovery each, or ended as a sweep would) rather than
        once its lease or queue wait runs out. One written since is in a live run's hands."""
        now = self.clock()
        later = now + timedelta(days=1)  # past every lease and queue wait
        done = {"republished": 0, "failed": 0, "cancelled": 0, "skipped": 0}
        for mission in self.store.stalled(later) + self.store.queued_before(later):
            action = self._recover(mission.mission_id, now, orphaned_before=booted)
            done[action] += 1
            log.info("resumed after a restart", extra={"mission_id": mission.mission_id})
        return done

    def _expire(self, mission_id: str, now: datetime) -> str:
        """Fails a mission whose pause expired, unless its owner answered meanwhile."""

        def decide(mission: Mission) -> Change:
            reason = mission.pause_reason
            expires = reason.expires_at if reason else None
            if mission.status != Status.PAUSED or expires is None or expires > now:
                return Change()
            return lifecycle.expire_pause(mission, now)

        try:
            written = self.store.apply(mission_id, decide)
        except (MissionNotFound, DependencyUnavailable) as e:
            log.warning(
                "could not expire a pause", extra={"mission_id": mission_id, "reason": str(e)}
            )
            return "skipped"
        return "expired" if written.status == Status.FAILED else "skipped"

    def _stuck(self, mission: Mission, now: datetime) -> bool:
        deadline = now - timedelta(seconds=self.queue_timeout_seconds)
        return mission.status == Status.QUEUED and (mission.queued_at or now) <= deadline

    def _recover(
        self, mission_id: str, now: datetime, orphaned_before: datetime | None = None
    ) -> str:
        """Sends a stalled or stuck mission again, or ends it. `orphaned_before`: every run
        before then is known gone (the local stack restarted), whatever its lease says."""
        outcome = "skipped"
        orphaned = orphaned_before is not None

        def decide(mission: Mission) -> Change:
            nonlocal outcome
            if orphaned_before is not None:
                idle = mission.updated_at < orphaned_before
                stalled = idle and mission.status == Status.RUNNING
                stuck = idle and mission.status == Status.QUEUED
            else:
                stalled, stuck = lifecycle.stalled(mission, now), self._stuck(mission, now)
            if not (stalled or stuck):
                outcome = "skipped"  # a worker got to it meanwhile
                return Change()
            if mission.cancel_requested:
                outcome = "cancelled"
                return lifecycle.cancel_stalled(mission, now)
            recoveries = mission.record.recoveries
            if recoveries >= self.max_recoveries:
                outcome = "failed"
                what = "its worker stopped" if stalled else "no worker picked it up"
                message = f"Stalled: {what}, and {recoveries} recoveries did not help"
                return lifecycle.give_up(mission, now, "stalled", message)
            outcome = "republished"
            return lifecycle.recovered(mission, now, orphaned)

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
