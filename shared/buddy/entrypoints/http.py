"""The HTTP API: parse the request, call the service, map errors to statuses."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import flask
import pydantic
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from buddy import bootstrap
from buddy.domain.lifecycle import InvalidTransition, MissionNotFound
from buddy.domain.progress import iso
from buddy.logs import configure_logging
from buddy.schemas import CreateMission, valid_mission_id, validation_message
from buddy.service.missions import DEFAULT_LIST_LIMIT, MissionService
from buddy.service.ports import DependencyUnavailable, ValidationFailed

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
HIDDEN_FIELDS = frozenset({"run_id", "event_seq"})


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str


def _rules() -> Map:
    post, get = ["POST"], ["GET"]
    return Map(
        [
            Rule("/healthz", endpoint="healthz", methods=get),
            Rule("/missions", endpoint="create", methods=post),
            Rule("/missions/create", endpoint="create", methods=post),
            Rule("/missions", endpoint="list", methods=get),
            Rule("/missions/<mission_id>", endpoint="get", methods=get),
            Rule("/missions/<mission_id>/approve", endpoint="approve", methods=post),
            Rule("/missions/<mission_id>/execute", endpoint="execute", methods=post),
            Rule("/missions/<mission_id>/cancel", endpoint="cancel", methods=post),
            Rule("/missions/<mission_id>/progress", endpoint="progress", methods=get),
            Rule("/missions/<mission_id>/events", endpoint="events", methods=get),
            Rule("/missions/<mission_id>/artifact", endpoint="artifact", methods=get),
        ],
        strict_slashes=False,
    )


URLS = _rules()


def handle(request: flask.Request) -> flask.Response:
    configure_logging()
    try:
        endpoint, args = URLS.bind_to_environ(request.environ).match()
        if endpoint == "healthz":
            return _json({"status": "ok"}, 200)
        uid = _authenticate(request)
        mission_id = args.get("mission_id")
        if mission_id is not None and not valid_mission_id(mission_id):
            raise MissionNotFound(mission_id[:64])
        body, status = ROUTES[endpoint](bootstrap.mission_service(), uid, request, mission_id)
        return _json(body, status)
    except NotFound:
        return _error(404, "not_found", "No such route")
    except MethodNotAllowed as e:
        allowed = ", ".join(e.valid_methods or [])
        return _error(405, "method_not_allowed", f"Use {allowed} on this route")
    except ApiError as e:
        return _error(e.status, e.code, e.message)
    except (MissionNotFound, InvalidTransition, ValidationFailed, DependencyUnavailable) as e:
        status, code = _STATUS_OF[type(e)]
        return _error(status, code, str(e))
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return _error(500, "internal", "Something went wrong on our side; try again later")


_STATUS_OF: dict[type[Exception], tuple[int, str]] = {
    MissionNotFound: (404, "not_found"),
    InvalidTransition: (409, "conflict"),
    ValidationFailed: (422, "validation_failed"),
    DependencyUnavailable: (503, "unavailable"),
}


def _authenticate(request: flask.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "Send Authorization: Bearer <Firebase ID token>")
    from buddy.adapters.auth import InvalidToken

    try:
        return bootstrap.token_verifier().verify(token.strip())
    except InvalidToken as e:
        raise ApiError(401, "unauthenticated", "The ID token is invalid or expired") from e


def _body(request: flask.Request) -> Any:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"The body is over {MAX_BODY_BYTES} bytes")
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"The body is over {MAX_BODY_BYTES} bytes")
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send Content-Type: application/json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "malformed_json", f"The body is not valid JSON: {e}") from e


def _int_arg(request: flask.Request, name: str, default: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as e:
        raise ValidationFailed(f"{name} must be an integer") from e


Route = Callable[[MissionService, str, flask.Request, str | None], tuple[Any, int]]


def _create(
    service: MissionService, uid: str, request: flask.Request, _: str | None
) -> tuple[Any, int]:
    try:
        command = CreateMission.model_validate(_body(request))
    except pydantic.ValidationError as e:
        raise ValidationFailed(validation_message(e)) from e
    return _public(service.create(uid, command)), 201


def _list(
    service: MissionService, uid: str, request: flask.Request, _: str | None
) -> tuple[Any, int]:
    limit = _int_arg(request, "limit", DEFAULT_LIST_LIMIT)
    missions = service.list(uid, request.args.get("status") or None, limit)
    return {"missions": [_public(m) for m in missions]}, 200


def _mission_route(action: Callable[[MissionService, str, str], Any], status: int = 200) -> Route:
    def route(
        service: MissionService, uid: str, request: flask.Request, mission_id: str | None
    ) -> tuple[Any, int]:
        assert mission_id is not None
        return _public(action(service, uid, mission_id)), status

    return route


def _events(
    service: MissionService, uid: str, request: flask.Request, mission_id: str | None
) -> tuple[Any, int]:
    assert mission_id is not None
    events = service.events(uid, mission_id, _int_arg(request, "after_seq", 0))
    return {"events": events}, 200


ROUTES: dict[str, Route] = {
    "create": _create,
    "list": _list,
    "get": _mission_route(MissionService.get),
    "approve": _mission_route(MissionService.approve),
    "execute": _mission_route(MissionService.execute, 202),
    "cancel": _mission_route(MissionService.cancel),
    "progress": _mission_route(MissionService.progress),
    "events": _events,
    "artifact": _mission_route(MissionService.artifact),
}


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in HIDDEN_FIELDS}


def _json(body: Any, status: int) -> flask.Response:
    text = json.dumps(body, default=_encode, ensure_ascii=False)
    return flask.Response(text, status=status, mimetype="application/json")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _error(status: int, code: str, message: str) -> flask.Response:
    return _json({"error": {"code": code, "message": message}}, status)
