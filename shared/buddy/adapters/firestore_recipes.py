"""RecipeStore on Cloud Firestore (or its emulator).

    recipes/{recipe_id}                 the recipe as its latest version has it (owner reads)
    recipes/{recipe_id}/versions/{n}    each version, never changed once written
    recipe_counts/{recipe_id}~{shard}   its usage (kept by mission writes, firestore_stats)

The built-in recipes live in the code (domain.recipe.BUILTINS); only their usage is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from pydantic import TypeAdapter

from buddy.adapters.firestore_base import APPLY_ATTEMPTS, TIMEOUT_SECONDS, unavailable_is_ours
from buddy.adapters.firestore_stats import usage_counters
from buddy.domain.recipe import BUILTIN_IDS, Recipe, Usage
from buddy.errors import DependencyUnavailable, RecipeNotFound

_RECIPE: TypeAdapter[Recipe] = TypeAdapter(Recipe)


def recipe_document(recipe: Recipe) -> dict[str, Any]:
    return dict(_RECIPE.dump_python(recipe))


def recipe_from(document: Mapping[str, Any]) -> Recipe:
    return _RECIPE.validate_python(document)


class FirestoreRecipeStore:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client
        self._recipes = client.collection("recipes")

    @unavailable_is_ours
    def create(self, recipe: Recipe) -> Recipe:
        ref = self._recipes.document(recipe.recipe_id)
        document = recipe_document(recipe)
        batch = self._db.batch()
        batch.create(ref, document)
        batch.create(ref.collection("versions").document(str(recipe.version)), document)
        batch.commit(timeout=TIMEOUT_SECONDS)
        return recipe

    @unavailable_is_ours
    def get(self, recipe_id: str, version: int | None = None) -> Recipe | None:
        if recipe_id in BUILTIN_IDS:
            builtin = BUILTIN_IDS[recipe_id]
            return builtin if version in {None, builtin.version} else None
        ref = self._recipes.document(recipe_id)
        latest = ref.get(timeout=TIMEOUT_SECONDS)
        if not latest.exists:
            return None
        recipe = recipe_from(latest.to_dict() or {})
        if version is None or version == recipe.version:
            return recipe
        snapshot = ref.collection("versions").document(str(version)).get(timeout=TIMEOUT_SECONDS)
        if not snapshot.exists:
            return None
        # An earlier version, with what the recipe is now (its latest version, its dates).
        earlier = recipe_from(snapshot.to_dict() or {})
        return _as_of(recipe, earlier)

    @unavailable_is_ours
    def recipes_of(self, owner_uid: str) -> list[Recipe]:
        query = (
            self._recipes.where(filter=firestore.FieldFilter("owner_uid", "==", owner_uid))
            .order_by("updated_at", direction=firestore.Query.DESCENDING)
            .limit(200)
        )
        return [recipe_from(s.to_dict() or {}) for s in query.stream(timeout=TIMEOUT_SECONDS)]

    @unavailable_is_ours
    def add_version(self, recipe_id: str, make: Callable[[Recipe], Recipe]) -> Recipe:
        """The next version is created (never overwritten: two racing edits make two
        versions, or the later one reads again) together with the recipe's new latest."""
        ref = self._recipes.document(recipe_id)
        for _ in range(APPLY_ATTEMPTS):
            snapshot = ref.get(timeout=TIMEOUT_SECONDS)
            if not snapshot.exists:
                raise RecipeNotFound(recipe_id)
            after = make(recipe_from(snapshot.to_dict() or {}))
            document = recipe_document(after)
            batch = self._db.batch()
            batch.create(ref.collection("versions").document(str(after.version)), document)
            option = self._db.write_option(last_update_time=snapshot.update_time)
            batch.update(ref, document, option=option)
            try:
                batch.commit(timeout=TIMEOUT_SECONDS)
            except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Aborted):
                continue
            return after
        raise DependencyUnavailable(f"Recipe {recipe_id} is too busy right now; try again")

    @unavailable_is_ours
    def delete(self, recipe_id: str) -> None:
        """The recipe and its versions go; missions made from it keep their params."""
        ref = self._recipes.document(recipe_id)
        batch = self._db.batch()
        batch.delete(ref)  # first: from here on the recipe is gone for every reader
        batch.commit(timeout=TIMEOUT_SECONDS)
        versions = list(ref.collection("versions").list_documents())
        for start in range(0, len(versions), 400):
            batch = self._db.batch()
            for version in versions[start : start + 400]:
                batch.delete(version)
            batch.commit(timeout=TIMEOUT_SECONDS)

    @unavailable_is_ours
    def usage(self, recipe_ids: list[str]) -> dict[str, Usage]:
        counters = usage_counters(self._db, recipe_ids)
        return {
            recipe_id: Usage(
                round(c.get("uses", 0)),
                round(c.get("completed", 0)),
                round(c.get("failed", 0)),
            )
            for recipe_id, c in counters.items()
        }


def _as_of(latest: Recipe, earlier: Recipe) -> Recipe:
    return replace(
        earlier,
        latest_version=latest.latest_version,
        created_at=latest.created_at,
        updated_at=latest.updated_at,
    )
