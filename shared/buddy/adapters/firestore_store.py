"""MissionStore on Cloud Firestore (or its emulator)."""

from __future__ import annotations

import copy
import functools
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore

from buddy.domain.eta import DurationStat, merged, updated
from buddy.domain.lifecycle import (
    ACTIVE,
    Change,
    MissionNotFound,
    NewEvent,
    active_delta,
    event_record,
    with_updates,
)
from buddy.domain.progress import Clock
from buddy.service.ports import (
    Decide,
    DependencyUnavailable,
    StorageRejected,
    TooManyActiveMissions,
)

P = ParamSpec("P")
R = TypeVar("R")
TIMEOUT_SECONDS = 10.0
APPLY_ATTEMPTS = 12
SWEEP_PAGE = 200
KNOWN_MISSIONS = 512  # versions remembered per process (a mission document is a few KiB)


def _unavailable_is_ours(method: Callable[P, R]) -> Callable[P, R]:
    """Firestore being down or slow becomes DependencyUnavailable (HTTP 503)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as e:
            raise DependencyUnavailable("Firestore is unavailable") from e

    return wrapper


class FirestoreMissionStore:
    """Missions, their events and artifacts, and each owner's count of active missions.

    The store remembers the version (update time) of the missions it last read or wrote.
    `apply` decides on that copy and commits on condition that the mission is still at that
    version, which saves a read per write when this process is the mission's only writer
    (a worker during a run). If anyone else wrote in between, it reads and decides again.
    """

    def __init__(
        self, client: firestore.Client, clock: Clock, event_ttl: timedelta = timedelta(days=30)
    ) -> None:
        self._db = client
        self._clock = clock
        self._event_ttl = event_ttl
        self._missions = client.collection("missions")
        self._artifacts = client.collection("artifacts")
        # users/{uid}.active_missions: queued + running, kept in the commit of every change
        # into or out of those states, so a limit holds exactly under any concurrency.
        self._users = client.collection("users")
        self._known: OrderedDict[str, tuple[dict[str, Any], Any]] = OrderedDict()
        self._known_lock = threading.Lock()
        self.apply_reads = 0  # reads `apply` could not avoid (for tests and benchmarks)

    def _remember(self, mission_id: str, doc: dict[str, Any], version: Any) -> None:
        with self._known_lock:
            self._known[mission_id] = (copy.deepcopy(doc), version)
            self._known.move_to_end(mission_id)
            if len(self._known) > KNOWN_MISSIONS:
                self._known.popitem(last=False)

    def _recall(self, mission_id: str) -> tuple[dict[str, Any], Any] | None:
        """The remembered copy, taken out: nobody else holds it."""
        with self._known_lock:
            return self._known.pop(mission_id, None)

    def _event_doc(self, doc: dict[str, Any], seq: int, event: NewEvent) -> dict[str, Any]:
        return event_record(doc, seq, event, self._clock(), self._event_ttl)

    @_unavailable_is_ours
    def create(self, doc: dict[str, Any], event: NewEvent) -> dict[str, Any]:
        ref = self._missions.document(doc["mission_id"])
        stored = {**doc, "event_seq": 1}
        batch = self._db.batch()
        batch.create(ref, stored)
        batch.create(ref.collection("events").document("1"), self._event_doc(doc, 1, event))
        results = batch.commit(timeout=TIMEOUT_SECONDS)
        self._remember(doc["mission_id"], stored, results[0].update_time)
        return stored

    @_unavailable_is_ours
    def get(self, mission_id: str) -> dict[str, Any] | None:
        snapshot = self._missions.document(mission_id).get(timeout=TIMEOUT_SECONDS)
        if not snapshot.exists:
            return None
        doc = snapshot.to_dict()
        self._remember(mission_id, doc, snapshot.update_time)  # keeps a copy of its own
        return doc

    @_unavailable_is_ours
    def apply(self, mission_id: str, decide: Decide) -> dict[str, Any]:
        """Optimistic concurrency: the batch commits only if the mission (and, for a change
        into the active states, the owner's count) is unchanged since it was read; otherwise
        read and decide again. One hot document under many writers (twenty simultaneous
        executes) resolves in a few rounds, where lock-based transactions time out.
        """
        ref = self._missions.document(mission_id)
        known = self._recall(mission_id)
        if known is not None:
            doc, version = known
            try:
                change = decide(doc)
                if change != Change() and (written := self._commit(ref, doc, change, version)):
                    return written
            except Exception:
                pass  # perhaps a stale copy's verdict: ask again on a fresh read
        for attempt in range(APPLY_ATTEMPTS):
            snapshot = ref.get(timeout=TIMEOUT_SECONDS)
            self.apply_reads += 1
            if not snapshot.exists:
                raise MissionNotFound(mission_id)
            doc = snapshot.to_dict()
            change = decide(doc)
            if change == Change():
                self._remember(mission_id, doc, snapshot.update_time)
                return doc
            if written := self._commit(ref, doc, change, snapshot.update_time):
                return written
            time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
        raise DependencyUnavailable(f"Mission {mission_id} is too busy right now; try again")

    def _commit(
        self, ref: Any, doc: dict[str, Any], change: Change, version: Any
    ) -> dict[str, Any] | None:
        """Writes the change if the mission is still at `version`; None if it moved on."""
        batch, updates = self._batch(ref, doc, change)
        self._count_active(batch, doc, change)
        # The mission's write goes last: its result carries the version to remember.
        batch.update(ref, updates, option=self._db.write_option(last_update_time=version))
        try:
            results = batch.commit(timeout=TIMEOUT_SECONDS)
        except (gexc.FailedPrecondition, gexc.Aborted, gexc.AlreadyExists):
            return None
        except gexc.BadRequest as e:
            # InvalidArgument and the like (a document over 1 MiB): the same write would be
            # refused again, so this is no reason to retry or redeliver.
            raise StorageRejected(f"Firestore refused the write: {e.message}"[:300]) from e
        written = with_updates(doc, updates)
        self._remember(ref.id, written, results[-1].update_time)  # the mission's is last
        return written

    def _count_active(self, batch: Any, doc: dict[str, Any], change: Change) -> None:
        """Adds the owner's active-mission count to the batch when the change moves the
        mission into or out of the active states; refuses one over its limit."""
        delta = active_delta(doc, change)
        if not delta:
            return
        ref = self._users.document(doc["owner_uid"])
        if delta < 0 or change.active_limit is None:
            batch.set(ref, {"active_missions": firestore.Increment(delta)}, merge=True)
            return
        snapshot = ref.get(timeout=TIMEOUT_SECONDS)
        if snapshot.exists:
            active = max(int((snapshot.to_dict() or {}).get("active_missions") or 0), 0)
        else:  # the owner's first: count what is there (missions from before the counter)
            active = self._active_by_query(doc["owner_uid"])
        if active >= change.active_limit:
            raise TooManyActiveMissions(change.active_limit)
        if snapshot.exists:
            # On the version read: a concurrent change to the count makes this commit fail,
            # and the caller decides again on fresh figures.
            option = self._db.write_option(last_update_time=snapshot.update_time)
            batch.update(ref, {"active_missions": active + 1}, option=option)
        else:
            batch.create(ref, {"active_missions": active + 1})

    def _batch(self, ref: Any, doc: dict[str, Any], change: Change) -> tuple[Any, dict[str, Any]]:
        """The writes of a change, besides the mission update itself: events, side documents."""
        events = ref.collection("events")
        batch = self._db.batch()
        seq = int(doc.get("event_seq", 0))
        if change.retract_seq is not None and change.retract_seq == seq:
            batch.delete(events.document(str(seq)))
            seq -= 1
        for event in change.events:
            seq += 1
            batch.create(events.document(str(seq)), self._event_doc(doc, seq, event))
        for path, document in change.documents:
            batch.set(self._db.document(path), document)
        return batch, {**change.updates, "event_seq": seq}

    @_unavailable_is_ours
    def list(self, owner_uid: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        query = self._missions.where(filter=firestore.FieldFilter("owner_uid", "==", owner_uid))
        if status is not None:
            query = query.where(filter=firestore.FieldFilter("status", "==", status))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit)
        return [s.to_dict() for s in query.stream(timeout=TIMEOUT_SECONDS)]

    @_unavailable_is_ours
    def in_flight_before(self, status: str, field: str, before: datetime) -> list[dict[str, Any]]:
        query = (
            self._missions.where(filter=firestore.FieldFilter("status", "==", status))
            .where(filter=firestore.FieldFilter(field, "<", before))
            .order_by(field)
            .limit(SWEEP_PAGE)
        )
        return [s.to_dict() for s in query.stream(timeout=TIMEOUT_SECONDS)]

    def _active_by_query(self, owner_uid: str) -> int:
        query = self._missions.where(
            filter=firestore.FieldFilter("owner_uid", "==", owner_uid)
        ).where(filter=firestore.FieldFilter("status", "in", [s.value for s in ACTIVE]))
        result = query.count().get(timeout=TIMEOUT_SECONDS)
        return int(result[0][0].value)

    @_unavailable_is_ours
    def events(self, mission_id: str, after_seq: int) -> list[dict[str, Any]]:
        query = (
            self._missions.document(mission_id)
            .collection("events")
            .where(filter=firestore.FieldFilter("seq", ">", after_seq))
            .order_by("seq")
            .limit(1000)
        )
        return [s.to_dict() for s in query.stream(timeout=TIMEOUT_SECONDS)]

    @_unavailable_is_ours
    def get_document(self, path: str) -> dict[str, Any] | None:
        snapshot = self._db.document(path).get(timeout=TIMEOUT_SECONDS)
        return snapshot.to_dict() if snapshot.exists else None

    @_unavailable_is_ours
    def get_artifact(self, artifact_id: str) -> dict[str, Any] | None:
        snapshot = self._artifacts.document(artifact_id).get(timeout=TIMEOUT_SECONDS)
        return snapshot.to_dict() if snapshot.exists else None


class FirestoreDurationStats:
    """Step-duration statistics in a few sharded documents.

    Every finished mission updates one shard chosen at random, which keeps each
    document far below Firestore's sustained write rate of about one per second;
    readers merge the shards. Loaded statistics are reused for `cache_seconds`.
    """

    SHARDS = 8

    def __init__(self, client: firestore.Client, cache_seconds: float = 30.0) -> None:
        self._db = client
        self._collection = client.collection("stats")
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, DurationStat]] | None = None

    @_unavailable_is_ours
    def load(self) -> dict[str, DurationStat]:
        if self._cached and time.monotonic() - self._cached[0] < self._cache_seconds:
            return self._cached[1]
        shards = [
            _durations(snapshot.to_dict())
            for snapshot in self._collection.where(
                filter=firestore.FieldFilter("kind", "==", "step_durations")
            ).stream(timeout=TIMEOUT_SECONDS)
        ]
        result = merged(shards)
        self._cached = (time.monotonic(), result)
        return result

    @_unavailable_is_ours
    def record(self, samples: Mapping[str, float]) -> None:
        ref = self._collection.document(f"step_durations_{random.randrange(self.SHARDS)}")

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> None:
            snapshot = ref.get(transaction=transaction)
            durations = _durations(snapshot.to_dict() if snapshot.exists else None)
            for key, seconds in samples.items():
                durations[key] = updated(durations.get(key), seconds)
            transaction.set(
                ref,
                {
                    "kind": "step_durations",
                    "durations": {
                        k: {"mean": v.mean, "count": v.count} for k, v in durations.items()
                    },
                },
            )

        run(self._db.transaction())


def _durations(doc: dict[str, Any] | None) -> dict[str, DurationStat]:
    raw = (doc or {}).get("durations") or {}
    return {k: DurationStat(float(v["mean"]), int(v["count"])) for k, v in raw.items()}
