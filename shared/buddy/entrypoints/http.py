"""The HTTP API: parse the request, call the service, map errors to statuses.

One table of endpoints drives routing, response serialisation and the OpenAPI
description, so the three cannot drift apart.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import flask
import pydantic
from werkzeug import exceptions as routing
from werkzeug.routing import Map, Rule

from buddy import bootstrap, schemas
from buddy.config import MAX_BODY_BYTES
from buddy.errors import (
    MalformedJson,
    MethodNotAllowed,
    MissionNotFound,
    NotFound,
    PayloadTooLarge,
    RecipeNotFound,
    ScheduleNotFound,
    ServiceError,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationFailed,
)
from buddy.logs import configure_logging
from buddy.schemas import (
    AmendMission,
    CreateMission,
    CreateRecipe,
    CreateSchedule,
    ModifyMission,
    ModifySchedule,
    RateMission,
    RecipeRun,
    SaveAsRecipe,
    valid_mission_id,
    validation_message,
)
from buddy.service.missions import DEFAULT_LIST_LIMIT, MAX_SEQ, MissionService

if TYPE_CHECKING:  # imported with the first schedule request (cold start)
    from buddy.service.schedules import ScheduleService

log = logging.getLogger(__name__)

CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
# An id in a path, and what is not found when it cannot be one.
_PATH_IDS: dict[str, Callable[[str], Exception]] = {
    "mission_id": MissionNotFound,
    "schedule_id": ScheduleNotFound,
    "recipe_id": RecipeNotFound,
}
CORS_HEADERS = "Authorization, Content-Type"

# The app, the caller's uid, the request, and the id in its path ("" if none).
Handler = Callable[[bootstrap.App, str, flask.Request, str], Any]


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    paths: tuple[str, ...]
    summary: str
    status: int
    response: type[schemas.Out]  # schemas.Empty: no body
    handler: Handler | None = None  # None: answered without authentication
    errors: tuple[int, ...] = ()
    body: type[pydantic.BaseModel] | None = None
    query: tuple[QueryParam, ...] = ()
    body_required: bool = True


Model = TypeVar("Model", bound=pydantic.BaseModel)


def _parsed(model: type[Model], request: flask.Request, optional: bool = False) -> Model:
    """The body as `model`, validated (an optional body may be left out: all defaults)."""
    sent = request.content_length or request.headers.get("Transfer-Encoding")
    raw = _body(request) if sent or not optional else {}
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ValidationFailed(validation_message(e)) from e


def _create(app: bootstrap.App, uid: str, request: flask.Request, _: str) -> Any:
    return app.missions.create(uid, _parsed(CreateMission, request))


def _modify(app: bootstrap.App, uid: str, request: flask.Request, mission_id: str) -> Any:
    return app.missions.modify(uid, mission_id, _parsed(ModifyMission, request).fields())


def _retry(app: bootstrap.App, uid: str, request: flask.Request, mission_id: str) -> Any:
    amendments = _parsed(AmendMission, request, optional=True).fields()
    return app.missions.retry(uid, mission_id, amendments)


def _clone(app: bootstrap.App, uid: str, request: flask.Request, mission_id: str) -> Any:
    overrides = _parsed(ModifyMission, request, optional=True).fields()
    return app.missions.clone(uid, mission_id, overrides)


def _list(app: bootstrap.App, uid: str, request: flask.Request, _: str) -> Any:
    limit = _int_arg(request, "limit", DEFAULT_LIST_LIMIT)
    status, schedule_id = request.args.get("status"), request.args.get("schedule_id")
    return {"missions": app.missions.missions_of(uid, status, limit, schedule_id)}


def _events(app: bootstrap.App, uid: str, request: flask.Request, mission_id: str) -> Any:
    return {"events": app.missions.events(uid, mission_id, _int_arg(request, "after_seq", 0))}


def _on_mission(action: Callable[[MissionService, str, str], Any]) -> Handler:
    return lambda app, uid, _request, mission_id: action(app.missions, uid, mission_id)


def _create_schedule(app: bootstrap.App, uid: str, request: flask.Request, _: str) -> Any:
    request_body = _parsed(CreateSchedule, request)
    return app.schedules.view(app.schedules.create(uid, request_body))


def _list_schedules(app: bootstrap.App, uid: str, _request: flask.Request, _: str) -> Any:
    return {"schedules": [app.schedules.view(s) for s in app.schedules.schedules_of(uid)]}


def _modify_schedule(app: bootstrap.App, uid: str, request: flask.Request, sid: str) -> Any:
    fields = _parsed(ModifySchedule, request).fields()
    return app.schedules.view(app.schedules.modify(uid, sid, fields))


def _on_schedule(action: Callable[[ScheduleService, str, str], Any]) -> Handler:
    """A schedule action answered with the schedule as its owner sees it."""
    return lambda app, uid, _request, sid: app.schedules.view(action(app.schedules, uid, sid))


def _delete_schedule(app: bootstrap.App, uid: str, _request: flask.Request, sid: str) -> Any:
    app.schedules.delete(uid, sid)
    return {}


def _run_schedule(app: bootstrap.App, uid: str, _request: flask.Request, sid: str) -> Any:
    return app.schedules.run_now(uid, sid)


def _list_recipes(app: bootstrap.App, uid: str, _request: flask.Request, _: str) -> Any:
    return {"recipes": app.recipes.views(app.recipes.recipes_of(uid))}


def _create_recipe(app: bootstrap.App, uid: str, request: flask.Request, _: str) -> Any:
    recipes = app.recipes
    return recipes.view(recipes.create(uid, _parsed(CreateRecipe, request).fields()))


def _get_recipe(app: bootstrap.App, uid: str, request: flask.Request, recipe_id: str) -> Any:
    version = _int_arg(request, "version", 1) if "version" in request.args else None
    if version is not None and not 1 <= version <= MAX_SEQ:
        raise ValidationFailed(f"version must be between 1 and {MAX_SEQ}")
    return app.recipes.view(app.recipes.get(uid, recipe_id, version))


def _put_recipe(app: bootstrap.App, uid: str, request: flask.Request, recipe_id: str) -> Any:
    body = _parsed(CreateRecipe, request).fields()
    return app.recipes.view(app.recipes.new_version(uid, recipe_id, body))


def _delete_recipe(app: bootstrap.App, uid: str, _request: flask.Request, recipe_id: str) -> Any:
    app.recipes.delete(uid, recipe_id)
    return {}


def _recipe_mission(app: bootstrap.App, uid: str, request: flask.Request, recipe_id: str) -> Any:
    run = _parsed(RecipeRun, request, optional=True)
    return app.recipes.make_mission(uid, recipe_id, run.params, run.version)


def _save_as_recipe(app: bootstrap.App, uid: str, request: flask.Request, mission_id: str) -> Any:
    asked = _parsed(SaveAsRecipe, request, optional=True)
    mission = app.missions.get(uid, mission_id)
    saved = app.recipes.save_mission(uid, mission, asked.name, asked.description, asked.params)
    return app.recipes.view(saved)


def _rate(app: bootstrap.App, uid: str, request: flask.Request, mission_id: str) -> Any:
    rating = _parsed(RateMission, request)
    return app.missions.rate(uid, mission_id, rating.rating, rating.comment)


def _tool_stats(app: bootstrap.App, uid: str, _request: flask.Request, _: str) -> Any:
    return app.tool_stats.view(uid)


_STATE = (401, 404, 409, 503)
_READ = (401, 404, 503)
_BODY = (400, 413, 415, 422)
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("healthz", "GET", ("/healthz",), "Liveness of the API", 200, schemas.Health),
    Endpoint("openapi", "GET", ("/openapi.json",), "This description", 200, schemas.Out),
    Endpoint(
        "create",
        "POST",
        ("/missions", "/missions/create"),
        "Propose a mission",
        201,
        schemas.MissionOut,
        _create,
        (400, 401, 413, 415, 422, 503),
        CreateMission,
    ),
    Endpoint(
        "list",
        "GET",
        ("/missions",),
        "The caller's missions, newest first",
        200,
        schemas.MissionList,
        _list,
        (401, 422, 503),
        query=(
            QueryParam(
                "status",
                {"type": "string", "enum": [s.value for s in schemas.Status]},
                "Only missions in this status",
            ),
            QueryParam(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 100, "default": DEFAULT_LIST_LIMIT},
                "At most this many",
            ),
            QueryParam(
                "schedule_id",
                {"type": "string", "pattern": schemas.MISSION_ID_PATTERN},
                "Only the missions this schedule's fires created",
            ),
        ),
    ),
    Endpoint(
        "get",
        "GET",
        ("/missions/{mission_id}",),
        "One mission",
        200,
        schemas.MissionOut,
        _on_mission(MissionService.get),
        _READ,
    ),
    Endpoint(
        "approve",
        "POST",
        ("/missions/{mission_id}/approve",),
        "proposed → approved",
        200,
        schemas.MissionOut,
        _on_mission(MissionService.approve),
        _STATE,
    ),
    Endpoint(
        "execute",
        "POST",
        ("/missions/{mission_id}/execute",),
        "approved → queued, and one execution message",
        202,
        schemas.ExecuteAccepted,
        _on_mission(MissionService.execute),
        (*_STATE, 429),
    ),
    Endpoint(
        "modify",
        "PATCH",
        ("/missions/{mission_id}",),
        "Edit: any create field before it runs (approved → proposed); the budget and the "
        "allowed domains while paused or failed",
        200,
        schemas.MissionOut,
        _modify,
        (*_STATE, *_BODY),
        ModifyMission,
    ),
    Endpoint(
        "pause",
        "POST",
        ("/missions/{mission_id}/pause",),
        "Pause: queued at once, running at the next step boundary (a crawl between pages)",
        200,
        schemas.MissionOut,
        _on_mission(MissionService.pause),
        _STATE,
    ),
    Endpoint(
        "resume",
        "POST",
        ("/missions/{mission_id}/resume",),
        "paused → queued, and one execution message: it carries on where it stopped",
        202,
        schemas.ExecuteAccepted,
        _on_mission(MissionService.resume),
        (*_STATE, 429),
    ),
    Endpoint(
        "retry",
        "POST",
        ("/missions/{mission_id}/retry",),
        "failed → queued for the next run, from the failed step (budget and scope amendable)",
        202,
        schemas.ExecuteAccepted,
        _retry,
        (*_STATE, *_BODY, 429),
        AmendMission,
        body_required=False,
    ),
    Endpoint(
        "clone",
        "POST",
        ("/missions/{mission_id}/clone",),
        "A new proposed mission with the same fields (any of them overridden)",
        201,
        schemas.MissionOut,
        _clone,
        (401, 404, 503, *_BODY),
        ModifyMission,
        body_required=False,
    ),
    Endpoint(
        "cancel",
        "POST",
        ("/missions/{mission_id}/cancel",),
        "Cancel now, or at the next step boundary when running",
        200,
        schemas.MissionOut,
        _on_mission(MissionService.cancel),
        _STATE,
    ),
    Endpoint(
        "progress",
        "GET",
        ("/missions/{mission_id}/progress",),
        "Where the mission is",
        200,
        schemas.ProgressOut,
        _on_mission(MissionService.progress),
        _READ,
    ),
    Endpoint(
        "events",
        "GET",
        ("/missions/{mission_id}/events",),
        "The event log, by seq",
        200,
        schemas.EventList,
        _events,
        (401, 404, 422, 503),
        query=(
            QueryParam(
                "after_seq",
                {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0},
                "Only events after this seq",
            ),
        ),
    ),
    Endpoint(
        "artifact",
        "GET",
        ("/missions/{mission_id}/artifact",),
        "The mission's result",
        200,
        schemas.ArtifactOut,
        _on_mission(MissionService.artifact),
        _READ,
    ),
    Endpoint(
        "create_schedule",
        "POST",
        ("/schedules",),
        "A recurring mission: its cron in a time zone, with the next five fires",
        201,
        schemas.ScheduleOut,
        _create_schedule,
        (400, 401, 413, 415, 422, 429, 503),
        CreateSchedule,
    ),
    Endpoint(
        "list_schedules",
        "GET",
        ("/schedules",),
        "The caller's schedules, newest first",
        200,
        schemas.ScheduleList,
        _list_schedules,
        (401, 503),
    ),
    Endpoint(
        "get_schedule",
        "GET",
        ("/schedules/{schedule_id}",),
        "One schedule, with its history and next five fires",
        200,
        schemas.ScheduleOut,
        _on_schedule(lambda schedules, uid, sid: schedules.get(uid, sid)),
        _READ,
    ),
    Endpoint(
        "modify_schedule",
        "PATCH",
        ("/schedules/{schedule_id}",),
        "Edit a schedule (its next fire is recomputed)",
        200,
        schemas.ScheduleOut,
        _modify_schedule,
        (*_READ, *_BODY),
        ModifySchedule,
    ),
    Endpoint(
        "pause_schedule",
        "POST",
        ("/schedules/{schedule_id}/pause",),
        "Stop firing until resumed",
        200,
        schemas.ScheduleOut,
        _on_schedule(lambda schedules, uid, sid: schedules.pause(uid, sid)),
        _READ,
    ),
    Endpoint(
        "resume_schedule",
        "POST",
        ("/schedules/{schedule_id}/resume",),
        "Fire again from the next cron time (what was missed is not caught up)",
        200,
        schemas.ScheduleOut,
        _on_schedule(lambda schedules, uid, sid: schedules.resume(uid, sid)),
        _READ,
    ),
    Endpoint(
        "run_schedule",
        "POST",
        ("/schedules/{schedule_id}/run",),
        "Fire now, outside the cron: a new mission, queued",
        202,
        schemas.RunAccepted,
        _run_schedule,
        (*_READ, 429),
    ),
    Endpoint(
        "delete_schedule",
        "DELETE",
        ("/schedules/{schedule_id}",),
        "Delete a schedule (its missions stay)",
        204,
        schemas.Empty,
        _delete_schedule,
        _READ,
    ),
    Endpoint(
        "list_recipes",
        "GET",
        ("/recipes",),
        "The built-in recipes and the caller's, with their usage",
        200,
        schemas.RecipeList,
        _list_recipes,
        (401, 503),
    ),
    Endpoint(
        "create_recipe",
        "POST",
        ("/recipes",),
        "A mission template with typed params (its version 1)",
        201,
        schemas.RecipeOut,
        _create_recipe,
        (401, 503, *_BODY),
        CreateRecipe,
    ),
    Endpoint(
        "get_recipe",
        "GET",
        ("/recipes/{recipe_id}",),
        "One recipe, as its latest version has it (or ?version=n)",
        200,
        schemas.RecipeOut,
        _get_recipe,
        (401, 404, 422, 503),
        query=(
            QueryParam(
                "version",
                {"type": "integer", "minimum": 1, "maximum": MAX_SEQ},
                "An earlier version",
            ),
        ),
    ),
    Endpoint(
        "update_recipe",
        "PUT",
        ("/recipes/{recipe_id}",),
        "A new version of the recipe (earlier versions stay usable)",
        200,
        schemas.RecipeOut,
        _put_recipe,
        (*_READ, *_BODY),
        CreateRecipe,
    ),
    Endpoint(
        "delete_recipe",
        "DELETE",
        ("/recipes/{recipe_id}",),
        "Delete a recipe (missions and schedules made from it stay)",
        204,
        schemas.Empty,
        _delete_recipe,
        _READ,
    ),
    Endpoint(
        "recipe_mission",
        "POST",
        ("/recipes/{recipe_id}/missions",),
        "A proposed mission from the recipe and params (each checked against its type)",
        201,
        schemas.MissionOut,
        _recipe_mission,
        (*_READ, *_BODY),
        RecipeRun,
        body_required=False,
    ),
    Endpoint(
        "save_as_recipe",
        "POST",
        ("/missions/{mission_id}/save-as-recipe",),
        "A new recipe from the mission's fields, the named ones made params",
        201,
        schemas.RecipeOut,
        _save_as_recipe,
        (*_READ, *_BODY),
        SaveAsRecipe,
        body_required=False,
    ),
    Endpoint(
        "feedback",
        "POST",
        ("/missions/{mission_id}/feedback",),
        "Rate a finished mission 1-5 (again: replaces); ratings teach tool selection",
        200,
        schemas.MissionOut,
        _rate,
        (*_STATE, *_BODY),
        RateMission,
    ),
    Endpoint(
        "tool_stats",
        "GET",
        ("/stats/tools",),
        "Per tool, for the caller's missions and everyone's: outcomes, durations, costs, "
        "ratings, and the confidence adjustment ratings give it",
        200,
        schemas.ToolStatsList,
        _tool_stats,
        (401, 503),
    ),
)
BY_NAME = {endpoint.name: endpoint for endpoint in ENDPOINTS}
URLS = Map(
    [
        Rule(
            re.sub(r"\{(\w+)\}", r"<\1>", path),
            endpoint=e.name,
            methods=[e.method],
        )
        for e in ENDPOINTS
        for path in e.paths
    ],
    strict_slashes=False,
)


def handle(request: flask.Request, app: bootstrap.App | None = None) -> flask.Response:
    configure_logging()
    app = app or bootstrap.app()
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS":
        return _with_cors(flask.Response(status=204), origin, app, preflight=True)
    return _with_cors(_dispatch(request, app), origin, app)


def _dispatch(request: flask.Request, app: bootstrap.App) -> flask.Response:
    try:
        return _answer(request, app)
    except ServiceError as e:
        # Answered as its class says: a new subclass is mapped like its parent.
        response = _error(e.status, e.code, str(e))
        if e.status >= 500:  # ours, not the caller's: worth a look when it keeps happening
            log.warning("answered %s", e.status, extra={"path": request.path, "error": str(e)})
        if isinstance(e, MethodNotAllowed):
            response.headers["Allow"] = e.allowed
        return response
    except Exception:
        # Logged with its stack for us; the caller gets a code and a message, never internals.
        log.exception("unhandled error", extra={"path": request.path})
        return _error(500, "internal", "Something went wrong on our side; try again later")


def _answer(request: flask.Request, app: bootstrap.App) -> flask.Response:
    name, args = _route(request)
    endpoint = BY_NAME[name]
    if name == "healthz":
        return _json({"status": "ok"}, 200)
    if name == "openapi":
        from buddy.entrypoints.openapi import document

        return _json(document(ENDPOINTS, app.tools), 200)
    assert endpoint.handler is not None
    uid = _authenticate(request, app)
    unknown = set(request.args) - {q.name for q in endpoint.query}
    if unknown:
        raise ValidationFailed(f"Unknown query parameters: {', '.join(sorted(unknown))}")
    target = ""
    for name, missing in _PATH_IDS.items():
        if name in args:
            target = args[name]
            if not valid_mission_id(target):
                raise missing(target[:64])
    result = endpoint.handler(app, uid, request, target)
    if endpoint.response is schemas.Empty:
        return flask.Response(status=endpoint.status)
    body = endpoint.response.model_validate(result).model_dump(mode="json")
    return _json(body, endpoint.status)


def _route(request: flask.Request) -> tuple[str, dict[str, Any]]:
    try:
        name, args = URLS.bind_to_environ(request.environ).match()
    except routing.NotFound:
        raise NotFound("No such route") from None
    except routing.MethodNotAllowed as e:
        raise MethodNotAllowed(", ".join(e.valid_methods or [])) from None
    return str(name), dict(args)


def _with_cors(
    response: flask.Response, origin: str | None, app: bootstrap.App, preflight: bool = False
) -> flask.Response:
    """Only the dashboard's origins get CORS headers; browsers refuse everyone else."""
    if origin and origin in app.settings.cors_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        if preflight:
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
    return response


def _authenticate(request: flask.Request, app: bootstrap.App) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Send Authorization: Bearer <Firebase ID token>")
    return app.verifier.verify(token.strip())


def _body(request: flask.Request) -> Any:
    too_large = PayloadTooLarge(f"The body is over {MAX_BODY_BYTES} bytes")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise too_large
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise too_large
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Send Content-Type: application/json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise MalformedJson("The body is not valid JSON") from e


def _int_arg(request: flask.Request, name: str, default: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as e:
        raise ValidationFailed(f"{name} must be an integer") from e


def _json(body: Any, status: int) -> flask.Response:
    text = json.dumps(body, ensure_ascii=False)
    return flask.Response(text, status=status, mimetype="application/json")


def not_found() -> flask.Response:
    """For paths the framework's own router refuses before ours sees them."""
    error = NotFound("No such route")
    return _error(error.status, error.code, str(error))


def _error(status: int, code: str, message: str) -> flask.Response:
    return _json({"error": {"code": code, "message": message}}, status)
