"""Hand-written fakes for the service ports: they keep domain objects, not a storage encoding."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, is_dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from buddy.domain import lifecycle, stats
from buddy.domain.eta import DurationStat, updated
from buddy.domain.mission import (
    ACTIVE,
    Artifact,
    Change,
    Event,
    Mission,
    NewEvent,
    Status,
    iso,
)
from buddy.domain.recipe import BUILTIN_IDS, Recipe, Usage
from buddy.domain.schedule import Schedule, Tick
from buddy.errors import (
    DependencyUnavailable,
    MissionNotFound,
    RecipeNotFound,
    ScheduleNotFound,
    StorageRejected,
    TooManyActiveMissions,
    TooManySchedules,
    Unauthenticated,
)
from buddy.service.ports import Decide, Fired, MissionFor
from buddy.tools import ToolContext, ToolInputs, ToolResult

START = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeMissionStore:
    """MissionStore in memory, with the Firestore adapter's `apply` semantics: atomic changes,
    gapless events, the owner's active-mission limit."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.missions: dict[str, Mission] = {}
        self.event_log: dict[str, list[Event]] = {}
        self.artifacts: dict[str, Artifact] = {}
        self.private: dict[str, dict[str, Any]] = {}
        self.checkpoints: dict[str, Mapping[str, Any]] = {}
        self.apply_calls = 0
        self.written: list[Mission] = []  # the mission as each apply that wrote left it
        self.before_apply: Callable[[], None] = lambda: None  # a concurrent writer's turn
        # Firestore refusing a write as invalid (InvalidArgument), whatever its size.
        self.refuse_when: Callable[[Change], bool] = lambda change: False
        self.ended: list[Callable[[Mission], None]] = []  # told when a write ends a mission
        # The aggregates every write keeps (domain.stats), by key, as the adapter sums them.
        self.aggregates: dict[stats.Key, dict[str, float]] = {}

    def _add(self, before: Mission | None, after: Mission | None) -> None:
        for key, counters in stats.delta(before, after).items():
            kept = self.aggregates.setdefault(key, {})
            for name, amount in counters.items():
                kept[name] = kept.get(name, 0) + amount

    def _event(self, mission: Mission, seq: int, event: NewEvent) -> Event:
        return Event(
            seq=seq,
            type=event.type,
            message=event.message,
            timestamp=iso(self.clock()),
            owner_uid=mission.owner_uid,
            step_name=event.step_name,
            progress_percent=event.progress_percent,
            attempt=event.attempt,
        )

    def create(self, mission: Mission, *events: NewEvent) -> Mission:
        stored = replace(mission, event_seq=len(events))
        self.missions[mission.mission_id] = stored
        log = [self._event(stored, seq, event) for seq, event in enumerate(events, 1)]
        self.event_log[mission.mission_id] = log
        self._add(None, stored)
        return stored

    def get(self, mission_id: str) -> Mission | None:
        return self.missions.get(mission_id)

    def apply(self, mission_id: str, decide: Decide) -> Mission:
        self.apply_calls += 1
        self.before_apply()
        before = self.missions.get(mission_id)
        if before is None:
            raise MissionNotFound(mission_id)
        change = decide(before)
        if change.mission is None:
            return before
        limit = change.active_limit
        entering = lifecycle.active_delta(before, change) > 0 and limit is not None
        if entering and self.active_count(before.owner_uid) >= limit:
            raise TooManyActiveMissions(limit)
        if self.refuse_when(change):
            raise StorageRejected("Firestore refused the write: invalid argument")
        written_data = [change.private, change.checkpoint, change.mission, change.artifact]
        if any(_nested_array(asdict(d) if is_dataclass(d) else d) for d in written_data):
            raise StorageRejected("Firestore refused the write: an array value in an array value")
        log = self.event_log[mission_id]
        seq = before.event_seq
        if change.retract_seq is not None and change.retract_seq == seq:
            if log and log[-1].seq == seq:
                log.pop()
            seq -= 1
        for event in change.events:
            seq += 1
            log.append(self._event(before, seq, event))
        if change.artifact is not None:
            self.artifacts[change.artifact.artifact_id] = change.artifact
        if change.private:
            self.private.setdefault(mission_id, {}).update(change.private)
        if change.checkpoint is not None:
            self.checkpoints[mission_id] = change.checkpoint
        written = replace(change.mission, event_seq=seq)
        self.missions[mission_id] = written
        self.written.append(written)
        self._add(before, written)
        if written.terminal and not before.terminal:
            for listener in self.ended:
                listener(written)
        return written

    def active_count(self, owner_uid: str) -> int:
        """The owner's queued and running missions (the adapter keeps this as a counter)."""
        return sum(
            1 for m in self.missions.values() if m.owner_uid == owner_uid and m.status in ACTIVE
        )

    def missions_of(
        self, owner_uid: str, status: Status | None, limit: int, schedule_id: str | None = None
    ) -> list[Mission]:
        mine = [
            m
            for m in self.missions.values()
            if m.owner_uid == owner_uid
            and (status is None or m.status == status)
            and (schedule_id is None or m.schedule_id == schedule_id)
        ]
        return sorted(mine, key=lambda m: m.created_at, reverse=True)[:limit]

    def stalled(self, now: datetime) -> list[Mission]:
        found = [
            m for m in self.missions.values() if lifecycle.stalled(m, now) and m.lease_expires_at
        ]
        return sorted(found, key=lambda m: m.lease_expires_at or now)

    def queued_before(self, before: datetime) -> list[Mission]:
        found = [
            m
            for m in self.missions.values()
            if m.status == Status.QUEUED and m.queued_at is not None and m.queued_at < before
        ]
        return sorted(found, key=lambda m: m.queued_at or before)

    def expired_pauses(self, now: datetime) -> list[Mission]:
        return [
            m
            for m in self.missions.values()
            if m.status == Status.PAUSED
            and m.pause_reason is not None
            and m.pause_reason.expires_at is not None
            and m.pause_reason.expires_at < now
        ]

    def checkpoint(self, mission_id: str) -> Mapping[str, Any] | None:
        return self.checkpoints.get(mission_id)

    def events(self, mission_id: str, after_seq: int) -> list[Event]:
        return [e for e in self.event_log.get(mission_id, []) if e.seq > after_seq][:1000]

    def artifact(self, artifact_id: str) -> Artifact | None:
        return self.artifacts.get(artifact_id)

    def private_outputs(self, mission_id: str) -> Mapping[str, Any]:
        return dict(self.private.get(mission_id, {}))

    # Test helpers, not part of the port.
    def event_types(self, mission_id: str) -> list[str]:
        return [e.type for e in self.event_log[mission_id]]

    def written_percents(self) -> list[int]:
        return [m.percent for m in self.written if m.progress is not None]

    def put(self, mission: Mission) -> Mission:
        """Sets a mission's state outright, as another process might have left it."""
        self._add(self.missions.get(mission.mission_id), mission)
        self.missions[mission.mission_id] = mission
        return mission


class FakeToolStats:
    """ToolStatsStore over the aggregates a FakeMissionStore keeps."""

    def __init__(self, missions: FakeMissionStore) -> None:
        self.missions = missions
        self.down = False  # the statistics unreachable, as Firestore can be

    def ratings(self, tool: str, intent: str) -> tuple[int, float]:
        if self.down:
            raise DependencyUnavailable("Firestore is unavailable")
        counters = self.missions.aggregates.get(("tool", tool, intent), {})
        return round(counters.get("ratings", 0)), counters.get("rating_sum", 0.0)

    def counters(self, owner_uid: str | None) -> dict[tuple[str, str], dict[str, float]]:
        found = {}
        for key, counters in self.missions.aggregates.items():
            if owner_uid is None and key[0] == "tool":
                found[(key[1], key[2])] = dict(counters)
            elif key[0] == "owner_tool" and key[1] == owner_uid:
                found[(key[2], key[3])] = dict(counters)
        return found


class FakeRecipeStore:
    """RecipeStore in memory: every version of every recipe; usage from the aggregates."""

    def __init__(self, missions: FakeMissionStore) -> None:
        self.missions = missions
        self.versions: dict[str, dict[int, Recipe]] = {}

    def create(self, recipe: Recipe) -> Recipe:
        self.versions[recipe.recipe_id] = {recipe.version: recipe}
        return recipe

    def get(self, recipe_id: str, version: int | None = None) -> Recipe | None:
        if recipe_id in BUILTIN_IDS:
            builtin = BUILTIN_IDS[recipe_id]
            return builtin if version in {None, builtin.version} else None
        versions = self.versions.get(recipe_id)
        if not versions:
            return None
        latest = versions[max(versions)]
        found = versions.get(version or latest.version)
        if found is None:
            return None
        return replace(found, latest_version=latest.version, updated_at=latest.updated_at)

    def recipes_of(self, owner_uid: str) -> list[Recipe]:
        latest = [self.get(recipe_id) for recipe_id in self.versions]
        owned = [r for r in latest if r is not None and r.owner_uid == owner_uid]
        return sorted(owned, key=lambda r: r.updated_at, reverse=True)

    def add_version(self, recipe_id: str, make: Callable[[Recipe], Recipe]) -> Recipe:
        latest = self.get(recipe_id)
        if latest is None:
            raise RecipeNotFound(recipe_id)
        after = make(latest)
        self.versions[recipe_id][after.version] = after
        return after

    def delete(self, recipe_id: str) -> None:
        self.versions.pop(recipe_id, None)

    def usage(self, recipe_ids: list[str]) -> dict[str, Usage]:
        found = {}
        for recipe_id in recipe_ids:
            counters = self.missions.aggregates.get(("recipe", recipe_id))
            if counters:
                found[recipe_id] = Usage(
                    round(counters.get("uses", 0)),
                    round(counters.get("completed", 0)),
                    round(counters.get("failed", 0)),
                )
        return found


class FakeScheduleStore:
    """ScheduleStore in memory, creating its fires' missions in a FakeMissionStore."""

    def __init__(self, missions: FakeMissionStore) -> None:
        self.missions = missions
        self.schedules: dict[str, Schedule] = {}

    def create(self, schedule: Schedule, limit: int) -> Schedule:
        if len(self.schedules_of(schedule.owner_uid)) >= limit:
            raise TooManySchedules(limit)
        self.schedules[schedule.schedule_id] = schedule
        return schedule

    def get(self, schedule_id: str) -> Schedule | None:
        return self.schedules.get(schedule_id)

    def schedules_of(self, owner_uid: str) -> list[Schedule]:
        owned = [s for s in self.schedules.values() if s.owner_uid == owner_uid]
        return sorted(owned, key=lambda s: s.created_at, reverse=True)

    def update(self, schedule_id: str, change: Callable[[Schedule], Schedule]) -> Schedule:
        schedule = self.schedules.get(schedule_id)
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        self.schedules[schedule_id] = written = change(schedule)
        return written

    def delete(self, schedule_id: str) -> None:
        self.schedules.pop(schedule_id, None)

    def due(self, now: datetime, limit: int) -> list[Schedule]:
        due = [
            s
            for s in self.schedules.values()
            if not s.paused
            and (
                (s.next_fire_at is not None and s.next_fire_at <= now)
                or s.buffered_fire_at is not None
            )
        ]
        return sorted(due, key=lambda s: s.next_fire_at or now)[:limit]

    def fire(
        self, schedule_id: str, decide: Callable[[Schedule], Tick], mission_for: MissionFor
    ) -> Fired:
        schedule = self.schedules.get(schedule_id)
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        tick = decide(schedule)
        self.schedules[schedule_id] = tick.schedule
        if tick.fire_at is None:
            return Fired(tick.schedule)
        mission, events = mission_for(tick.schedule, tick.fire_at)
        if mission.mission_id in self.missions.missions:
            return Fired(tick.schedule)  # created by an earlier fire of the same time
        created = self.missions.create(mission, *events)
        return Fired(tick.schedule, created, self.missions.active_count(mission.owner_uid))


def _nested_array(value: Any, in_array: bool = False) -> bool:
    """Firestore stores no list directly inside a list (a list of maps is fine)."""
    if isinstance(value, list | tuple):
        return in_array or any(_nested_array(item, True) for item in value)
    if isinstance(value, Mapping):
        return any(_nested_array(item) for item in value.values())
    return False


class FakePublisher:
    """Records published mission ids; `down = True` makes it fail like Pub/Sub would."""

    def __init__(self) -> None:
        self.published: list[str] = []
        self.down = False
        # What happens while the publish is in flight (e.g. a worker gets the message).
        self.during_publish: Callable[[str], None] = lambda mission_id: None

    def publish_execution(self, mission_id: str) -> None:
        self.during_publish(mission_id)
        if self.down:
            raise DependencyUnavailable("Pub/Sub is unavailable; the mission was not queued")
        self.published.append(mission_id)


class FakeVerifier:
    """ID tokens of the form `token-<uid>`; anything else is refused."""

    def verify(self, token: str) -> str:
        if not token.startswith("token-"):
            raise Unauthenticated("The ID token is invalid, expired or revoked; sign in again")
        return token.removeprefix("token-")


class FakeTool:
    """A configurable tool: its cost, its sub-steps and hooks run inside `run`."""

    input_model = ToolInputs
    unavailable_reason: str | None = None
    isolated = False

    def __init__(
        self,
        name: str = "fake",
        intents: frozenset[str] = frozenset({"calculate"}),
        estimated_cost_usd: float = 0.0,
        substeps: int = 0,
        on_run: Any = None,
        on_substep: Any = None,
        result: ToolResult | None = None,
        time_budget_seconds: float = 60.0,
    ) -> None:
        self.name = name
        self.description = "A fake tool for tests"
        self.intents = intents
        self.estimated_cost_usd = estimated_cost_usd
        self.substeps = substeps
        self.on_run = on_run or (lambda: None)
        self.on_substep = on_substep or (lambda: None)
        self.result = result
        self.time_budget_seconds = time_budget_seconds

    def estimate_cost(self, inputs: ToolInputs) -> float:
        return self.estimated_cost_usd

    def run(self, context: ToolContext) -> ToolResult:
        self.on_run()
        for done in range(1, self.substeps + 1):
            self.on_substep()
            context.check_cancelled()
            context.report(done, self.substeps, "items", f"item {done}/{self.substeps}")
        if self.result is not None:
            return self.result
        return ToolResult(
            title="Fake result",
            summary="fake done",
            content="fake content",
            cost_usd=self.estimated_cost_usd,
        )


class FakeDurationStats:
    """Step-duration statistics in a dict, updated like the Firestore shards."""

    def __init__(self) -> None:
        self.durations: dict[str, DurationStat] = {}
        self.recorded: list[dict[str, float]] = []

    def load(self) -> dict[str, DurationStat]:
        return dict(self.durations)

    def record(self, samples: Mapping[str, float]) -> None:
        self.recorded.append(dict(samples))
        for key, seconds in samples.items():
            self.durations[key] = updated(self.durations.get(key), seconds)


def seed_mission(
    store: FakeMissionStore,
    *,
    status: str = "queued",
    mission_id: str = "m_test",
    owner_uid: str = "alice",
    objective: str = "calculate 3+4",
    budget_usd: float = 1.0,
    tool: str | None = None,
    inputs: dict[str, Any] | None = None,
) -> str:
    """Stores a mission and walks it to `status` the way the API would."""
    now = store.clock()
    mission = lifecycle.proposed(
        mission_id, owner_uid, objective, (), budget_usd, tool, inputs or {}, now
    )
    store.create(mission, NewEvent("mission_created", "Mission proposed"))
    if status in {"approved", "queued"}:
        store.apply(mission_id, lambda m: lifecycle.approve(m, now))
    if status == "queued":
        store.apply(mission_id, lambda m: lifecycle.queue(m, now, max_active=100))
    if status not in {"proposed", "approved", "queued"}:
        store.put(replace(store.missions[mission_id], status=Status(status)))
    store.apply_calls, store.written = 0, []
    return mission_id
