"""The aggregates mission writes keep (domain.stats), on Cloud Firestore (or its emulator).

    tool_stats/{tool}~{intent}~{shard}        everyone's missions, sharded
    users/{uid}/tool_stats/{tool}~{intent}    one owner's missions
    recipe_counts/{recipe_id}~{shard}         a recipe's uses (built-ins sharded: everyone's)

Every document holds `counters`, a map of increments. A mission's write adds its delta to
them in the same batch (`add_tally`), so a count is never lost or doubled by a retry or a
crash. Many missions ending at once spread over the shards (Firestore sustains about one
write per second per document); readers sum the shards.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from google.cloud import firestore

from buddy.adapters.firestore_base import TIMEOUT_SECONDS, unavailable_is_ours
from buddy.domain.recipe import BUILTIN_IDS
from buddy.domain.stats import Counters, Tally, merged

TOOL_SHARDS = 8
BUILTIN_RECIPE_SHARDS = 8


def add_tally(db: firestore.Client, batch: Any, tally: Tally) -> None:
    """Adds a write's delta of the aggregates to its batch."""
    for key, counters in tally.items():
        kind, *parts = key
        document: dict[str, Any] = {"counters": _increments(counters)}
        if kind == "tool":
            tool, intent = parts
            ref = db.collection("tool_stats").document(
                f"{tool}~{intent}~{random.randrange(TOOL_SHARDS)}"
            )
            document |= {"tool": tool, "intent": intent}
        elif kind == "owner_tool":
            uid, tool, intent = parts
            ref = db.collection("users").document(uid).collection("tool_stats")
            ref = ref.document(f"{tool}~{intent}")
            document |= {"tool": tool, "intent": intent}
        else:
            (recipe_id,) = parts
            ref = db.collection("recipe_counts").document(
                f"{recipe_id}~{random.randrange(recipe_shards(recipe_id))}"
            )
            document["recipe_id"] = recipe_id
        batch.set(ref, document, merge=True)


def recipe_shards(recipe_id: str) -> int:
    """A user's recipe is used by its owner; a built-in by everyone at once."""
    return BUILTIN_RECIPE_SHARDS if recipe_id in BUILTIN_IDS else 1


def _increments(counters: Mapping[str, float]) -> dict[str, Any]:
    """{"days.2026-12-01.completed": 1} → {"days": {"2026-12-01": {"completed": Increment(1)}}}"""
    nested: dict[str, Any] = {}
    for name, amount in counters.items():
        *path, leaf = name.split(".")
        place = nested
        for part in path:
            place = place.setdefault(part, {})
        place[leaf] = firestore.Increment(amount)
    return nested


def flattened(counters: Mapping[str, Any], prefix: str = "") -> Counters:
    flat: Counters = {}
    for name, value in counters.items():
        if isinstance(value, Mapping):
            flat |= flattened(value, f"{prefix}{name}.")
        elif isinstance(value, int | float):
            flat[f"{prefix}{name}"] = float(value)
    return flat


class FirestoreToolStats:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    @unavailable_is_ours
    def ratings(self, tool: str, intent: str) -> tuple[int, float]:
        refs = [
            self._db.collection("tool_stats").document(f"{tool}~{intent}~{shard}")
            for shard in range(TOOL_SHARDS)
        ]
        total = merged(_counters_of(self._db.get_all(refs, timeout=TIMEOUT_SECONDS)))
        return round(total.get("ratings", 0)), total.get("rating_sum", 0.0)

    @unavailable_is_ours
    def counters(self, owner_uid: str | None) -> dict[tuple[str, str], Counters]:
        if owner_uid is None:
            collection = self._db.collection("tool_stats")
        else:
            collection = self._db.collection("users").document(owner_uid).collection("tool_stats")
        found: dict[tuple[str, str], list[Counters]] = {}
        for snapshot in collection.stream(timeout=TIMEOUT_SECONDS):
            document = snapshot.to_dict() or {}
            key = (str(document.get("tool")), str(document.get("intent")))
            found.setdefault(key, []).append(flattened(document.get("counters") or {}))
        return {key: merged(shards) for key, shards in found.items()}


def _counters_of(snapshots: Iterable[Any]) -> list[Counters]:
    return [flattened((s.to_dict() or {}).get("counters") or {}) for s in snapshots if s.exists]


def usage_counters(db: firestore.Client, recipe_ids: list[str]) -> dict[str, Counters]:
    """Each recipe's counters, summed over its shards (one read of all of them)."""
    refs = [
        db.collection("recipe_counts").document(f"{recipe_id}~{shard}")
        for recipe_id in recipe_ids
        for shard in range(recipe_shards(recipe_id))
    ]
    found: dict[str, list[Counters]] = {}
    for snapshot in db.get_all(refs, timeout=TIMEOUT_SECONDS) if refs else []:
        if snapshot.exists:
            recipe_id = snapshot.id.rsplit("~", 1)[0]
            found.setdefault(recipe_id, []).append(
                flattened((snapshot.to_dict() or {}).get("counters") or {})
            )
    return {recipe_id: merged(shards) for recipe_id, shards in found.items()}
