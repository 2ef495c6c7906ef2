"""What the service layer needs from the outside world, in the domain's terms."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from buddy.domain.eta import DurationStat
from buddy.domain.mission import Artifact, Change, Event, Mission, NewEvent, Status

Decide = Callable[[Mission], Change]


class MissionStore(Protocol):
    """Missions, their event logs, artifacts and the runs' private stage outputs.

    Errors: MissionNotFound, DependencyUnavailable (not reachable; nothing written),
    StorageRejected (a write refused as invalid), TooManyActiveMissions (see `apply`).
    """

    def create(self, mission: Mission, *events: NewEvent) -> Mission:
        """Stores a new mission with its first events (seq 1, 2, …)."""

    def get(self, mission_id: str) -> Mission | None: ...

    def apply(self, mission_id: str, decide: Decide) -> Mission:
        """Atomically: read the mission, `decide` a change, write it and number its events.

        The commit also keeps the owner's count of active (queued or running) missions, and
        refuses a change over its `active_limit` with TooManyActiveMissions. Whatever
        `decide` raises is raised, and nothing is written. Returns the mission as written
        (or as read, when the change was empty).
        """

    def missions_of(self, owner_uid: str, status: Status | None, limit: int) -> list[Mission]:
        """The owner's missions, newest first."""

    def stalled(self, now: datetime) -> list[Mission]:
        """Running missions whose lease ran out before `now` (a page of them)."""

    def queued_before(self, before: datetime) -> list[Mission]:
        """Queued missions waiting since before `before` (a page of them)."""

    def expired_pauses(self, now: datetime) -> list[Mission]:
        """Paused missions whose pause expired before `now` (a page of them)."""

    def events(self, mission_id: str, after_seq: int) -> list[Event]: ...

    def artifact(self, artifact_id: str) -> Artifact | None: ...

    def private_outputs(self, mission_id: str) -> Mapping[str, Any]:
        """What Change.private stored for the mission, by stage name."""

    def checkpoint(self, mission_id: str) -> Mapping[str, Any] | None:
        """What Change.checkpoint last stored for the mission (a paused tool's state)."""


class ExecutionPublisher(Protocol):
    def publish_execution(self, mission_id: str) -> None:
        """Publishes one execution message; raises DependencyUnavailable when it can't."""


class DurationStatsStore(Protocol):
    """How long steps took in earlier missions (for the learned ETA)."""

    def load(self) -> dict[str, DurationStat]: ...

    def record(self, samples: Mapping[str, float]) -> None:
        """Folds one finished mission's step durations into the statistics."""


class TokenVerifier(Protocol):
    def verify(self, token: str) -> str:
        """The uid of a valid ID token; raises Unauthenticated or DependencyUnavailable."""
