"""Use cases of recipes: the owner's and the built-in ones, the missions they make, and
recipes saved from missions."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import pydantic

from buddy.domain import recipe as recipes
from buddy.domain.mission import Mission, NewEvent
from buddy.domain.progress import Clock
from buddy.domain.recipe import BUILTINS, Param, Recipe, Usage, Value
from buddy.errors import RecipeNotFound, ValidationFailed
from buddy.schemas import PARAM_TYPES, CreateMission, validation_message
from buddy.service.missions import MissionService, new_mission_id, proposed_from
from buddy.service.ports import MissionStore, RecipeStore

log = logging.getLogger(__name__)


def new_recipe_id() -> str:
    return "rcp_" + secrets.token_urlsafe(12)


@functools.lru_cache(maxsize=256)
def params_model(params: tuple[Param, ...]) -> type[pydantic.BaseModel]:
    """The model a recipe's params are validated with: each declared param with its type's
    rules, required unless it has a default, and no other."""
    # Fields p0, p1, … named by alias: a param may be called anything a model's own
    # attributes are (model_dump, _x) without clashing with them.
    declared: dict[str, Any] = {
        f"p{i}": (
            PARAM_TYPES[p.type],
            pydantic.Field(... if p.required else p.default, alias=p.name),
        )
        for i, p in enumerate(params)
    }
    config = pydantic.ConfigDict(extra="forbid", strict=True)
    return pydantic.create_model("RecipeParams", __config__=config, **declared)


def _with_checked_default(param: Param) -> Param:
    """The param with its default as its type has it (a number's 10**20 is 1e20), or a 422."""
    if param.default is None:
        return param
    try:
        value = pydantic.TypeAdapter(PARAM_TYPES[param.type]).validate_python(
            param.default, strict=True
        )
    except pydantic.ValidationError as e:
        message = validation_message(e, prefix=f"params.{param.name}.default")
        raise ValidationFailed(message.replace(".default.: ", ".default: ")) from e
    return replace(param, default=value)


@dataclass
class RecipeService:
    store: RecipeStore
    missions: MissionStore
    mission_service: MissionService  # validates the missions recipes make, as creates
    clock: Clock

    def recipes_of(self, owner_uid: str) -> list[Recipe]:
        """The built-in recipes, then the owner's, newest first."""
        return [*BUILTINS, *self.store.recipes_of(owner_uid)]

    def get(self, owner_uid: str, recipe_id: str, version: int | None = None) -> Recipe:
        recipe = self.store.get(recipe_id, version)
        if recipe is None or not recipe.visible_to(owner_uid):
            raise RecipeNotFound(recipe_id, version)
        return recipe

    def create(self, owner_uid: str, body: Mapping[str, Any]) -> Recipe:
        recipe = self._checked(recipes.new(new_recipe_id(), owner_uid, self.clock(), body))
        created = self.store.create(recipe)
        log.info("recipe created", extra={"recipe_id": recipe.recipe_id})
        return created

    def new_version(self, owner_uid: str, recipe_id: str, body: Mapping[str, Any]) -> Recipe:
        self._own(owner_uid, recipe_id)

        def make(latest: Recipe) -> Recipe:
            return self._checked(recipes.next_version(latest, self.clock(), body))

        return self.store.add_version(recipe_id, make)

    def delete(self, owner_uid: str, recipe_id: str) -> None:
        """The recipe goes; missions (and schedules) made from it stay as they are."""
        self._own(owner_uid, recipe_id)
        self.store.delete(recipe_id)
        log.info("recipe deleted", extra={"recipe_id": recipe_id})

    def mission_body(
        self, owner_uid: str, recipe_id: str, params: Mapping[str, Any], version: int | None
    ) -> tuple[CreateMission, dict[str, Any]]:
        """The create body the recipe's version makes with these params, validated as a
        create is, and the mission's reference to the recipe."""
        recipe = self.get(owner_uid, recipe_id, version)
        values = self._params(recipe, params)
        request = self._body(recipe, values, "the recipe's mission with these params")
        return request, recipe.reference(values)

    def make_mission(
        self, owner_uid: str, recipe_id: str, params: Mapping[str, Any], version: int | None
    ) -> Mission:
        """A proposed mission from a recipe's version (the latest unless given)."""
        request, reference = self.mission_body(owner_uid, recipe_id, params, version)
        made = proposed_from(request, new_mission_id(), owner_uid, self.clock())
        mission = replace(made, recipe=reference)
        said = f"Mission proposed from recipe {recipe_id} (version {reference['version']})"
        created = self.missions.create(mission, NewEvent("mission_created", said))
        log.info("mission from a recipe", extra={"mission_id": mission.mission_id})
        return created

    def save_mission(
        self,
        owner_uid: str,
        mission: Mission,
        name: str | None,
        description: str | None,
        params: list[str] | None,
    ) -> Recipe:
        """A new recipe from a mission's fields, the named ones made params."""
        body = recipes.from_mission(mission, params)
        body["name"] = name or _name_from(mission.objective)
        body["description"] = description or f"Saved from mission {mission.mission_id}"
        return self.create(owner_uid, body)

    def view(self, recipe: Recipe, usage: Usage | None = None) -> dict[str, Any]:
        """The recipe as callers see it, with its usage."""
        shown = {f.name: getattr(recipe, f.name) for f in fields(recipe)}
        counts = asdict(usage or self.usage([recipe])[recipe.recipe_id])
        return {**shown, **counts, "builtin": recipe.builtin}

    def views(self, found: list[Recipe]) -> list[dict[str, Any]]:
        usage = self.usage(found)
        return [self.view(recipe, usage[recipe.recipe_id]) for recipe in found]

    def usage(self, found: list[Recipe]) -> dict[str, Usage]:
        counted = self.store.usage([r.recipe_id for r in found])
        return {r.recipe_id: counted.get(r.recipe_id, Usage()) for r in found}

    # ---- helpers -----------------------------------------------------------------------------

    def _own(self, owner_uid: str, recipe_id: str) -> Recipe:
        """The caller's own recipe (a built-in is nobody's to change)."""
        recipe = self.get(owner_uid, recipe_id)
        if recipe.builtin:
            raise RecipeNotFound(recipe_id)
        return recipe

    def _checked(self, recipe: Recipe) -> Recipe:
        """A recipe whose defaults have their types and whose mission can be made (from its
        defaults, and sample values of the other params)."""
        recipe = replace(recipe, params=tuple(_with_checked_default(p) for p in recipe.params))
        samples = self._params(recipe, recipes.sample_params(recipe))
        self._body(recipe, samples, "the recipe's mission (sample params)")
        return recipe

    def _params(self, recipe: Recipe, given: Mapping[str, Any]) -> dict[str, Value]:
        try:
            checked = params_model(recipe.params).model_validate(dict(given))
        except pydantic.ValidationError as e:
            raise ValidationFailed(validation_message(e, prefix="params")) from e
        return recipes.resolved(recipe, checked.model_dump(by_alias=True))

    def _body(self, recipe: Recipe, values: Mapping[str, Value], what: str) -> CreateMission:
        try:
            request = CreateMission.model_validate(recipes.mission_body(recipe, values))
        except pydantic.ValidationError as e:
            raise ValidationFailed(f"{what}: {validation_message(e)}") from e
        self.mission_service.check_tool_and_inputs(request.tool, request.inputs)
        return request


def _name_from(objective: str) -> str:
    words = " ".join(objective.split())
    return words if len(words) <= 80 else words[:79] + "…"
