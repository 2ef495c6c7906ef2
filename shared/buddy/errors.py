"""The errors Buddy Missions reports to whoever called it: one tree, each class with the HTTP
status and code it is answered with. The HTTP edge maps an error by looking its class up the
hierarchy (`error.status`), so a new subclass is answered like its parent without a line
changed there.

Failures of a tool (buddy.tools.ToolError) are not here: they fail a step, never a request.
Control-flow signals (a busy lease, a cancel, a step that failed) live beside the code that
raises and catches them, each saying why it is a signal.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """Base of every error a caller of the API or the worker can be told about."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"


class MalformedJson(ServiceError):
    status, code = 400, "malformed_json"


class Unauthenticated(ServiceError):
    """No ID token, or one that is invalid, expired or revoked."""

    status, code = 401, "unauthenticated"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class MissionNotFound(NotFound):
    """No such mission for this caller: another user's is not found either."""

    def __init__(self, mission_id: str) -> None:
        super().__init__(f"Mission {mission_id} not found")


class ScheduleNotFound(NotFound):
    """No such schedule for this caller."""

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"Schedule {schedule_id} not found")


class RecipeNotFound(NotFound):
    """No such recipe (or version of it) for this caller."""

    def __init__(self, recipe_id: str, version: int | None = None) -> None:
        which = f" version {version}" if version is not None else ""
        super().__init__(f"Recipe {recipe_id}{which} not found")


class MethodNotAllowed(ServiceError):
    status, code = 405, "method_not_allowed"

    def __init__(self, allowed: str) -> None:
        super().__init__(f"Use {allowed} on this route")
        self.allowed = allowed


class Conflict(ServiceError):
    """The mission's state does not allow the request."""

    status, code = 409, "conflict"


class InvalidTransition(Conflict):
    def __init__(self, action: str, status: str, allowed: str) -> None:
        super().__init__(f"Cannot {action} a mission that is {status}; it must be {allowed}")


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class ValidationFailed(ServiceError):
    """The request is well-formed but its content is not acceptable."""

    status, code = 422, "validation_failed"


class TooManyActiveMissions(ServiceError):
    """The owner already has as many queued or running missions as allowed."""

    status, code = 429, "too_many_active_missions"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {limit} missions queued or running; "
            "wait for one to finish or cancel one"
        )


class TooManySchedules(ServiceError):
    status, code = 429, "too_many_schedules"

    def __init__(self, limit: int) -> None:
        super().__init__(f"You already have {limit} schedules; delete one to add another")


class DependencyUnavailable(ServiceError):
    """Firestore, Pub/Sub or Auth could not be reached; nothing was changed."""

    status, code = 503, "unavailable"


class StorageRejected(ServiceError):
    """Firestore refused a write as invalid (a document over 1 MiB, say): retrying won't help."""

    code = "storage_rejected"
