"""MissionStore on Cloud Firestore (or its emulator): the only place that knows the storage
encoding — document paths, field names, update masks, preconditions.

    missions/{mission_id}                  the mission (clients listen to it)
    missions/{mission_id}/events/{seq}     its log, seq gapless from 1
    missions/{mission_id}/private/outputs  stage outputs too large for the mission (no client reads)
    missions/{mission_id}/private/checkpoint  where a paused tool got to
    artifacts/{artifact_id}                its result
    users/{uid}                            active_missions: the owner's queued + running count
    tool_stats/…, users/{uid}/tool_stats/…, recipe_counts/…   the aggregates (firestore_stats):
                                           every write adds its delta in the same batch
    stats/step_durations_{n}               ETA statistics, sharded
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from pydantic import TypeAdapter

from buddy.adapters.firestore_base import (
    APPLY_ATTEMPTS,
    LOST_ANSWER_ERRORS,
    TIMEOUT_SECONDS,
    LostAnswers,
    unavailable_is_ours,
    wait_a_little,
)
from buddy.adapters.firestore_stats import add_tally
from buddy.domain import stats
from buddy.domain.eta import DurationStat, merged, updated
from buddy.domain.lifecycle import active_delta
from buddy.domain.mission import Artifact, Change, Event, Mission, NewEvent, Status, iso
from buddy.domain.progress import Clock
from buddy.errors import (
    MissionNotFound,
    StorageRejected,
    TooManyActiveMissions,
)
from buddy.service.ports import Decide

SWEEP_PAGE = 200
KNOWN_MISSIONS = 512  # versions remembered per process (a mission document is a few KiB)
OWNER_TURNS = 64  # locks an owner's shared documents are written under, by owner (striped)

Document = dict[str, Any]
_MISSING = object()
_MISSION: TypeAdapter[Mission] = TypeAdapter(Mission)
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
_ARTIFACT: TypeAdapter[Artifact] = TypeAdapter(Artifact)


def mission_document(mission: Mission) -> Document:
    """The mission as stored: its fields by name, timestamps as Firestore timestamps."""
    return dict(_MISSION.dump_python(mission))


def mission_from(document: Mapping[str, Any]) -> Mission:
    return _MISSION.validate_python(document)


class FirestoreMissionStore:
    """Missions, their events, artifacts and private outputs, and owners' active counts.

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
        self._users = client.collection("users")
        # mission id → (mission, its document, its version); missions are immutable.
        self._known: OrderedDict[str, tuple[Mission, Document, Any]] = OrderedDict()
        self._known_lock = threading.Lock()
        # Commits that add to an owner's shared documents (the active count, their tool
        # statistics, their recipe's uses) take turns within a process: racing each other
        # they queue on Firestore's locks instead, and on a loaded emulator time out there
        # (fifty ratings at once, ten an owner: 15 gave up after 8 lock timeouts in 17 s).
        self._owner_turns = [threading.Lock() for _ in range(OWNER_TURNS)]
        self.apply_reads = 0  # reads `apply` could not avoid (for tests and benchmarks)
        self.ended: list[Callable[[Mission], None]] = []

    def _remember(self, mission: Mission, document: Document, version: Any) -> None:
        with self._known_lock:
            self._known[mission.mission_id] = (mission, document, version)
            self._known.move_to_end(mission.mission_id)
            if len(self._known) > KNOWN_MISSIONS:
                self._known.popitem(last=False)

    def _recall(self, mission_id: str) -> tuple[Mission, Document, Any] | None:
        with self._known_lock:
            return self._known.pop(mission_id, None)

    def event_document(self, owner_uid: str, seq: int, event: NewEvent) -> Document:
        """An event as stored; a TTL policy on `expire_at` deletes it after the event TTL."""
        now = self._clock()
        return {
            "seq": seq,
            "type": event.type,
            "step_name": event.step_name,
            "progress_percent": event.progress_percent,
            "message": event.message,
            "attempt": event.attempt,
            "timestamp": iso(now),
            "owner_uid": owner_uid,
            "expire_at": now + self._event_ttl,
        }

    @unavailable_is_ours
    def create(self, mission: Mission, *events: NewEvent) -> Mission:
        ref = self._missions.document(mission.mission_id)
        stored = replace(mission, event_seq=len(events))
        document = mission_document(stored)
        tally = stats.delta(None, stored)
        answers = LostAnswers()
        for attempt in range(APPLY_ATTEMPTS):
            batch = self._db.batch()
            batch.create(ref, document)
            for seq, event in enumerate(events, 1):
                batch.create(
                    ref.collection("events").document(str(seq)),
                    self.event_document(mission.owner_uid, seq, event),
                )
            add_tally(self._db, batch, tally)
            turn = self._turn(mission.owner_uid, bool(tally))
            if (results := self._commit_batch(batch, answers, turn)) is not None:
                self._remember(stored, document, results[0].update_time)
                return stored
            # Aborted on a counter it shares (its recipe's uses), or an answer lost: it was
            # written if it is there now (ids are never reused).
            snapshot = ref.get(timeout=TIMEOUT_SECONDS)
            if snapshot.exists:
                self._remember(stored, document, snapshot.update_time)
                return stored
            if not wait_a_little(attempt, answers.started):
                break
        raise answers.too_busy(f"Mission {mission.mission_id} could not be stored; try again")

    @unavailable_is_ours
    def get(self, mission_id: str) -> Mission | None:
        snapshot = self._missions.document(mission_id).get(timeout=TIMEOUT_SECONDS)
        if not snapshot.exists:
            return None
        document = snapshot.to_dict() or {}
        mission = mission_from(document)
        self._remember(mission, document, snapshot.update_time)
        return mission

    @unavailable_is_ours
    def apply(self, mission_id: str, decide: Decide) -> Mission:
        """Optimistic concurrency: the batch commits only if the mission (and, for a change
        into the active states, the owner's count) is unchanged since it was read; otherwise
        read and decide again. One hot document under many writers (twenty simultaneous
        executes) resolves in a few rounds, where lock-based transactions time out.
        """
        ref = self._missions.document(mission_id)
        # What each commit that failed tried to write, with the mission it was decided on and
        # how: any of them may turn out to have landed.
        attempts: list[tuple[Mission, Mission, Change]] = []
        answers = LostAnswers()

        def commit(
            mission: Mission, document: Document, change: Change, version: Any
        ) -> Mission | None:
            attempts.append((_as_written(mission, change), mission, change))
            return self._commit(ref, mission, document, change, version, answers)

        known = self._recall(mission_id)
        if known is not None:
            mission, document, version = known
            try:
                change: Change | None = decide(mission)
            except TooManyActiveMissions:
                raise  # counted on a fresh count: the verdict holds
            except Exception:
                change = None  # perhaps a stale copy's verdict: ask again on a fresh read
            # What the commit raises holds (an undo over the limit that could not be made,
            # say): only a verdict on a stale copy is asked again.
            if (
                change is not None
                and change.mission is not None
                and (written := commit(mission, document, change, version))
            ):
                return written
        patient = True
        for attempt in range(APPLY_ATTEMPTS + 1):
            snapshot = ref.get(timeout=TIMEOUT_SECONDS)
            self.apply_reads += 1
            if not snapshot.exists:
                raise MissionNotFound(mission_id)
            document = snapshot.to_dict() or {}
            mission = mission_from(document)
            landed = [(b, c) for a, b, c in attempts if _landed(mission, a)]
            if landed:
                # A commit went through although its answer said otherwise (a retried RPC
                # whose first try had landed, a lost answer, the emulator's lock timeout):
                # deciding again would refuse our own write, and a 503 would be untrue.
                self._remember(mission, document, snapshot.update_time)
                before, change = landed[0]
                self._limit_kept(ref, before, change, mission, document, snapshot.update_time)
                self._announce_end(before, mission)
                return mission
            if not patient or attempt == APPLY_ATTEMPTS:
                break  # (after a last look: the last commit may have landed)
            change = decide(mission)
            if change.mission is None:
                self._remember(mission, document, snapshot.update_time)
                return mission
            if written := commit(mission, document, change, snapshot.update_time):
                return written
            patient = wait_a_little(attempt, answers.started)
        raise answers.too_busy(f"Mission {mission_id} is too busy right now; try again")

    def _commit(
        self,
        ref: Any,
        before: Mission,
        document: Document,
        change: Change,
        version: Any,
        answers: LostAnswers,
    ) -> Mission | None:
        """Writes the change if the mission is still at `version`; None if it moved on (or
        its answer was lost)."""
        assert change.mission is not None
        batch = self._db.batch()
        self._append_events(batch, ref, before, change)
        written = _as_written(before, change)
        after = mission_document(written)
        if change.artifact is not None:
            artifact = change.artifact
            batch.set(
                self._artifacts.document(artifact.artifact_id), _ARTIFACT.dump_python(artifact)
            )
        if change.private:
            batch.set(
                ref.collection("private").document("outputs"), dict(change.private), merge=True
            )
        if change.checkpoint is not None:
            batch.set(ref.collection("private").document("checkpoint"), dict(change.checkpoint))
        tally = stats.delta(before, written)
        add_tally(self._db, batch, tally)
        delta = active_delta(before, change)
        if delta:
            # Second to last: its result says what the count became.
            counter = self._users.document(before.owner_uid)
            batch.set(counter, {"active_missions": firestore.Increment(delta)}, merge=True)
        # Only what changed, field by field; the mission's write goes last: its result
        # carries the version to remember.
        updates = {k: v for k, v in after.items() if document.get(k, _MISSING) != v}
        batch.update(ref, updates, option=self._db.write_option(last_update_time=version))
        results = self._commit_batch(
            batch, answers, self._turn(before.owner_uid, bool(tally or delta))
        )
        if results is None:
            return None
        self._remember(written, after, results[-1].update_time)
        limit = change.active_limit
        if delta > 0 and limit is not None:
            count = results[-2].transform_results[0].integer_value
            if count > limit:
                self._undo(ref, before, written, after, results[-1].update_time)
                raise TooManyActiveMissions(limit)
        self._announce_end(before, written)
        return written

    def _announce_end(self, before: Mission, written: Mission) -> None:
        if written.terminal and not before.terminal:
            for listener in self.ended:
                listener(written)

    def _limit_kept(
        self,
        ref: Any,
        before: Mission,
        change: Change,
        written: Mission,
        document: Document,
        version: Any,
    ) -> None:
        """A change into the active states that landed although its commit answered an error
        (the emulator's lock timeouts do that) was never counted against the limit: looks at
        the owner's count now, and takes the change back when it is over."""
        limit = change.active_limit
        if limit is None or active_delta(before, change) <= 0:
            return
        counter = self._users.document(before.owner_uid).get(timeout=TIMEOUT_SECONDS)
        if int((counter.to_dict() or {}).get("active_missions", 0)) > limit:
            self._undo(ref, before, written, document, version)
            raise TooManyActiveMissions(limit)

    def _turn(self, owner_uid: str, shared: bool) -> contextlib.AbstractContextManager[Any]:
        """The lock a commit writing the owner's shared documents waits its turn on."""
        if not shared:
            return contextlib.nullcontext()
        return self._owner_turns[hash(owner_uid) % OWNER_TURNS]

    def _commit_batch(
        self,
        batch: Any,
        answers: LostAnswers,
        turn: contextlib.AbstractContextManager[Any],
    ) -> list[Any] | None:
        """The batch's write results; None when a precondition failed (someone else wrote),
        or when its answer was lost (then it may have landed: the caller reads to find out)."""
        try:
            with turn:
                return list(batch.commit(timeout=TIMEOUT_SECONDS))
        except (gexc.FailedPrecondition, gexc.Aborted, gexc.AlreadyExists) as e:
            answers.refused(e)
            return None
        except LOST_ANSWER_ERRORS as e:
            answers.lost(e)
            return None
        except gexc.BadRequest as e:
            # InvalidArgument and the like (a document over 1 MiB): the same write would be
            # refused again, so this is no reason to retry or redeliver.
            raise StorageRejected(f"Firestore refused the write: {e.message}"[:300]) from e

    def _undo(
        self, ref: Any, before: Mission, written: Mission, after: Document, version: Any
    ) -> None:
        """Takes back a change that took its owner past the active limit: the mission as it
        was, its events gone, the count down again.

        The limit is kept by counting first and looking after: every change into the active
        states adds one with an atomic increment (no precondition on the count, so a burst of
        executes does not queue up on one document), and the one whose count came out over
        the limit undoes itself. Racing changes may each see the other's increment and both
        give up, but never both stay.
        """
        events = ref.collection("events")
        document = mission_document(before)
        answers = LostAnswers()
        for attempt in range(APPLY_ATTEMPTS):
            batch = self._db.batch()
            for seq in range(before.event_seq + 1, written.event_seq + 1):
                batch.delete(events.document(str(seq)))
            add_tally(self._db, batch, stats.delta(written, before))
            counter = self._users.document(before.owner_uid)
            batch.set(counter, {"active_missions": firestore.Increment(-1)}, merge=True)
            restore = {k: v for k, v in document.items() if after.get(k, _MISSING) != v}
            batch.update(ref, restore, option=self._db.write_option(last_update_time=version))
            turn = self._turn(before.owner_uid, True)
            if (results := self._commit_batch(batch, answers, turn)) is not None:
                self._remember(before, document, results[-1].update_time)
                return
            snapshot = ref.get(timeout=TIMEOUT_SECONDS)
            current = mission_from(snapshot.to_dict() or {})
            if (current.status, current.event_seq) != (written.status, written.event_seq):
                return  # changed since (the owner cancelled): that change did the counting
            after, version = snapshot.to_dict() or {}, snapshot.update_time
            # Aborted on the owner's busy count (its racers undo too): wait a little.
            if not wait_a_little(attempt, answers.started):
                break
        raise answers.too_busy(f"Mission {before.mission_id} is too busy right now; try again")

    def _append_events(self, batch: Any, ref: Any, before: Mission, change: Change) -> int:
        """Adds the change's events to the batch, numbered on; returns the newest seq."""
        events = ref.collection("events")
        seq = before.event_seq
        if _retracts(before, change):
            batch.delete(events.document(str(seq)))
            seq -= 1
        for event in change.events:
            seq += 1
            batch.create(
                events.document(str(seq)), self.event_document(before.owner_uid, seq, event)
            )
        return seq

    @unavailable_is_ours
    def missions_of(
        self, owner_uid: str, status: Status | None, limit: int, schedule_id: str | None = None
    ) -> list[Mission]:
        query = self._missions.where(filter=firestore.FieldFilter("owner_uid", "==", owner_uid))
        if status is not None:
            query = query.where(filter=firestore.FieldFilter("status", "==", status.value))
        if schedule_id is not None:
            query = query.where(filter=firestore.FieldFilter("schedule_id", "==", schedule_id))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit)
        return [mission_from(s.to_dict() or {}) for s in query.stream(timeout=TIMEOUT_SECONDS)]

    @unavailable_is_ours
    def stalled(self, now: datetime) -> list[Mission]:
        return self._in_status_before(Status.RUNNING, "lease_expires_at", now)

    @unavailable_is_ours
    def queued_before(self, before: datetime) -> list[Mission]:
        return self._in_status_before(Status.QUEUED, "queued_at", before)

    @unavailable_is_ours
    def expired_pauses(self, now: datetime) -> list[Mission]:
        return self._in_status_before(Status.PAUSED, "pause_reason.expires_at", now)

    def _in_status_before(self, status: Status, field: str, before: datetime) -> list[Mission]:
        query = (
            self._missions.where(filter=firestore.FieldFilter("status", "==", status.value))
            .where(filter=firestore.FieldFilter(field, "<", before))
            .order_by(field)
            .limit(SWEEP_PAGE)
        )
        return [mission_from(s.to_dict() or {}) for s in query.stream(timeout=TIMEOUT_SECONDS)]

    @unavailable_is_ours
    def events(self, mission_id: str, after_seq: int) -> list[Event]:
        query = (
            self._missions.document(mission_id)
            .collection("events")
            .where(filter=firestore.FieldFilter("seq", ">", after_seq))
            .order_by("seq")
            .limit(1000)
        )
        return [_EVENT.validate_python(s.to_dict()) for s in query.stream(timeout=TIMEOUT_SECONDS)]

    @unavailable_is_ours
    def artifact(self, artifact_id: str) -> Artifact | None:
        snapshot = self._artifacts.document(artifact_id).get(timeout=TIMEOUT_SECONDS)
        return _ARTIFACT.validate_python(snapshot.to_dict()) if snapshot.exists else None

    @unavailable_is_ours
    def private_outputs(self, mission_id: str) -> Mapping[str, Any]:
        return self._private(mission_id, "outputs") or {}

    @unavailable_is_ours
    def checkpoint(self, mission_id: str) -> Mapping[str, Any] | None:
        return self._private(mission_id, "checkpoint")

    def _private(self, mission_id: str, name: str) -> dict[str, Any] | None:
        ref = self._missions.document(mission_id).collection("private").document(name)
        snapshot = ref.get(timeout=TIMEOUT_SECONDS)
        return (snapshot.to_dict() or {}) if snapshot.exists else None


def _retracts(before: Mission, change: Change) -> bool:
    return change.retract_seq is not None and change.retract_seq == before.event_seq


def _as_written(before: Mission, change: Change) -> Mission:
    """The mission a commit of `change` writes, with its events numbered."""
    assert change.mission is not None
    seq = before.event_seq - int(_retracts(before, change)) + len(change.events)
    return replace(change.mission, event_seq=seq)


def _landed(found: Mission, attempted: Mission) -> bool:
    """Whether the mission read is the one a commit tried to write: every change stamps
    `updated_at` with the moment it was decided, and numbers its events on."""
    return (found.status, found.event_seq, found.updated_at) == (
        attempted.status,
        attempted.event_seq,
        attempted.updated_at,
    )


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

    @unavailable_is_ours
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

    @unavailable_is_ours
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
