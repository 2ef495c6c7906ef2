"""Use cases of the HTTP API: the mission lifecycle as its owner sees it."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pydantic

from buddy.domain import lifecycle
from buddy.domain.mission import (
    Artifact,
    Change,
    Event,
    ExecutionStep,
    Mission,
    NewEvent,
    Status,
)
from buddy.domain.progress import Clock, rate_based_eta
from buddy.errors import DependencyUnavailable, MissionNotFound, ValidationFailed
from buddy.schemas import CreateMission, valid_mission_id, validation_message
from buddy.service.ports import ExecutionPublisher, MissionStore

if TYPE_CHECKING:
    from buddy.tools import ToolRegistry

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 100
MAX_SEQ = 2**31
DEFAULT_LIST_LIMIT = 20

Transition = Callable[[Mission, datetime], Change]


def new_mission_id() -> str:
    return "m_" + secrets.token_urlsafe(12)


def proposed_from(
    request: CreateMission, mission_id: str, owner_uid: str, now: datetime
) -> Mission:
    """A new proposed mission with a create body's fields."""
    return lifecycle.proposed(
        mission_id,
        owner_uid,
        request.objective,
        request.scope.allowed_domains,
        request.budget_usd,
        request.tool,
        dict(request.inputs),
        now,
        on_limit=request.on_limit,
    )


@dataclass(frozen=True)
class ProgressView:
    """The original design's progress shape, with elapsed time and ETA as of now."""

    mission_id: str
    status: Status
    current_step: ExecutionStep | None
    completed_steps: tuple[ExecutionStep, ...]
    progress_percent: int
    elapsed_seconds: float
    estimated_time_remaining: float
    # Its worker stopped renewing the lease: until a recovery resumes it, it is stuck.
    stalled: bool


@dataclass
class MissionService:
    store: MissionStore
    publisher: ExecutionPublisher
    tools: ToolRegistry
    clock: Clock
    max_active: int = 10

    def create(self, owner_uid: str, request: CreateMission) -> Mission:
        self.check_tool_and_inputs(request.tool, request.inputs)
        mission = proposed_from(request, new_mission_id(), owner_uid, self.clock())
        created = self.store.create(mission, NewEvent("mission_created", "Mission proposed"))
        log.info("mission created", extra={"mission_id": mission.mission_id})
        return created

    def get(self, owner_uid: str, mission_id: str) -> Mission:
        mission = self.store.get(mission_id)
        if mission is None or mission.owner_uid != owner_uid:
            # Another user's mission is indistinguishable from a missing one.
            raise MissionNotFound(mission_id)
        return mission

    def missions_of(
        self, owner_uid: str, status: str | None, limit: int, schedule_id: str | None = None
    ) -> list[Mission]:
        """The owner's missions, newest first (in a status, of a schedule, if given)."""
        if status is not None and status not in {s.value for s in Status}:
            raise ValidationFailed(f"Unknown status {status!r}")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValidationFailed(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        if schedule_id is not None and not valid_mission_id(schedule_id):
            raise ValidationFailed(f"schedule_id {schedule_id[:64]!r} is not a schedule id")
        chosen = Status(status) if status else None
        return self.store.missions_of(owner_uid, chosen, limit, schedule_id)

    def approve(self, owner_uid: str, mission_id: str) -> Mission:
        return self._transition(owner_uid, mission_id, lifecycle.approve)

    def execute(self, owner_uid: str, mission_id: str) -> Mission:
        """approved → queued (within the owner's active-mission limit) and one message."""
        return self._queue(
            owner_uid, mission_id, lambda m, now: lifecycle.queue(m, now, self.max_active)
        )

    def resume(self, owner_uid: str, mission_id: str) -> Mission:
        """paused → queued and one message: a worker carries on where it stopped."""
        return self._queue(
            owner_uid, mission_id, lambda m, now: lifecycle.resume(m, now, self.max_active)
        )

    def retry(
        self, owner_uid: str, mission_id: str, amendments: Mapping[str, Any] | None = None
    ) -> Mission:
        """failed → queued for its next run (with the budget or scope amended, if given)."""

        def retried(mission: Mission, now: datetime) -> Change:
            if amendments:
                edit = lifecycle.modify(mission, now, amendments)
                mission = edit.mission or mission
                change = lifecycle.retry(mission, now, self.max_active)
                return replace(change, events=(*edit.events, *change.events))
            return lifecycle.retry(mission, now, self.max_active)

        return self._queue(owner_uid, mission_id, retried)

    def rate(
        self, owner_uid: str, mission_id: str, rating: int, comment: str | None = None
    ) -> Mission:
        """The owner's rating of a finished mission; a new one replaces it."""
        return self._transition(
            owner_uid, mission_id, lambda m, now: lifecycle.rate(m, now, rating, comment)
        )

    def pause(self, owner_uid: str, mission_id: str) -> Mission:
        return self._transition(owner_uid, mission_id, lifecycle.pause)

    def modify(self, owner_uid: str, mission_id: str, fields: Mapping[str, Any]) -> Mission:
        """An edit, validated as a create would be: the tool must take the inputs."""

        def edited(mission: Mission, now: datetime) -> Change:
            change = lifecycle.modify(mission, now, fields)
            if change.mission is not None and {"tool", "inputs"} & set(fields):
                self.check_tool_and_inputs(change.mission.tool, dict(change.mission.inputs))
            return change

        return self._transition(owner_uid, mission_id, edited)

    def clone(self, owner_uid: str, mission_id: str, overrides: Mapping[str, Any]) -> Mission:
        """A new proposed mission with this one's fields, and the overrides given."""
        source = self.get(owner_uid, mission_id)
        mission, events = lifecycle.clone(
            source, new_mission_id(), owner_uid, self.clock(), overrides
        )
        self.check_tool_and_inputs(mission.tool, dict(mission.inputs))
        created = self.store.create(mission, *events)
        log.info("mission cloned", extra={"mission_id": mission.mission_id, "from": mission_id})
        return created

    def _queue(self, owner_uid: str, mission_id: str, action: Transition) -> Mission:
        """A transition into queued, and its message.

        A publish that fails or times out may still have sent its message, so the queueing is
        undone: the mission as it was, 503, and a message that arrives later finds the
        mission not queued and is dropped by the worker. If a worker claimed it first, the
        message did leave: queued. If even the undo fails, the mission stays queued and the
        sweeper republishes it: queued as well, because it will run.
        """
        seen: list[Mission] = []  # the mission each try of the transaction decided on

        def queue(mission: Mission, now: datetime) -> Change:
            seen.append(mission)
            return action(mission, now)

        queued = self._transition(owner_uid, mission_id, queue)
        before = seen[-1]  # the try that committed: an undo puts back exactly that
        try:
            self.publisher.publish_execution(mission_id)
        except DependencyUnavailable:
            try:
                after = self.store.apply(
                    mission_id,
                    lambda m: lifecycle.unqueue(m, before, queued.event_seq, self.clock()),
                )
            except DependencyUnavailable:
                log.warning(
                    "could not undo a queueing; the sweeper will dispatch it",
                    extra={"mission_id": mission_id},
                )
                return queued
            undone = after.event_seq < queued.event_seq  # its queued event was taken back
            if undone or after.status == Status.CANCELLED:
                raise
            log.info("message left despite a publish error", extra={"mission_id": mission_id})
        log.info("mission queued", extra={"mission_id": mission_id})
        return queued

    def cancel(self, owner_uid: str, mission_id: str) -> Mission:
        return self._transition(owner_uid, mission_id, lifecycle.cancel)

    def progress(self, owner_uid: str, mission_id: str) -> ProgressView:
        return progress_view(self.get(owner_uid, mission_id), self.clock())

    def events(self, owner_uid: str, mission_id: str, after_seq: int) -> list[Event]:
        if not 0 <= after_seq <= MAX_SEQ:
            raise ValidationFailed(f"after_seq must be between 0 and {MAX_SEQ}")
        self.get(owner_uid, mission_id)
        return self.store.events(mission_id, after_seq)

    def artifact(self, owner_uid: str, mission_id: str) -> Artifact:
        reference = self.get(owner_uid, mission_id).record.artifact_reference
        artifact = self.store.artifact(reference.artifact_id) if reference else None
        if artifact is None:
            raise MissionNotFound(mission_id) from None
        return artifact

    def check_tool_and_inputs(self, tool_name: str | None, inputs: dict[str, object]) -> None:
        """The named tool exists and accepts the inputs; without a tool, some tool must."""
        if tool_name is not None:
            tool = self.tools.get(tool_name)
            if tool is None:
                known = ", ".join(self.tools.names())
                raise ValidationFailed(f"Unknown tool {tool_name!r}; available tools: {known}")
            candidates = [tool]
        elif inputs:
            candidates = list(self.tools)
        else:
            return
        problems = []
        for tool in candidates:
            try:
                tool.input_model.model_validate(inputs)
                return
            except pydantic.ValidationError as e:
                problems.append(f"{tool.name}: {validation_message(e, prefix='inputs')}")
        raise ValidationFailed("inputs don't fit " + " | ".join(problems))

    def _transition(self, owner_uid: str, mission_id: str, action: Transition) -> Mission:
        def decide(mission: Mission) -> Change:
            if mission.owner_uid != owner_uid:
                raise MissionNotFound(mission_id)
            return action(mission, self.clock())

        return self.store.apply(mission_id, decide)


def progress_view(mission: Mission, now: datetime) -> ProgressView:
    """Where the mission is, as of now: the worker's last figures aged by the time since."""
    progress = mission.progress
    elapsed = progress.elapsed_seconds if progress else 0.0
    eta = progress.estimated_time_remaining if progress else 0.0
    if mission.status == Status.RUNNING and mission.started_at is not None:
        now_elapsed = round((now - mission.started_at).total_seconds(), 3)
        eta = max(eta - max(now_elapsed - elapsed, 0.0), 0.0)
        elapsed = now_elapsed
    elif mission.status in {Status.PROPOSED, Status.APPROVED, Status.QUEUED}:
        eta = rate_based_eta(0, 0.0)
    return ProgressView(
        mission_id=mission.mission_id,
        status=mission.status,
        current_step=progress.current_step if progress else None,
        completed_steps=progress.completed_steps if progress else (),
        progress_percent=mission.percent,
        elapsed_seconds=elapsed,
        estimated_time_remaining=0.0 if mission.terminal else round(eta, 3),
        stalled=lifecycle.stalled(mission, now) and mission.lease_expires_at is not None,
    )
