"""Hand-written fakes for the service ports, plus helpers to seed missions."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from buddy.domain import lifecycle
from buddy.domain.eta import DurationStat, updated
from buddy.domain.lifecycle import (
    ACTIVE,
    Change,
    MissionNotFound,
    NewEvent,
    active_delta,
    event_record,
    with_updates,
)
from buddy.domain.sizes import MAX_DOCUMENT_BYTES, document_size
from buddy.service.ports import (
    Decide,
    DependencyUnavailable,
    StorageRejected,
    TooManyActiveMissions,
)
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
    """MissionStore on plain dicts, with the Firestore adapter's `apply` semantics."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.missions: dict[str, dict[str, Any]] = {}
        self.event_log: dict[str, list[dict[str, Any]]] = {}
        self.documents: dict[str, dict[str, Any]] = {}  # other documents, by path
        self.apply_calls = 0
        self.writes: list[dict[str, Any]] = []  # the updates of each apply that wrote
        self.before_apply: Callable[[], None] = lambda: None  # a concurrent writer's turn
        # Firestore refusing a write as invalid (InvalidArgument), whatever its size.
        self.refuse_when: Callable[[Change], bool] = lambda change: False

    def _event_doc(self, doc: dict[str, Any], seq: int, event: NewEvent) -> dict[str, Any]:
        return event_record(doc, seq, event, self.clock(), timedelta(days=30))

    def create(self, doc: dict[str, Any], event: NewEvent) -> dict[str, Any]:
        stored = {**copy.deepcopy(doc), "event_seq": 1}
        self.missions[doc["mission_id"]] = stored
        self.event_log[doc["mission_id"]] = [self._event_doc(doc, 1, event)]
        return copy.deepcopy(stored)

    def get(self, mission_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.missions.get(mission_id))

    def apply(self, mission_id: str, decide: Decide) -> dict[str, Any]:
        self.apply_calls += 1
        self.before_apply()
        doc = self.missions.get(mission_id)
        if doc is None:
            raise MissionNotFound(mission_id)
        change = decide(copy.deepcopy(doc))
        if change == Change():
            return copy.deepcopy(doc)
        limit = change.active_limit
        entering = active_delta(doc, change) > 0 and limit is not None
        if entering and self.active_count(doc["owner_uid"]) >= limit:
            raise TooManyActiveMissions(limit)
        after = with_updates(doc, change.updates)
        for path, document in [(f"missions/{mission_id}", after), *change.documents]:
            if document_size(path, document) > MAX_DOCUMENT_BYTES:
                raise StorageRejected(f"Firestore refused the write: {path} is over 1 MiB")
        if self.refuse_when(change):
            raise StorageRejected("Firestore refused the write: invalid argument")
        log = self.event_log[mission_id]
        seq = int(doc.get("event_seq", 0))
        if change.retract_seq is not None and change.retract_seq == seq:
            if log and log[-1]["seq"] == seq:
                log.pop()
            seq -= 1
        for event in change.events:
            seq += 1
            log.append(self._event_doc(doc, seq, event))
        for path, document in change.documents:
            self.documents[path] = copy.deepcopy(document)
        updates = {**copy.deepcopy(change.updates), "event_seq": seq}
        self.writes.append(updates)
        self.missions[mission_id] = with_updates(doc, updates)
        return copy.deepcopy(self.missions[mission_id])

    def active_count(self, owner_uid: str) -> int:
        """The owner's queued and running missions (the adapter keeps this as a counter)."""
        return sum(
            1
            for m in self.missions.values()
            if m["owner_uid"] == owner_uid and m["status"] in ACTIVE
        )

    def list(self, owner_uid: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        mine = [
            m
            for m in self.missions.values()
            if m["owner_uid"] == owner_uid and (status is None or m["status"] == status)
        ]
        mine.sort(key=lambda m: m["created_at"], reverse=True)
        return copy.deepcopy(mine[:limit])

    def events(self, mission_id: str, after_seq: int) -> list[dict[str, Any]]:
        log = self.event_log.get(mission_id, [])
        return copy.deepcopy([e for e in log if e["seq"] > after_seq][:1000])

    def get_document(self, path: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.documents.get(path))

    def get_artifact(self, artifact_id: str) -> dict[str, Any] | None:
        return self.get_document(f"artifacts/{artifact_id}")

    def in_flight_before(self, status: str, field: str, before: datetime) -> list[dict[str, Any]]:
        found = [
            m
            for m in self.missions.values()
            if m["status"] == status and m.get(field) is not None and m[field] < before
        ]
        return copy.deepcopy(sorted(found, key=lambda m: m[field]))

    # Test helpers, not part of the port.
    @property
    def artifacts(self) -> dict[str, dict[str, Any]]:
        prefix = "artifacts/"
        return {p[len(prefix) :]: d for p, d in self.documents.items() if p.startswith(prefix)}

    def event_types(self, mission_id: str) -> list[str]:
        return [e["type"] for e in self.event_log[mission_id]]

    def written_percents(self) -> list[int]:
        return [
            w["execution_record.progress_tracker"]["progress_percent"]
            for w in self.writes
            if "execution_record.progress_tracker" in w
        ]


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
) -> str:
    """Stores a mission and walks it to `status` the way the API would."""
    now = store.clock()
    scope = {"allowed_domains": []}
    doc = lifecycle.proposed(mission_id, owner_uid, objective, scope, budget_usd, tool, {}, now)
    store.create(doc, NewEvent("mission_created", "Mission proposed"))
    if status in {"approved", "queued"}:
        store.apply(mission_id, lambda d: lifecycle.approve(d, now))
    if status == "queued":
        store.apply(mission_id, lambda d: lifecycle.queue(d, now, max_active=100))
    if status not in {"proposed", "approved", "queued"}:
        store.missions[mission_id]["status"] = status
    store.apply_calls, store.writes = 0, []
    return mission_id
