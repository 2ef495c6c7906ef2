"""Schedules in the benchmark: what a tick costs when few of many schedules are due, how soon
a due fire's mission is queued, and a burst of fires in one minute under racing ticks.

The scheduler runs in-process on the emulator (the service and the Firestore stores the
`scheduler` function runs), with a publisher that only counts: what is measured is the
scheduler's work, not the missions' execution. Schedules are seeded straight into Firestore
(their owners' counts are not the point here) and deleted afterwards, with the missions
their fires made.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from buddy import bootstrap
from buddy.adapters.firestore_schedules import FirestoreScheduleStore, schedule_document
from buddy.config import Settings
from buddy.domain import schedule as schedules

BATCH = 400


class CountingPublisher:
    def __init__(self) -> None:
        self.published: list[str] = []
        self._lock = threading.Lock()

    def publish_execution(self, mission_id: str) -> None:
        with self._lock:
            self.published.append(mission_id)


OWNER_SCHEDULES = 50  # BUDDY_MAX_SCHEDULES: as many owners as that makes


@dataclass
class Seeded:
    """Schedules written for one scenario, and their owners' common prefix, to delete
    afterwards."""

    owners: str
    ids: list[str] = field(default_factory=list)


def app_on(db: firestore.Client) -> tuple[bootstrap.App, FirestoreScheduleStore]:
    settings = replace(Settings.from_env(), max_active_missions=1_000_000)
    app = bootstrap.build(settings, publisher=CountingPublisher())
    store = app.schedule_store
    assert isinstance(store, FirestoreScheduleStore)
    return app, store


def seed(db: firestore.Client, total: int, due: int, now: datetime) -> Seeded:
    """`total` schedules, 50 to an owner, `due` of them due (30 s ago, one per owner as far
    as there are owners), the rest next due tomorrow (a yearly cron: none fires again while
    the benchmark runs)."""
    seeded = Seeded(f"bench-sched-{uuid.uuid4().hex[:8]}-")
    owners = max(1, total // OWNER_SCHEDULES)
    template = schedules.new(
        "x",
        seeded.owners,
        now,
        name="bench",
        cron="0 0 1 1 *",
        timezone="UTC",
        mission={"objective": "calculate 1+1", "scope": {"allowed_domains": []}},
    )
    batch, pending = db.batch(), 0
    for n in range(total):
        schedule_id = f"sch_bench_{uuid.uuid4().hex[:12]}"
        next_fire = now - timedelta(seconds=30) if n < due else now + timedelta(days=1)
        owner = f"{seeded.owners}{n % owners}"
        one = replace(template, schedule_id=schedule_id, owner_uid=owner, next_fire_at=next_fire)
        batch.set(db.collection("schedules").document(schedule_id), schedule_document(one))
        seeded.ids.append(schedule_id)
        pending += 1
        if pending == BATCH:
            batch.commit()
            batch, pending = db.batch(), 0
    if pending:
        batch.commit()
    return seeded


def clean(db: firestore.Client, seeded: Seeded) -> None:
    """Deletes the seeded schedules and the missions (with their events) they fired."""
    refs = [db.collection("schedules").document(i) for i in seeded.ids]
    for mission in _missions_of(db, seeded.owners):
        refs += [e.reference for e in mission.reference.collection("events").stream()]
        refs.append(mission.reference)
    for start in range(0, len(refs), BATCH):
        batch = db.batch()
        for ref in refs[start : start + BATCH]:
            batch.delete(ref)
        batch.commit()


def _missions_of(db: firestore.Client, owners: str) -> Any:
    """The missions of every owner whose uid starts with `owners`."""
    query = (
        db.collection("missions")
        .where(filter=firestore.FieldFilter("owner_uid", ">=", owners))
        .where(filter=firestore.FieldFilter("owner_uid", "<", owners + "\uffff"))
    )
    return query.stream()


def fired_missions(db: firestore.Client, owners: str) -> list[dict[str, Any]]:
    return [m.to_dict() or {} for m in _missions_of(db, owners)]


def one_tick(db: firestore.Client, total: int, due: int) -> dict[str, Any]:
    """A tick over `total` schedules of which `due` are due: wall time and documents read,
    beside a scan of every schedule (what a tick must never do)."""
    now = datetime.now(UTC)
    seeded = seed(db, total, due, now)
    try:
        app, store = app_on(db)
        began = time.perf_counter()
        done = app.schedules.tick()
        tick_ms = (time.perf_counter() - began) * 1000
        reads = store.reads
        began = time.perf_counter()
        scanned = sum(1 for _ in db.collection("schedules").select([]).stream())
        scan_ms = (time.perf_counter() - began) * 1000
        return {
            "schedules": total,
            "due": due,
            "fired": done["fired"],
            "tick_ms": round(tick_ms, 1),
            "reads": reads,
            "reads_per_due": round(reads / max(due, 1), 2),
            "scan_all_ms": round(scan_ms, 1),
            "scan_all_reads": scanned,
        }
    finally:
        clean(db, seeded)


def fire_to_queued(db: firestore.Client, count: int, tick_s: float) -> dict[str, Any]:
    """`count` schedules due within the next seconds, a ticker every `tick_s`: how long after
    each fire time its mission was queued (p50/p95 ms)."""
    now = datetime.now(UTC)
    seeded = seed(db, count, 0, now)
    try:
        for n, schedule_id in enumerate(seeded.ids):
            fire_at = now + timedelta(seconds=2 + n * 0.1)
            db.collection("schedules").document(schedule_id).update({"next_fire_at": fire_at})
        app, _ = app_on(db)
        deadline = time.monotonic() + 2 + count * 0.1 + 10 * tick_s + 10
        while time.monotonic() < deadline:
            app.schedules.tick()
            if len(fired_missions(db, seeded.owners)) >= count:
                break
            time.sleep(tick_s)
        latencies = [
            (m["queued_at"] - m["scheduled_for"]).total_seconds() * 1000
            for m in fired_missions(db, seeded.owners)
        ]
        return {"latencies_ms": latencies, "tick_s": tick_s, "missed": count - len(latencies)}
    finally:
        clean(db, seeded)


def burst(db: firestore.Client, count: int, tickers: int) -> dict[str, Any]:
    """`count` schedules due in the same minute, `tickers` ticks racing until none is due:
    each fire's mission exactly once."""
    now = datetime.now(UTC)
    seeded = seed(db, count, count, now)
    try:
        app, _ = app_on(db)
        began = time.perf_counter()

        def ticking() -> None:
            for _ in range(20):
                if app.schedules.tick()["due"] == 0:
                    return

        racers = [threading.Thread(target=ticking) for _ in range(tickers)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        wall_s = time.perf_counter() - began
        missions = fired_missions(db, seeded.owners)
        per_schedule = [m["schedule_id"] for m in missions]
        return {
            "schedules": count,
            "tickers": tickers,
            "missions": len(missions),
            "duplicated": len(per_schedule) - len(set(per_schedule)),
            "missing": count - len(set(per_schedule)),
            "wall_s": round(wall_s, 2),
            "fires_per_s": round(len(missions) / wall_s, 1),
        }
    finally:
        clean(db, seeded)


def measure(db: firestore.Client, quick: bool) -> dict[str, Any]:
    total, due, burst_count = (1000, 10, 50) if quick else (10_000, 100, 1000)
    return {
        "tick": one_tick(db, total, due),
        "fire_to_queued_ms": fire_to_queued(db, 5 if quick else 20, 0.5),
        "burst": burst(db, burst_count, 4),
    }
