"""Use cases of the HTTP API: the mission lifecycle as its owner sees it."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pydantic

from buddy.domain import lifecycle
from buddy.domain.lifecycle import Change, MissionNotFound, NewEvent, Status
from buddy.domain.progress import Clock, rate_based_eta
from buddy.schemas import CreateMission, validation_message
from buddy.service.ports import (
    DependencyUnavailable,
    ExecutionPublisher,
    MissionStore,
    ValidationFailed,
)

if TYPE_CHECKING:
    from buddy.tools import ToolRegistry

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 100
MAX_SEQ = 2**31
DEFAULT_LIST_LIMIT = 20


def new_mission_id() -> str:
    return "m_" + secrets.token_urlsafe(12)


@dataclass
class MissionService:
    store: MissionStore
    publisher: ExecutionPublisher
    tools: ToolRegistry
    clock: Clock
    max_active: int = 10

    def create(self, owner_uid: str, request: CreateMission) -> dict[str, Any]:
        self._check_tool_and_inputs(request.tool, request.inputs)
        now = self.clock()
        mission_id = new_mission_id()
        doc = lifecycle.proposed(
            mission_id,
            owner_uid,
            request.objective,
            request.scope.model_dump(),
            request.budget_usd,
            request.tool,
            request.inputs,
            now,
        )
        created = self.store.create(doc, NewEvent("mission_created", "Mission proposed"))
        log.info("mission created", extra={"mission_id": mission_id})
        return created

    def get(self, owner_uid: str, mission_id: str) -> dict[str, Any]:
        doc = self.store.get(mission_id)
        if doc is None or doc.get("owner_uid") != owner_uid:
            # Another user's mission is indistinguishable from a missing one.
            raise MissionNotFound(mission_id)
        return doc

    def list(self, owner_uid: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        if status is not None and status not in {s.value for s in Status}:
            raise ValidationFailed(f"Unknown status {status!r}")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValidationFailed(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        return self.store.list(owner_uid, status, limit)

    def approve(self, owner_uid: str, mission_id: str) -> dict[str, Any]:
        return self._transition(owner_uid, mission_id, lifecycle.approve)

    def execute(self, owner_uid: str, mission_id: str) -> dict[str, Any]:
        """approved → queued (within the owner's active-mission limit) and one message.

        A publish that fails or times out may still have sent its message, so the queueing is
        undone: back to approved, 503, and a message that arrives later finds the mission not
        queued and is dropped by the worker. If a worker claimed it first, the message did
        leave: 202. If even the undo fails, the mission stays queued and the sweeper
        republishes it: 202 as well, because it will run.
        """
        queued = self._transition(
            owner_uid, mission_id, lambda doc, now: lifecycle.queue(doc, now, self.max_active)
        )
        try:
            self.publisher.publish_execution(mission_id)
        except DependencyUnavailable:
            seq = queued["event_seq"]
            try:
                after = self.store.apply(
                    mission_id, lambda doc: lifecycle.unqueue(doc, seq, self.clock())
                )
            except DependencyUnavailable:
                log.warning(
                    "could not undo a queueing; the sweeper will dispatch it",
                    extra={"mission_id": mission_id},
                )
                return {"mission_id": mission_id, "status": Status.QUEUED.value}
            if after["status"] in (Status.APPROVED.value, Status.CANCELLED.value):
                raise
            log.info("message left despite a publish error", extra={"mission_id": mission_id})
        log.info("mission queued", extra={"mission_id": mission_id})
        return {"mission_id": mission_id, "status": Status.QUEUED.value}

    def cancel(self, owner_uid: str, mission_id: str) -> dict[str, Any]:
        return self._transition(owner_uid, mission_id, lifecycle.cancel)

    def progress(self, owner_uid: str, mission_id: str) -> dict[str, Any]:
        return progress_view(self.get(owner_uid, mission_id), self.clock)

    def events(self, owner_uid: str, mission_id: str, after_seq: int) -> list[dict[str, Any]]:
        if not 0 <= after_seq <= MAX_SEQ:
            raise ValidationFailed(f"after_seq must be between 0 and {MAX_SEQ}")
        self.get(owner_uid, mission_id)
        return self.store.events(mission_id, after_seq)

    def artifact(self, owner_uid: str, mission_id: str) -> dict[str, Any]:
        record = self.get(owner_uid, mission_id).get("execution_record") or {}
        reference = record.get("artifact_reference")
        artifact = self.store.get_artifact(reference["artifact_id"]) if reference else None
        if artifact is None:
            raise MissionNotFound(mission_id) from None
        return artifact

    def _check_tool_and_inputs(self, tool_name: str | None, inputs: dict[str, Any]) -> None:
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

    def _transition(
        self, owner_uid: str, mission_id: str, action: Callable[[dict[str, Any], datetime], Change]
    ) -> dict[str, Any]:
        def decide(doc: dict[str, Any]) -> Change:
            if doc.get("owner_uid") != owner_uid:
                raise MissionNotFound(mission_id)
            return action(doc, self.clock())

        return self.store.apply(mission_id, decide)


def progress_view(doc: dict[str, Any], clock: Clock) -> dict[str, Any]:
    """The original design's progress shape, with elapsed time and ETA as of now."""
    status = Status(doc["status"])
    tracker = (doc.get("execution_record") or {}).get("progress_tracker") or {}
    percent = int(tracker.get("progress_percent") or 0)
    elapsed = float(tracker.get("elapsed_seconds") or 0.0)
    eta = float(tracker.get("estimated_time_remaining") or 0.0)
    started = doc.get("started_at")
    if status == Status.RUNNING and started is not None:
        # Age the worker's last figures by the time since it wrote them.
        now_elapsed = round((clock() - started).total_seconds(), 3)
        eta = max(eta - max(now_elapsed - elapsed, 0.0), 0.0)
        elapsed = now_elapsed
    elif status in {Status.PROPOSED, Status.APPROVED, Status.QUEUED}:
        eta = rate_based_eta(0, 0.0)
    lease = doc.get("lease_expires_at")
    return {
        "mission_id": doc["mission_id"],
        "status": status.value,
        "current_step": tracker.get("current_step"),
        "completed_steps": tracker.get("completed_steps", []),
        "progress_percent": percent,
        "elapsed_seconds": elapsed,
        "estimated_time_remaining": 0.0 if status in lifecycle.TERMINAL else round(eta, 3),
        # Its worker stopped renewing the lease: until a recovery resumes it, it is stuck.
        "stalled": status == Status.RUNNING and lease is not None and lease <= clock(),
    }
