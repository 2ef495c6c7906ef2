"""OpenAPI 3.1 for the HTTP API, generated from its endpoint table and pydantic models."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from buddy import schemas
from buddy.config import MAX_BODY_BYTES

if TYPE_CHECKING:
    from buddy.entrypoints.http import Endpoint
    from buddy.tools import ToolRegistry

REF = "#/components/schemas/{model}"
ERROR_MEANING = {
    400: "The body is not valid JSON",
    401: "No Firebase ID token, or an invalid, expired or revoked one",
    404: "No such mission, schedule or recipe for this user (another user's is not found either)",
    409: "The mission's state does not allow this",
    413: f"The body is over {MAX_BODY_BYTES // 1024} KiB",
    415: "The body is not application/json",
    422: "The request is well-formed but its content is not acceptable",
    429: "Too many of this user's missions are queued or running (or, creating a schedule, "
    "too many schedules)",
    503: "Firestore or Pub/Sub is unreachable; nothing was changed",
}
PATH_IDS = {
    name: {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": schemas.MISSION_ID_PATTERN},
    }
    for name in ("mission_id", "schedule_id", "recipe_id")
}


# Request bodies are described as they are validated; everything else as it is serialised.
REQUESTS = frozenset(
    {
        schemas.CreateMission,
        schemas.ModifyMission,
        schemas.AmendMission,
        schemas.CreateSchedule,
        schemas.ModifySchedule,
        schemas.CreateRecipe,
        schemas.RecipeRun,
        schemas.SaveAsRecipe,
        schemas.RateMission,
    }
)


@functools.cache
def _components(models: tuple[type[Any], ...]) -> dict[str, Any]:
    pairs = [(m, "validation" if m in REQUESTS else "serialization") for m in models]
    _, definitions = models_json_schema(pairs, ref_template=REF)  # type: ignore[arg-type]
    return dict(definitions.get("$defs", {}))


def _ref(model: type[Any]) -> dict[str, str]:
    if model is schemas.Out:
        return {"type": "object"}
    return {"$ref": REF.format(model=model.__name__)}


def _operation(endpoint: Endpoint, path: str) -> dict[str, Any]:
    success: dict[str, Any] = {"description": endpoint.summary}
    if endpoint.response is not schemas.Empty:
        success["content"] = {"application/json": {"schema": _ref(endpoint.response)}}
    responses: dict[str, Any] = {str(endpoint.status): success}
    for status in endpoint.errors:
        responses[str(status)] = {
            "description": ERROR_MEANING[status],
            "content": {"application/json": {"schema": _ref(schemas.ErrorBody)}},
        }
    operation: dict[str, Any] = {
        "operationId": endpoint.name if path == endpoint.paths[0] else f"{endpoint.name}_alias",
        "summary": endpoint.summary,
        "responses": responses,
    }
    parameters = [param for name, param in PATH_IDS.items() if f"{{{name}}}" in path]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": False,
            "schema": q.schema,
            "description": q.description,
        }
        for q in endpoint.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.body_required,
            "content": {"application/json": {"schema": _ref(endpoint.body)}},
        }
    if endpoint.handler is None:
        operation["security"] = []
    return operation


def _with_tools(create: dict[str, Any], tools: ToolRegistry) -> dict[str, Any]:
    """The registry knows which tools exist and what inputs each takes."""
    properties = dict(create["properties"])
    properties["tool"] = {"anyOf": [{"enum": tools.names()}, {"type": "null"}], "default": None}
    inputs = {tool.name: tool.input_model.model_json_schema() for tool in tools}
    properties["inputs"] = {
        "anyOf": list(inputs.values()),
        "description": "Arguments of the mission's tool (of some tool when none is chosen)",
    }
    # A chosen tool takes only its own inputs.
    variants = [
        {"properties": {"tool": {"const": name}, "inputs": schema}, "required": ["tool"]}
        for name, schema in inputs.items()
    ]
    variants.append({"properties": {"tool": {"type": "null"}}})
    return {**create, "properties": properties, "anyOf": variants}


def document(endpoints: Iterable[Endpoint], tools: ToolRegistry) -> dict[str, Any]:
    endpoints = tuple(endpoints)
    models: set[type[BaseModel]] = {
        e.response for e in endpoints if e.response not in (schemas.Out, schemas.Empty)
    }
    models |= {e.body for e in endpoints if e.body is not None} | {schemas.ErrorBody}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        for path in endpoint.paths:
            paths.setdefault(path, {})[endpoint.method.lower()] = _operation(endpoint, path)
    components = _components(tuple(sorted(models, key=lambda m: m.__name__)))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Buddy Missions API",
            "version": "0.1.0",
            "description": "Propose, approve and execute missions; pause, resume, edit, "
            "retry and clone them; read their progress, events and artifacts; run them on "
            "schedules and from recipes; rate them, and read what ratings teach tool "
            "selection. Live progress: listen to missions/{id} in Firestore.",
        },
        "servers": [{"url": "/"}],
        "security": [{"firebaseIdToken": []}],
        "paths": paths,
        "components": {
            "schemas": {
                **components,
                "CreateMission": _with_tools(components["CreateMission"], tools),
                "ModifyMission": _with_tools(components["ModifyMission"], tools),
            },
            "securitySchemes": {
                "firebaseIdToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
