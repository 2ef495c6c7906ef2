"""What the service layer needs from the outside world, in the domain's terms."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from buddy.domain.eta import DurationStat
from buddy.domain.mission import Artifact, Change, Event, Mission, NewEvent, Status

if TYPE_CHECKING:  # the cron parser stays out of processes that never fire a schedule
    from buddy.domain.recipe import Recipe, Usage
    from buddy.domain.schedule import Schedule, Tick
    from buddy.domain.stats import Counters

Decide = Callable[[Mission], Change]
# A fire's mission (already approved and queued) and its first events.
MissionFor: TypeAlias = "Callable[[Schedule, datetime], tuple[Mission, tuple[NewEvent, ...]]]"


@dataclass(frozen=True)
class Fired:
    """What `ScheduleStore.fire` wrote: the schedule, and the mission it created (with its
    owner's count of active missions once it was added), if the tick fired."""

    schedule: Schedule
    mission: Mission | None = None
    active_missions: int = 0


class MissionStore(Protocol):
    """Missions, their event logs, artifacts and the runs' private stage outputs.

    Errors: MissionNotFound, DependencyUnavailable (not reachable; nothing written),
    StorageRejected (a write refused as invalid), TooManyActiveMissions (see `apply`).
    """

    # Told of each write that ends a mission (after it committed), whoever wrote it.
    ended: list[Callable[[Mission], None]]

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

    def missions_of(
        self, owner_uid: str, status: Status | None, limit: int, schedule_id: str | None = None
    ) -> list[Mission]:
        """The owner's missions, newest first (of one schedule, if given)."""

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


class ScheduleStore(Protocol):
    """Schedules, and the missions their fires create.

    Errors: ScheduleNotFound, DependencyUnavailable, TooManySchedules (see `create`).
    """

    def create(self, schedule: Schedule, limit: int) -> Schedule:
        """Stores a new schedule while its owner has fewer than `limit` of them."""

    def get(self, schedule_id: str) -> Schedule | None: ...

    def schedules_of(self, owner_uid: str) -> list[Schedule]:
        """The owner's schedules, newest first."""

    def update(self, schedule_id: str, change: Callable[[Schedule], Schedule]) -> Schedule:
        """Atomically: read the schedule, change it, write it (nothing if it is unchanged)."""

    def delete(self, schedule_id: str) -> None: ...

    def due(self, now: datetime, limit: int) -> list[Schedule]:
        """Unpaused schedules whose next fire is at or before `now`, and those holding a
        buffered fire; at most `limit`, the most overdue first. Reads only those."""

    def fire(
        self, schedule_id: str, decide: Callable[[Schedule], Tick], mission_for: MissionFor
    ) -> Fired:
        """Atomically: read the schedule, `decide` the tick, and write the schedule as the
        tick leaves it together with the fire's mission (created once: a racing tick finds
        the schedule moved on and decides nothing). The owner's active count includes it."""


class RecipeStore(Protocol):
    """Users' recipes, their immutable versions, and usage counts (built-ins' too).

    Errors: RecipeNotFound (a missing recipe where one must exist), DependencyUnavailable.
    """

    def create(self, recipe: Recipe) -> Recipe:
        """Stores a new recipe as its version 1."""

    def get(self, recipe_id: str, version: int | None = None) -> Recipe | None:
        """The recipe as its latest version has it, or as version `version` had it."""

    def recipes_of(self, owner_uid: str) -> list[Recipe]:
        """The owner's recipes (latest versions), newest first."""

    def add_version(self, recipe_id: str, make: Callable[[Recipe], Recipe]) -> Recipe:
        """Atomically: read the latest version, `make` the next one, store it (earlier
        versions stay as they were)."""

    def delete(self, recipe_id: str) -> None: ...

    def usage(self, recipe_ids: list[str]) -> dict[str, Usage]:
        """Missions made from each recipe, and how many completed and failed."""


class ToolStatsStore(Protocol):
    """The per-tool aggregates that mission writes keep (see domain.stats)."""

    def ratings(self, tool: str, intent: str) -> tuple[int, float]:
        """Everyone's ratings of missions that ran `tool` for `intent`: how many, their sum."""

    def counters(self, owner_uid: str | None) -> dict[tuple[str, str], Counters]:
        """Counters by (tool, intent): of the owner's missions, or of everyone's (None)."""
