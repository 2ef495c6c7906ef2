"""What the service layer needs from the outside world, and the errors it raises."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from buddy.domain.eta import DurationStat
from buddy.domain.lifecycle import Change, NewEvent

Decide = Callable[[dict[str, Any]], Change]


class ServiceError(Exception):
    """Base of the errors the service layer reports to entry points."""


class ValidationFailed(ServiceError):
    """The request is well-formed but its content is not acceptable."""


class TooManyActiveMissions(ServiceError):
    """The owner already has as many queued or running missions as allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {limit} missions queued or running; "
            "wait for one to finish or cancel one"
        )


class StorageRejected(ServiceError):
    """Firestore refused a write as invalid (e.g. a document over 1 MiB): retrying won't help."""


class DependencyUnavailable(ServiceError):
    """Firestore, Pub/Sub or Auth could not be reached; nothing was changed."""


class MissionStore(Protocol):
    def create(self, doc: dict[str, Any], event: NewEvent) -> dict[str, Any]:
        """Stores a new mission with its first event (seq 1)."""

    def get(self, mission_id: str) -> dict[str, Any] | None: ...

    def apply(self, mission_id: str, decide: Decide) -> dict[str, Any]:
        """Atomically: read the mission, `decide` a change, write it and number its events.

        In the same commit it keeps the owner's count of active (queued or running) missions,
        and refuses a change over its `active_limit` with TooManyActiveMissions.
        Raises MissionNotFound, StorageRejected, or whatever `decide` raises (then nothing is
        written). Returns the mission as written.
        """

    def list(self, owner_uid: str, status: str | None, limit: int) -> list[dict[str, Any]]: ...

    def in_flight_before(self, status: str, field: str, before: datetime) -> list[dict[str, Any]]:
        """Missions in `status` whose timestamp `field` is earlier than `before` (a page)."""

    def events(self, mission_id: str, after_seq: int) -> list[dict[str, Any]]: ...

    def get_document(self, path: str) -> dict[str, Any] | None:
        """Any document by path, e.g. one written through Change.documents."""

    def get_artifact(self, artifact_id: str) -> dict[str, Any] | None: ...


class ExecutionPublisher(Protocol):
    def publish_execution(self, mission_id: str) -> None:
        """Publishes one execution message; raises DependencyUnavailable when it can't."""


class DurationStatsStore(Protocol):
    """How long steps took in earlier missions (for the learned ETA)."""

    def load(self) -> dict[str, DurationStat]: ...

    def record(self, samples: Mapping[str, float]) -> None:
        """Folds one finished mission's step durations into the statistics."""
