"""Recipes: mission templates with typed params, the missions they make, and the recipes
made from missions.

A template is text with `{param}` placeholders (`{url.host}`: the host of a url param;
`{{` and `}}`: literal braces). In the inputs and the budget, a string that is exactly one
placeholder becomes the param's value with its type (`"{pages}"` → 3); anywhere else a
placeholder is replaced by the value's text. Versions are immutable: a change is a new
version, and a mission names the version it was made from.

Whether a param's value has its type is the API models' business (schemas.params_model);
this module checks the templates and fills them in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from buddy.domain.mission import Mission, OnLimit
from buddy.errors import ValidationFailed

ParamType = Literal["string", "integer", "number", "url"]
Value = str | int | float
BUILTIN = "builtin"  # the owner of the recipes that ship with the product
MAX_PARAMS = 20

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z_][a-z0-9_]*)(\.host)?\}|[{}]")
_WHOLE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Param:
    name: str
    type: ParamType
    required: bool = True
    default: Value | None = None
    description: str = ""


@dataclass(frozen=True)
class RecipeScope:
    allowed_domains: tuple[str, ...] = ()  # templates


@dataclass(frozen=True)
class Recipe:
    """A recipe as one of its versions has it (`version`), and where its history is."""

    recipe_id: str
    owner_uid: str
    name: str
    objective: str
    params: tuple[Param, ...]
    created_at: datetime
    updated_at: datetime
    version_created_at: datetime
    description: str = ""
    scope: RecipeScope = RecipeScope()
    budget_usd: float | str = 1.0
    tool: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    on_limit: OnLimit = "fail"
    version: int = 1
    latest_version: int = 1

    @property
    def builtin(self) -> bool:
        return self.owner_uid == BUILTIN

    def visible_to(self, uid: str) -> bool:
        return self.builtin or self.owner_uid == uid

    def reference(self, params: Mapping[str, Value]) -> dict[str, Any]:
        """What a mission made from this version says about where it came from."""
        return {"recipe_id": self.recipe_id, "version": self.version, "params": dict(params)}


@dataclass(frozen=True)
class Usage:
    """Missions made from a recipe, and how the finished ones ended."""

    uses: int = 0
    completed: int = 0
    failed: int = 0


# The fields a recipe's body gives (a create, or a new version).
TEMPLATE_FIELDS = (
    "name",
    "description",
    "objective",
    "params",
    "scope",
    "budget_usd",
    "tool",
    "inputs",
    "on_limit",
)


def new(recipe_id: str, owner_uid: str, now: datetime, body: Mapping[str, Any]) -> Recipe:
    """Version 1 of a recipe, its templates checked."""
    recipe = Recipe(
        recipe_id=recipe_id,
        owner_uid=owner_uid,
        created_at=now,
        updated_at=now,
        version_created_at=now,
        **_template(body),
    )
    check(recipe)
    return recipe


def next_version(recipe: Recipe, now: datetime, body: Mapping[str, Any]) -> Recipe:
    """The recipe's next version: everything from `body`, the earlier versions untouched."""
    version = recipe.latest_version + 1
    after = replace(
        recipe,
        **_template(body),
        version=version,
        latest_version=version,
        updated_at=now,
        version_created_at=now,
    )
    check(after)
    return after


def _template(body: Mapping[str, Any]) -> dict[str, Any]:
    given = {k: body[k] for k in TEMPLATE_FIELDS if k in body}
    if "params" in given:
        given["params"] = tuple(p if isinstance(p, Param) else Param(**p) for p in given["params"])
    if "scope" in given:
        scope = given["scope"]
        domains = scope.get("allowed_domains", ()) if isinstance(scope, Mapping) else scope
        given["scope"] = RecipeScope(tuple(domains))
    return given


def check(recipe: Recipe) -> None:
    """Raises ValidationFailed naming what is wrong with the recipe's params or templates."""
    names = [p.name for p in recipe.params]
    if len(names) > MAX_PARAMS:
        raise ValidationFailed(f"params: at most {MAX_PARAMS}")
    for name in {n for n in names if names.count(n) > 1}:
        raise ValidationFailed(f"params: {name!r} is declared twice")
    for param in recipe.params:
        if param.required and param.default is not None:
            raise ValidationFailed(
                f"params.{param.name}: a param with a default is not required "
                "(say required: false, or give no default)"
            )
        if not param.required and param.default is None:
            raise ValidationFailed(f"params.{param.name}: an optional param needs a default")
    types = {p.name: p.type for p in recipe.params}
    for where, text in _template_strings(recipe):
        for name, host in _placeholders(text, where):
            if name not in types:
                known = ", ".join(sorted(types)) or "none declared"
                raise ValidationFailed(f"{where}: {{{name}}} is not a param (params: {known})")
            if host and types[name] != "url":
                raise ValidationFailed(f"{where}: {{{name}.host}} needs a url param")
    if isinstance(recipe.budget_usd, str):
        whole = _WHOLE.fullmatch(recipe.budget_usd)
        if whole is None or types.get(whole.group(1)) not in {"integer", "number"}:
            raise ValidationFailed(
                "budget_usd: give a number, or one placeholder of an integer or number param "
                "such as '{budget}'"
            )


def _template_strings(recipe: Recipe) -> list[tuple[str, str]]:
    found = [("objective", recipe.objective)]
    found += [(f"scope.allowed_domains.{i}", d) for i, d in enumerate(recipe.scope.allowed_domains)]
    found += _strings_in(recipe.inputs, "inputs")
    if isinstance(recipe.budget_usd, str):
        found.append(("budget_usd", recipe.budget_usd))
    return found


def _strings_in(value: Any, where: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in _strings_in(v, f"{where}.{k}")]
    if isinstance(value, list | tuple):
        return [s for i, v in enumerate(value) for s in _strings_in(v, f"{where}.{i}")]
    return []


def _placeholders(text: str, where: str) -> list[tuple[str, bool]]:
    found = []
    for match in _PLACEHOLDER.finditer(text):
        token = match.group(0)
        if token in {"{{", "}}"}:
            continue
        if match.group(1) is None:
            raise ValidationFailed(
                f"{where}: a lone {token!r} (placeholders are {{name}}; write {token * 2} "
                "for the brace itself)"
            )
        found.append((match.group(1), bool(match.group(2))))
    return found


# ---- filling in ----------------------------------------------------------------------------


def resolved(recipe: Recipe, given: Mapping[str, Value]) -> dict[str, Value]:
    """The params a mission is made with: those given, and the defaults of the rest (the
    given values already have their types; a missing required one is the model's 422)."""
    values = {p.name: p.default for p in recipe.params if p.default is not None}
    values.update(given)
    return values


def mission_body(recipe: Recipe, params: Mapping[str, Value]) -> dict[str, Any]:
    """The create body this version makes with these params."""
    return {
        "objective": fill(recipe.objective, params),
        "scope": {"allowed_domains": [fill(d, params) for d in recipe.scope.allowed_domains]},
        "budget_usd": _filled_value(recipe.budget_usd, params),
        "tool": recipe.tool,
        "inputs": _filled_value(dict(recipe.inputs), params),
        "on_limit": recipe.on_limit,
    }


def fill(text: str, params: Mapping[str, Value]) -> str:
    def replacement(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in {"{{", "}}"}:
            return token[0]
        value = params[match.group(1)]
        if match.group(2):
            return urlsplit(str(value)).hostname or ""
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # a number param given 3 reads "3" in a text
        return value if isinstance(value, str) else json.dumps(value)

    return _PLACEHOLDER.sub(replacement, text)


def _filled_value(value: Any, params: Mapping[str, Value]) -> Any:
    def filled(text: str) -> Any:
        whole = _WHOLE.fullmatch(text)
        return params[whole.group(1)] if whole else fill(text, params)

    return _strings_changed(value, filled)


def _strings_changed(value: Any, change: Callable[[str], Any]) -> Any:
    """A JSON value with each string in it changed (maps and lists rebuilt)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, Mapping):
        return {k: _strings_changed(v, change) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strings_changed(v, change) for v in value]
    return value


SAMPLES: Mapping[str, Value] = {
    "string": "sample",
    "integer": 1,
    "number": 1.0,
    "url": "https://example.com/",
}


def sample_params(recipe: Recipe) -> dict[str, Value]:
    """Values of each param's type (its default where it has one): a recipe whose mission
    cannot be made even from these is refused when it is saved."""
    return {p.name: p.default if p.default is not None else SAMPLES[p.type] for p in recipe.params}


# ---- a recipe from a mission ---------------------------------------------------------------


def from_mission(mission: Mission, fields: Sequence[str] | None) -> dict[str, Any]:
    """A recipe body with the mission's fields, the named ones (objective, budget_usd,
    inputs.<key>) turned into params whose defaults are the mission's values. By default
    every input becomes a param (the objective, when there are none); an input's text found
    in the objective is replaced by its placeholder there, and a url input's host in the
    allowed domains by `{param.host}`."""
    inputs = dict(mission.inputs)
    if fields is None:  # by default every input, or the objective when there are none
        fields = [f"inputs.{k}" for k in inputs] or ["objective"]
    objective = _escaped(mission.objective)
    domains = list(mission.scope.allowed_domains)
    template_inputs: dict[str, Any] = _strings_changed(inputs, _escaped)
    budget: float | str = mission.budget_usd
    params: list[Param] = []
    for path in dict.fromkeys(fields):
        if path == "objective":
            params.append(Param("objective", "string", False, mission.objective))
            objective = "{objective}"
        elif path == "budget_usd":
            params.append(Param("budget_usd", "number", False, mission.budget_usd))
            budget = "{budget_usd}"
        elif path.startswith("inputs.") and path[len("inputs.") :] in inputs:
            key = path[len("inputs.") :]
            name = _param_name(key)
            value = inputs[key]
            kind = _type_of(value, path)
            params.append(Param(name, kind, False, value))
            template_inputs[key] = "{" + name + "}"
            if isinstance(value, str) and value and objective != "{objective}":
                objective = _placed(objective, _escaped(value), "{" + name + "}")
            if kind == "url":
                host = urlsplit(str(value)).hostname
                domains = ["{" + name + ".host}" if d == host else d for d in domains]
        else:
            keys = ", ".join(f"inputs.{k}" for k in inputs) or "no inputs"
            raise ValidationFailed(
                f"params: {path!r} is not a field of the mission (objective, budget_usd, {keys})"
            )
    names = [p.name for p in params]
    if len(set(names)) < len(names):
        raise ValidationFailed(f"params: two fields make the same param name ({names})")
    return {
        "objective": objective,
        "params": params,
        "scope": {"allowed_domains": domains},
        "budget_usd": budget,
        "tool": mission.tool,
        "inputs": template_inputs,
        "on_limit": mission.on_limit,
    }


def _placed(text: str, value: str, placeholder: str) -> str:
    """`value` replaced by the placeholder where it stands on its own (not inside a word:
    a query "a" is not the "a" of "search")."""
    before = r"(?<!\w)" if value[0].isalnum() or value[0] == "_" else ""
    after = r"(?!\w)" if value[-1].isalnum() or value[-1] == "_" else ""
    return re.sub(before + re.escape(value) + after, lambda _: placeholder, text)


def _param_name(key: str) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", key.lower())[:40]
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else f"p_{name}"[:40]


def _type_of(value: Any, path: str) -> ParamType:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValidationFailed(f"params: {path} is not text or a number; it can only stay as it is")
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    try:
        parts = urlsplit(value)
        is_url = parts.scheme in {"http", "https"} and bool(parts.hostname)
    except ValueError:  # "http://[oops": not a URL anyone could fetch
        is_url = False
    return "url" if is_url else "string"


def _escaped(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# ---- the recipes that ship with the product ------------------------------------------------

_SHIPPED = datetime(2026, 12, 1, tzinfo=UTC)


def _builtin(recipe_id: str, **fields: Any) -> Recipe:
    return Recipe(
        recipe_id=recipe_id,
        owner_uid=BUILTIN,
        created_at=_SHIPPED,
        updated_at=_SHIPPED,
        version_created_at=_SHIPPED,
        **fields,
    )


BUILTINS: tuple[Recipe, ...] = (
    _builtin(
        "builtin-extract-page",
        name="Extract a page",
        description="Fetch one web page and keep its title and main text",
        objective="Extract the main text of {url}",
        params=(Param("url", "url", description="The page, e.g. https://example.com/post"),),
        scope=RecipeScope(("{url.host}",)),
        tool="web_extract",
        inputs={"url": "{url}"},
    ),
    _builtin(
        "builtin-calculate",
        name="Calculate",
        description="Evaluate an arithmetic expression safely",
        objective="Calculate {expression}",
        params=(Param("expression", "string", description="e.g. 2*(3+4) or sqrt(2)**2"),),
        tool="calculate",
        inputs={"expression": "{expression}"},
    ),
    _builtin(
        "builtin-search-web",
        name="Search the web",
        description="Ask the configured search provider and keep the ranked results",
        objective="Search the web for {query}",
        params=(
            Param("query", "string", description="What to look for"),
            Param("max_results", "integer", False, 5, "How many results to keep (1-20)"),
        ),
        tool="web_search",
        inputs={"query": "{query}", "max_results": "{max_results}"},
    ),
    _builtin(
        "builtin-research",
        name="Research a topic",
        description="Search, read the best sources on one site, and write a cited report",
        objective="Research {topic}",
        params=(
            Param("topic", "string", description="The question, e.g. Firestore listener limits"),
            Param("site", "string", description="The site to read, e.g. firebase.google.com"),
            Param("max_sources", "integer", False, 3, "How many sources to read (1-10)"),
        ),
        scope=RecipeScope(("{site}",)),
        tool="research",
        inputs={"query": "{topic}", "max_sources": "{max_sources}"},
    ),
)
BUILTIN_IDS = {recipe.recipe_id: recipe for recipe in BUILTINS}
