"""The API's models: requests are validated with them, responses serialised through them,
and /openapi.json is generated from them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from buddy.domain.mission import Status

MISSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MISSION_ID = re.compile(MISSION_ID_PATTERN)
_HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# What `\s` matches in JSON Schema (ECMAScript) regular expressions.
_JSON_SCHEMA_SPACE = re.compile(
    "[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]*"
)


def valid_mission_id(mission_id: str) -> bool:
    """An id we could have made: Firestore reserves `__…__` ids (and refuses to read them)."""
    reserved = mission_id.startswith("__") and mission_id.endswith("__")
    return bool(MISSION_ID.fullmatch(mission_id)) and not reserved


def normalise_hostname(value: str) -> str:
    host = value.lower().rstrip(".")
    labels = host.split(".")
    if not host or len(value) > 253 or not all(_HOSTNAME_LABEL.fullmatch(x) for x in labels):
        raise ValueError(
            f"{value!r} is not a hostname (give e.g. 'example.com', no scheme or path)"
        )
    return host


# The rule normalise_hostname applies, for the API description: a DNS name of
# labels of letters, digits and inner hyphens, with an optional trailing dot.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
Hostname = Annotated[
    str, Field(json_schema_extra={"pattern": rf"^{_LABEL}(\.{_LABEL})*\.?$", "maxLength": 253})
]


class Scope(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    allowed_domains: Annotated[list[Hostname], Field(max_length=20)] = []

    @field_validator("allowed_domains")
    @classmethod
    def _hostnames(cls, domains: list[str]) -> list[str]:
        return list(dict.fromkeys(normalise_hostname(d) for d in domains))


def _not_blank(objective: str) -> str:
    # Blank as the published pattern `\S` means it (JSON Schema's regex): Python's own idea
    # of whitespace also takes in control characters such as U+001C.
    if _JSON_SCHEMA_SPACE.fullmatch(objective):
        raise ValueError("the objective is blank")
    return objective


# The create fields, shared by create, edit, clone and retry: one set of rules.
Objective = Annotated[
    str,
    Field(min_length=1, max_length=2000, json_schema_extra={"pattern": r"\S"}),
    AfterValidator(_not_blank),
]
Budget = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]
ToolName = Annotated[str | None, Field(min_length=1, max_length=64)]
OnLimitField = Annotated[
    Literal["fail", "ask"],
    Field(description="At a limit the owner could lift: fail, or pause and ask them"),
]


class CreateMission(BaseModel):
    # strict: "1" is not a number and 1 is not a string, as the description says.
    model_config = ConfigDict(extra="forbid", strict=True)

    objective: Objective
    scope: Scope = Scope()
    budget_usd: Budget = 1.0
    tool: ToolName = None
    inputs: dict[str, Any] = {}
    on_limit: OnLimitField = "fail"


class _Edit(BaseModel):
    """Fields left out stay as they are; `null` only for the tool (let the worker choose)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra=lambda schema, _: _not_nullable(schema)
    )

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name != "tool":
            raise ValueError("null is not a value here; leave the field out to keep it")
        return value

    def fields(self) -> dict[str, Any]:
        """What was given, by the domain's names (allowed_domains for the scope)."""
        given = self.model_dump(exclude_unset=True, exclude={"scope"})
        scope = getattr(self, "scope", None)
        if scope is not None:  # `{}` as in a create: no domains
            given["allowed_domains"] = tuple(scope.allowed_domains)
        return given


def _not_nullable(schema: dict[str, Any]) -> None:
    """The description of an _Edit: every field but the tool is absent or a value."""
    for name, field in schema.get("properties", {}).items():
        if name != "tool" and "anyOf" in field:
            field["anyOf"] = [s for s in field["anyOf"] if s != {"type": "null"}]
            field.pop("default", None)


class ModifyMission(_Edit):
    """An edit, or a clone's overrides: any create field, each optional."""

    objective: Objective | None = None
    scope: Scope | None = None
    budget_usd: Budget | None = None
    tool: ToolName = None
    inputs: dict[str, Any] | None = None
    on_limit: OnLimitField | None = None


class AmendMission(_Edit):
    """What a retry may change: the limits that stopped the mission."""

    budget_usd: Budget | None = None
    scope: Scope | None = None


def _integral(value: Any) -> Any:
    """3.0 is the integer 3 in JSON (and JSON Schema); 3.5 is not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# ---- recipes --------------------------------------------------------------------------------

RecipeId = Annotated[str, Field(pattern=MISSION_ID_PATTERN)]
ParamName = Annotated[
    str,
    Field(
        pattern=r"^[a-z_][a-z0-9_]{0,39}$",
        description="What {name} stands for in the templates",
    ),
]
ParamValue = str | int | float
Integral = Annotated[int, Field(ge=-(2**53), le=2**53), BeforeValidator(_integral)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("give an http(s) URL with a host, e.g. https://example.com/page")
    return value


# What a value of each param type must be: the same rules wherever a param is given.
PARAM_TYPES: dict[str, Any] = {
    "string": Annotated[str, Field(min_length=1, max_length=2000)],
    "integer": Integral,
    "number": Annotated[float, Field(allow_inf_nan=False)],
    "url": Annotated[str, Field(max_length=2048), AfterValidator(_http_url)],
}


class ParamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: ParamName
    type: Literal["string", "integer", "number", "url"]
    required: bool | None = Field(
        default=None, description="Default: required unless it has a default"
    )
    default: ParamValue | None = None
    description: Annotated[str, Field(max_length=500)] = ""


class RecipeScopeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    allowed_domains: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=253)]], Field(max_length=20)
    ] = []


# What a person calls a recipe or a schedule.
Name = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": r"\S"}),
    AfterValidator(_not_blank),
]
Template = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        json_schema_extra={"pattern": r"\S"},
        description="Text with {param} placeholders ({url.host}: a url param's host)",
    ),
    AfterValidator(_not_blank),
]


MAX_TEMPLATE_DEPTH = 16


def _shallow(value: Any) -> Any:
    """Templates nested no deeper than MAX_TEMPLATE_DEPTH (no tool takes deeper inputs)."""
    level = [value]
    for _ in range(MAX_TEMPLATE_DEPTH):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return value
    raise ValueError(f"nested deeper than {MAX_TEMPLATE_DEPTH} levels")


class CreateRecipe(BaseModel):
    """A recipe, or its next version: every field of it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    description: Annotated[str, Field(max_length=2000)] = ""
    objective: Template
    params: Annotated[list[ParamSpec], Field(max_length=20)] = []
    scope: RecipeScopeIn = RecipeScopeIn()
    budget_usd: Budget | Annotated[str, Field(min_length=1, max_length=64)] = Field(
        default=1.0, description="A number, or one placeholder of a number param: '{budget}'"
    )
    tool: ToolName = None
    inputs: Annotated[dict[str, Any], AfterValidator(_shallow)] = {}
    on_limit: OnLimitField = "fail"

    def fields(self) -> dict[str, Any]:
        """The recipe's fields; a param is required unless it has a default."""
        given = self.model_dump()
        for param in given["params"]:
            if param["required"] is None:
                param["required"] = param["default"] is None
        return given


class RecipeRun(BaseModel):
    """A mission made from a recipe: its params (and a version other than the latest)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    params: dict[str, Any] = {}
    version: Annotated[int, Field(ge=1, le=1_000_000), BeforeValidator(_integral)] | None = None


class ScheduledRecipe(RecipeRun):
    """A schedule's mission named by a recipe."""

    recipe_id: RecipeId


class SaveAsRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None
    params: (
        Annotated[
            list[Annotated[str, Field(min_length=1, max_length=200)]],
            Field(
                max_length=20,
                description="Fields that become params: objective, budget_usd, inputs.<key> "
                "(default: every input, or the objective when there are none)",
            ),
        ]
        | None
    ) = None


class RateMission(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    rating: Annotated[int, Field(ge=1, le=5), BeforeValidator(_integral)]
    comment: Annotated[str, Field(max_length=2000)] | None = None


_MISSION_KINDS = ("body", "recipe")


def _mission_kind(value: Any) -> str:
    return "recipe" if isinstance(value, dict) and "recipe_id" in value else "body"


ScheduleMission = Annotated[
    Annotated[CreateMission, Tag("body")] | Annotated[ScheduledRecipe, Tag("recipe")],
    Discriminator(_mission_kind),
    Field(description="A create body, or a recipe with its params: {recipe_id, version, params}"),
]


# ---- schedules ------------------------------------------------------------------------------

CronField = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="Five fields — minute hour day-of-month month day-of-week — read in "
        "`timezone` (e.g. '0 9 * * 1-5': weekdays at 09:00)",
    ),
]
TimeZone = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="An IANA time zone, e.g. Europe/Berlin (an unknown one is a 422)",
    ),
]
OverlapField = Annotated[
    Literal["skip", "buffer_one", "allow"],
    Field(
        description="A fire while the last mission has not finished: skip it, keep the "
        "newest one until it finishes, or run it anyway"
    ),
]


CatchupWindow = Annotated[int, BeforeValidator(_integral), Field(ge=0, le=7 * 86400)]
PauseAfter = Annotated[
    int, BeforeValidator(_integral), Field(ge=0, le=100, description="0: never pause")
]


class CreateSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    cron: CronField
    timezone: TimeZone = "UTC"
    mission: ScheduleMission
    overlap: OverlapField = "skip"
    catchup_window_seconds: CatchupWindow = 0
    pause_after_failures: PauseAfter = 3

    def fields(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json", exclude={"mission"}), "mission": _dumped(self)}


class ModifySchedule(_Edit):
    name: Name | None = None
    cron: CronField | None = None
    timezone: TimeZone | None = None
    mission: ScheduleMission | None = None
    overlap: OverlapField | None = None
    catchup_window_seconds: CatchupWindow | None = None
    pause_after_failures: PauseAfter | None = None

    def fields(self) -> dict[str, Any]:
        given = self.model_dump(mode="json", exclude_unset=True, exclude={"mission"})
        return given | ({"mission": _dumped(self)} if "mission" in self.model_fields_set else {})


def _dumped(schedule: CreateSchedule | ModifySchedule) -> dict[str, Any]:
    """A schedule's mission as given: a create body, or a recipe with its params."""
    assert schedule.mission is not None
    return schedule.mission.model_dump(mode="json")


def validation_message(error: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as one line a person can act on: `field: problem; ...`."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        # A schedule's mission is one of two kinds: the kind's tag is no field of the body.
        raw = [str(part) for part in item["loc"]]
        loc = [
            part
            for i, part in enumerate(raw)
            if not (part in _MISSION_KINDS and i and raw[i - 1] == "mission")
        ]
        where = ".".join([prefix, *loc] if prefix else loc)
        message = item["msg"].removeprefix("Value error, ")  # our own ValueErrors' words
        parts.append(f"{where or 'body'}: {message}")
    return "; ".join(parts)


class Out(BaseModel):
    """Base of response models, read from the domain's objects by attribute; what they hold
    for storage only (leases' run ids, memoized outputs) is not echoed."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)


class ErrorDetail(Out):
    code: str
    message: str


class ErrorBody(Out):
    error: ErrorDetail


class Health(Out):
    status: Literal["ok"]


class StepDetail(Out):
    done: int
    total: int
    unit: str


class ExecutionStepOut(Out):
    step_name: str
    step_index: int
    total_steps: int
    progress_percent: int
    status: Literal["started", "completed", "failed"]
    message: str
    timestamp: str
    duration_seconds: float
    # Only long steps report sub-steps; the others have no detail at all.
    detail: StepDetail | None = Field(default=None, exclude_if=lambda detail: detail is None)


class ProgressTrackerOut(Out):
    mission_id: str
    start_time: str
    current_step: ExecutionStepOut | None
    completed_steps: list[ExecutionStepOut]
    progress_percent: int
    elapsed_seconds: float
    estimated_time_remaining: float
    updated_at: str


class ArtifactReference(Out):
    artifact_id: str
    title: str
    type: str


class Cost(Out):
    estimated: float
    actual: float | None = None


class StepError(Out):
    step_name: str
    code: str
    message: str


class IntentOut(Out):
    name: str
    confidence: float
    reason: str | None = None


class PauseReasonOut(Out):
    code: Literal["requested", "budget_exceeded", "out_of_scope"]
    message: str
    step_name: str | None = None
    expires_at: datetime | None = None
    needed_usd: float | None = None
    host: str | None = None
    hosts: list[str] = []


class ExecutionRecordOut(Out):
    status: str | None = None
    run: int = 1
    intent: IntentOut | None = None
    tool_used: str | None = None
    tool_confidence: float | None = None
    result_summary: str | None = None
    attempt: int | None = None
    runs: int | None = None
    artifact_reference: ArtifactReference | None = None
    cost_usd: Cost | None = None
    error: StepError | None = None
    progress_tracker: ProgressTrackerOut | None = None


class ScopeOut(Out):
    allowed_domains: list[str]


class FeedbackOut(Out):
    rating: int
    comment: str | None = None
    at: datetime


class MissionOut(Out):
    mission_id: str
    owner_uid: str
    objective: str
    scope: ScopeOut
    budget_usd: float
    tool: str | None
    inputs: dict[str, Any]
    status: Status
    created_at: datetime
    updated_at: datetime
    approved_at: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # While running: the worker renews this; past it, the run has stalled.
    lease_expires_at: datetime | None = None
    cancel_requested: bool = False
    on_limit: Literal["fail", "ask"] = "fail"
    pause_requested: bool = False
    pause_reason: PauseReasonOut | None = None
    cloned_from: str | None = None
    recipe: dict[str, Any] | None = None
    schedule_id: str | None = None
    scheduled_for: datetime | None = None
    feedback: FeedbackOut | None = None
    execution_record: ExecutionRecordOut | None = None


class MissionList(Out):
    missions: list[MissionOut]


class ExecuteAccepted(Out):
    mission_id: str
    status: Literal["queued"]


class ProgressOut(Out):
    mission_id: str
    status: Status
    current_step: ExecutionStepOut | None
    completed_steps: list[ExecutionStepOut]
    progress_percent: int
    elapsed_seconds: float
    estimated_time_remaining: float
    stalled: bool = False


class EventOut(Out):
    seq: int
    type: str
    step_name: str | None
    progress_percent: int | None
    message: str
    attempt: int | None
    timestamp: str
    owner_uid: str


class EventList(Out):
    events: list[EventOut]


class ArtifactOut(Out):
    artifact_id: str
    mission_id: str
    owner_uid: str
    tool: str
    type: str
    title: str
    summary: str
    content: str
    preview: str
    data: dict[str, Any] = {}
    created_at: str
    # The content was cut to fit (the page's size cap, or the artifact's 1 MiB).
    truncated: bool = False
    # How to show content: Markdown, plain text, JSON text, or data["table"] (columns, rows).
    format: Literal["markdown", "text", "json", "table"] = "text"


class FireOut(Out):
    fire_at: datetime
    status: Literal["fired", "skipped", "buffered"]
    mission_id: str | None = None
    reason: str | None = None
    outcome: Status | None = None


class UpcomingFire(Out):
    utc: datetime
    local: str  # ISO 8601 with the zone's offset at that instant


class ScheduleOut(Out):
    schedule_id: str
    owner_uid: str
    name: str
    cron: str
    description: str  # the cron in words
    timezone: str
    mission: dict[str, Any]
    overlap: Literal["skip", "buffer_one", "allow"]
    catchup_window_seconds: int
    pause_after_failures: int
    paused: bool
    pause_reason: str | None = None
    consecutive_failures: int
    next_fire_at: datetime | None = None
    last_fire_at: datetime | None = None
    last_mission_id: str | None = None
    buffered_fire_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    history: list[FireOut]
    upcoming: list[UpcomingFire]


class ScheduleList(Out):
    schedules: list[ScheduleOut]


class RunAccepted(Out):
    mission_id: str
    status: Literal["queued"]


class Empty(Out):
    """No body (204)."""


class ParamOut(Out):
    name: str
    type: Literal["string", "integer", "number", "url"]
    required: bool
    default: ParamValue | None = None
    description: str = ""


class RecipeScopeOut(Out):
    allowed_domains: list[str]


class RecipeOut(Out):
    recipe_id: str
    owner_uid: str  # "builtin" for the recipes that ship with the product
    builtin: bool
    name: str
    description: str
    version: int  # the version shown
    latest_version: int
    objective: str
    params: list[ParamOut]
    scope: RecipeScopeOut
    budget_usd: float | str
    tool: str | None
    inputs: dict[str, Any]
    on_limit: Literal["fail", "ask"]
    uses: int  # missions made from it
    completed: int
    failed: int
    created_at: datetime
    updated_at: datetime
    version_created_at: datetime


class RecipeList(Out):
    recipes: list[RecipeOut]


class DayOut(Out):
    date: str
    completed: int
    failed: int
    ratings: int
    mean_rating: float | None


class ToolSummaryOut(Out):
    missions: int
    completed: int
    failed: int
    cancelled: int
    success_rate: float | None  # completed / (completed + failed)
    median_duration_seconds: float | None
    mean_cost_usd: float | None
    ratings: int
    mean_rating: float | None
    daily: list[DayOut]


class AdjustmentOut(Out):
    intent: str
    adjustment: float  # what tool selection adds to the confidence now
    ratings: int
    mean_rating: float | None


class ToolStatsOut(Out):
    tool: str
    mine: ToolSummaryOut
    everyone: ToolSummaryOut
    adjustments: list[AdjustmentOut]


class ToolStatsList(Out):
    tools: list[ToolStatsOut]
