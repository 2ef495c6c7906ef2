"""Use cases of recurring missions: schedules as their owner sees them, and the ticks that
fire them (the `scheduler` function, called every minute by Cloud Scheduler in production
and every BUDDY_SCHEDULER_TICK_SECONDS by the local stack)."""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any

from buddy.domain import lifecycle
from buddy.domain import schedule as schedules
from buddy.domain.mission import TERMINAL, Change, Mission, NewEvent, Status, iso
from buddy.domain.progress import Clock
from buddy.domain.schedule import CronError, Schedule, Tick
from buddy.errors import (
    DependencyUnavailable,
    MissionNotFound,
    RecipeNotFound,
    ScheduleNotFound,
    ServiceError,
    TooManyActiveMissions,
    ValidationFailed,
)
from buddy.schemas import CreateMission, CreateSchedule
from buddy.service.missions import MissionService, proposed_from
from buddy.service.ports import ExecutionPublisher, Fired, MissionStore, ScheduleStore
from buddy.service.recipes import RecipeService

log = logging.getLogger(__name__)

DUE_PAGE = 500  # schedules one tick fires at most; the rest wait for the next tick
TICK_CONCURRENCY = 16  # fires in flight at once within one tick


def new_schedule_id() -> str:
    return "sch_" + secrets.token_urlsafe(12)


@dataclass
class ScheduleService:
    store: ScheduleStore
    missions: MissionStore
    publisher: ExecutionPublisher
    mission_service: MissionService  # validates a schedule's mission as a create would
    clock: Clock
    recipes: RecipeService | None = None  # for schedules whose mission names a recipe
    max_schedules: int = 50
    max_active: int = 10

    # ---- the owner's -------------------------------------------------------------------------

    def create(self, owner_uid: str, request: CreateSchedule) -> Schedule:
        fields = request.fields()
        mission, recipe = self._checked_mission(owner_uid, fields["mission"])
        try:
            schedule = schedules.new(
                new_schedule_id(),
                owner_uid,
                self.clock(),
                **{**fields, "mission": mission, "recipe": recipe},
            )
        except CronError as e:
            raise ValidationFailed(str(e)) from e
        created = self.store.create(schedule, self.max_schedules)
        log.info("schedule created", extra={"schedule_id": schedule.schedule_id})
        return created

    def get(self, owner_uid: str, schedule_id: str) -> Schedule:
        schedule = self.store.get(schedule_id)
        if schedule is None or schedule.owner_uid != owner_uid:
            raise ScheduleNotFound(schedule_id)
        return schedule

    def schedules_of(self, owner_uid: str) -> list[Schedule]:
        return self.store.schedules_of(owner_uid)

    def modify(self, owner_uid: str, schedule_id: str, fields: Mapping[str, Any]) -> Schedule:
        changes = dict(fields)
        if "mission" in changes:
            changes["mission"], changes["recipe"] = self._checked_mission(
                owner_uid, changes["mission"]
            )

        def edit(schedule: Schedule) -> Schedule:
            try:
                return schedules.edited(schedule, self.clock(), changes)
            except CronError as e:
                raise ValidationFailed(str(e)) from e

        return self._owned(owner_uid, schedule_id, edit)

    def pause(self, owner_uid: str, schedule_id: str) -> Schedule:
        return self._owned(
            owner_uid,
            schedule_id,
            lambda s: s if s.paused else schedules.paused(s, self.clock()),
        )

    def resume(self, owner_uid: str, schedule_id: str) -> Schedule:
        return self._owned(
            owner_uid,
            schedule_id,
            lambda s: schedules.resumed(s, self.clock()) if s.paused else s,
        )

    def delete(self, owner_uid: str, schedule_id: str) -> None:
        """The schedule goes; the missions it made stay."""
        self.get(owner_uid, schedule_id)
        self.store.delete(schedule_id)
        log.info("schedule deleted", extra={"schedule_id": schedule_id})

    def run_now(self, owner_uid: str, schedule_id: str) -> Mission:
        """A fire outside the cron: its mission is created and queued now."""
        self.get(owner_uid, schedule_id)
        fired = self._fire(schedule_id, lambda s: schedules.run_now(s, self.clock()))
        assert fired.mission is not None
        if fired.mission.status != Status.QUEUED:
            # Over the active limit: its mission ended at once, saying so (in the history).
            raise TooManyActiveMissions(self.max_active)
        return fired.mission

    # ---- the ticks ---------------------------------------------------------------------------

    def tick(self) -> dict[str, int]:
        """Fires what is due now; reads only the due schedules (and their last missions).
        Owners' fires go out side by side; one owner's one after another, since each adds
        to that owner's count of active missions (one document: concurrent commits to it
        would only race and retry)."""
        now = self.clock()
        due = self.store.due(now, DUE_PAGE)
        done = {"due": len(due), "fired": 0, "skipped": 0, "failed": 0}
        by_owner: dict[str, list[Schedule]] = defaultdict(list)
        for schedule in due:
            by_owner[schedule.owner_uid].append(schedule)

        def fire_all(group: list[Schedule]) -> list[str]:
            return [self._tick_safely(schedule, now) for schedule in group]

        if by_owner:
            with ThreadPoolExecutor(min(TICK_CONCURRENCY, len(by_owner))) as pool:
                for outcomes in pool.map(fire_all, by_owner.values()):
                    for outcome in outcomes:
                        done[outcome] += 1
        return done

    def _tick_safely(self, schedule: Schedule, now: datetime) -> str:
        try:
            fired = self._tick_one(schedule, now)
        except ServiceError as e:
            log.warning(
                "could not fire a schedule",
                extra={"schedule_id": schedule.schedule_id, "reason": str(e)},
            )
            return "failed"
        return "fired" if fired.mission else "skipped"

    def mission_ended(self, mission: Mission) -> None:
        """A mission ended (whoever ended it): its schedule counts the outcome."""
        if mission.schedule_id is None or mission.status not in TERMINAL:
            return
        try:
            self.store.update(
                mission.schedule_id,
                lambda s: schedules.outcome(s, mission.mission_id, mission.status, self.clock()),
            )
        except ScheduleNotFound:
            pass  # deleted since: its missions stay, nothing counts them
        except DependencyUnavailable as e:
            # The next tick of the schedule counts it from the mission itself.
            log.warning(
                "could not record a scheduled mission's outcome",
                extra={"mission_id": mission.mission_id, "reason": str(e)},
            )

    def _tick_one(self, schedule: Schedule, now: datetime) -> Fired:
        previous = self._last_mission(schedule)
        status = previous.status if previous else None

        def decide(current: Schedule) -> Tick:
            if previous is not None and status in TERMINAL:
                # Counted here too, in case the end's own report was lost.
                current = schedules.outcome(current, previous.mission_id, previous.status, now)
            return schedules.due(current, now, status)

        return self._fire(schedule.schedule_id, decide)

    def _last_mission(self, schedule: Schedule) -> Mission | None:
        if schedule.last_mission_id is None:
            return None
        return self.missions.get(schedule.last_mission_id)

    def _fire(self, schedule_id: str, decide: Callable[[Schedule], Tick]) -> Fired:
        fired = self.store.fire(schedule_id, decide, self._mission_for)
        mission = fired.mission
        if mission is None:
            return fired
        if fired.active_missions > self.max_active:
            return replace(fired, mission=self._refuse(mission))
        try:
            self.publisher.publish_execution(mission.mission_id)
        except DependencyUnavailable as e:
            # Queued all the same: the sweeper republishes missions that wait too long.
            log.warning(
                "could not publish a scheduled mission",
                extra={"mission_id": mission.mission_id, "reason": str(e)},
            )
        log.info(
            "schedule fired",
            extra={"schedule_id": schedule_id, "mission_id": mission.mission_id},
        )
        return fired

    def _mission_for(
        self, schedule: Schedule, fire_at: datetime
    ) -> tuple[Mission, tuple[NewEvent, ...]]:
        """The fire's mission, approved (approving the schedule approved it) and queued."""
        now = self.clock()
        body = CreateMission.model_validate(schedule.mission)
        mission_id = schedules.mission_id_for(schedule.schedule_id, fire_at)
        mission = proposed_from(body, mission_id, schedule.owner_uid, now)
        queued = replace(
            mission,
            status=Status.QUEUED,
            approved_at=now,
            queued_at=now,
            schedule_id=schedule.schedule_id,
            scheduled_for=fire_at,
            recipe=dict(schedule.recipe) if schedule.recipe else None,
        )
        events = (
            NewEvent(
                "mission_created",
                f"Mission created by schedule {schedule.name!r} for its fire at {iso(fire_at)}",
            ),
            NewEvent("mission_approved", "Mission approved with its schedule"),
            NewEvent("mission_queued", "Mission queued for execution"),
        )
        return queued, events

    def _refuse(self, mission: Mission) -> Mission:
        """A fire's mission over its owner's limit of active missions ends before it runs
        (cancelled, so it counts as neither success nor failure of the schedule)."""
        message = (
            f"Not run: you already had {self.max_active} missions queued or running "
            "when the schedule fired"
        )

        def refuse(current: Mission) -> Change:
            if current.status != Status.QUEUED:
                return Change()
            return lifecycle.ended(
                current, Status.CANCELLED, self.clock(), NewEvent("mission_cancelled", message)
            )

        try:
            return self.missions.apply(mission.mission_id, refuse)
        except (MissionNotFound, DependencyUnavailable) as e:
            log.warning(
                "could not refuse a scheduled mission over the limit",
                extra={"mission_id": mission.mission_id, "reason": str(e)},
            )
            return mission

    def view(self, schedule: Schedule) -> dict[str, Any]:
        """The schedule as its owner sees it: with its cron in words and its next fires, in
        UTC and in its own time zone."""
        cron = schedule.parsed
        upcoming = [
            {"utc": fire, "local": fire.astimezone(cron.zone).isoformat()}
            for fire in schedule.upcoming(self.clock())
        ]
        shown = {f.name: getattr(schedule, f.name) for f in fields(schedule)}
        shown["mission"] = schedule.recipe or schedule.mission  # as its owner gave it
        history = [asdict(entry) for entry in schedule.history]
        return {**shown, "history": history, "description": cron.description, "upcoming": upcoming}

    # ---- helpers -----------------------------------------------------------------------------

    def _checked_mission(
        self, owner_uid: str, body: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The mission body as a create validates it (the tool takes the inputs), and the
        recipe it comes from: a recipe's version is made into a body now, once (versions
        never change), and pinned."""
        if "recipe_id" in body:
            assert self.recipes is not None, "a schedule naming a recipe needs the recipes"
            try:
                request, recipe = self.recipes.mission_body(
                    owner_uid, body["recipe_id"], body.get("params") or {}, body.get("version")
                )
            except RecipeNotFound as e:  # the body names it: the body is what is wrong
                raise ValidationFailed(f"mission.recipe_id: {e}") from e
            return request.model_dump(mode="json"), recipe
        request = CreateMission.model_validate(dict(body))
        self.mission_service.check_tool_and_inputs(request.tool, request.inputs)
        return request.model_dump(mode="json"), None

    def _owned(
        self, owner_uid: str, schedule_id: str, change: Callable[[Schedule], Schedule]
    ) -> Schedule:
        def checked(schedule: Schedule) -> Schedule:
            if schedule.owner_uid != owner_uid:
                raise ScheduleNotFound(schedule_id)
            return change(schedule)

        return self.store.update(schedule_id, checked)
