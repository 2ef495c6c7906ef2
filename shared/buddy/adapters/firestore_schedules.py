"""ScheduleStore on Cloud Firestore (or its emulator).

    schedules/{schedule_id}    the schedule (its owner reads it; clients write nothing)
    users/{uid}                schedules: how many the owner has

A fire writes the schedule and creates its mission (with its first events and the owner's
active count) in one batch, on condition that the schedule is unchanged since it was read:
two ticks racing on one schedule both decide the same fire, one batch lands, and the other
finds the schedule moved on and decides nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from pydantic import TypeAdapter

from buddy.adapters.firestore_base import APPLY_ATTEMPTS, TIMEOUT_SECONDS, unavailable_is_ours
from buddy.adapters.firestore_stats import add_tally
from buddy.adapters.firestore_store import FirestoreMissionStore, mission_document
from buddy.domain import stats
from buddy.domain.schedule import Schedule, Tick
from buddy.errors import DependencyUnavailable, ScheduleNotFound, TooManySchedules
from buddy.service.ports import Fired, MissionFor

_SCHEDULE: TypeAdapter[Schedule] = TypeAdapter(Schedule)
_EPOCH = datetime(1970, 1, 2, tzinfo=UTC)


def schedule_document(schedule: Schedule) -> dict[str, Any]:
    return dict(_SCHEDULE.dump_python(schedule))


def schedule_from(document: Mapping[str, Any]) -> Schedule:
    return _SCHEDULE.validate_python(document)


class FirestoreScheduleStore:
    def __init__(self, client: firestore.Client, missions: FirestoreMissionStore) -> None:
        self._db = client
        self._schedules = client.collection("schedules")
        self._users = client.collection("users")
        self._missions = missions  # encodes the missions fires create
        self.reads = 0  # schedule documents read (for the benchmark)

    @unavailable_is_ours
    def create(self, schedule: Schedule, limit: int) -> Schedule:
        """Counts first and looks after, as the active-mission limit does: the create adds
        one to the owner's count, and one that took it past the limit takes itself back."""
        ref = self._schedules.document(schedule.schedule_id)
        counter = self._users.document(schedule.owner_uid)
        batch = self._db.batch()
        batch.create(ref, schedule_document(schedule))
        batch.set(counter, {"schedules": firestore.Increment(1)}, merge=True)
        results = batch.commit(timeout=TIMEOUT_SECONDS)
        if results[1].transform_results[0].integer_value > limit:
            self._delete(ref, schedule.owner_uid)
            raise TooManySchedules(limit)
        return schedule

    @unavailable_is_ours
    def get(self, schedule_id: str) -> Schedule | None:
        snapshot = self._schedules.document(schedule_id).get(timeout=TIMEOUT_SECONDS)
        return schedule_from(snapshot.to_dict() or {}) if snapshot.exists else None

    @unavailable_is_ours
    def schedules_of(self, owner_uid: str) -> list[Schedule]:
        query = (
            self._schedules.where(filter=firestore.FieldFilter("owner_uid", "==", owner_uid))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(200)
        )
        return [schedule_from(s.to_dict() or {}) for s in query.stream(timeout=TIMEOUT_SECONDS)]

    @unavailable_is_ours
    def update(self, schedule_id: str, change: Callable[[Schedule], Schedule]) -> Schedule:
        return self.fire(schedule_id, lambda s: Tick(change(s)), _no_mission).schedule

    @unavailable_is_ours
    def delete(self, schedule_id: str) -> None:
        ref = self._schedules.document(schedule_id)
        snapshot = ref.get(timeout=TIMEOUT_SECONDS)
        if snapshot.exists:
            self._delete(ref, (snapshot.to_dict() or {})["owner_uid"], snapshot.update_time)

    def _delete(self, ref: Any, owner_uid: str, version: Any = None) -> None:
        batch = self._db.batch()
        option = self._db.write_option(last_update_time=version) if version else None
        batch.delete(ref, option=option)
        batch.set(
            self._users.document(owner_uid), {"schedules": firestore.Increment(-1)}, merge=True
        )
        # Already deleted (and counted) by someone else meanwhile: nothing to do.
        with contextlib.suppress(gexc.FailedPrecondition, gexc.NotFound):
            batch.commit(timeout=TIMEOUT_SECONDS)

    @unavailable_is_ours
    def due(self, now: datetime, limit: int) -> list[Schedule]:
        on_time = (
            self._schedules.where(filter=firestore.FieldFilter("paused", "==", False))
            .where(filter=firestore.FieldFilter("next_fire_at", "<=", now))
            .order_by("next_fire_at")
            .limit(limit)
        )
        buffered = self._schedules.where(
            filter=firestore.FieldFilter("buffered_fire_at", ">", _EPOCH)
        ).limit(limit)
        found: dict[str, Schedule] = {}
        for query in (on_time, buffered):
            for snapshot in query.stream(timeout=TIMEOUT_SECONDS):
                self.reads += 1
                found.setdefault(snapshot.id, schedule_from(snapshot.to_dict() or {}))
        return list(found.values())[:limit]

    @unavailable_is_ours
    def fire(
        self, schedule_id: str, decide: Callable[[Schedule], Tick], mission_for: MissionFor
    ) -> Fired:
        ref = self._schedules.document(schedule_id)
        for _ in range(APPLY_ATTEMPTS):
            snapshot = ref.get(timeout=TIMEOUT_SECONDS)
            self.reads += 1
            if not snapshot.exists:
                raise ScheduleNotFound(schedule_id)
            document = snapshot.to_dict() or {}
            before = schedule_from(document)
            tick = decide(before)
            if tick.schedule == before:
                return Fired(before)
            after = schedule_document(tick.schedule)
            batch = self._db.batch()
            mission = None
            if tick.fire_at is not None:
                mission, events = mission_for(tick.schedule, tick.fire_at)
                mission = replace(mission, event_seq=len(events))
                missions = self._missions
                mission_ref = self._db.collection("missions").document(mission.mission_id)
                batch.create(mission_ref, mission_document(mission))
                for seq, event in enumerate(events, 1):
                    batch.create(
                        mission_ref.collection("events").document(str(seq)),
                        missions.event_document(mission.owner_uid, seq, event),
                    )
                add_tally(self._db, batch, stats.delta(None, mission))
                counter = self._users.document(mission.owner_uid)
                batch.set(counter, {"active_missions": firestore.Increment(1)}, merge=True)
            changed = {k: v for k, v in after.items() if document.get(k) != v}
            if not changed and mission is None:
                return Fired(before)  # the same document once encoded
            batch.update(
                ref, changed, option=self._db.write_option(last_update_time=snapshot.update_time)
            )
            try:
                results = batch.commit(timeout=TIMEOUT_SECONDS)
            except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Aborted):
                continue  # another tick (or an edit) got there first: decide again
            if mission is None:
                return Fired(tick.schedule)
            active = results[-2].transform_results[0].integer_value
            return Fired(tick.schedule, mission, active)
        raise DependencyUnavailable(f"Schedule {schedule_id} is too busy right now; try again")


def _no_mission(schedule: Schedule, fire_at: datetime) -> Any:
    raise AssertionError("an update fires nothing")
