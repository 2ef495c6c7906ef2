"""Ratings in the benchmark: many ratings landing at once (on sharded counters, and on one
counter document for comparison), what GET /stats/tools reads as missions pile up, and what
tool selection's read of a tool's ratings costs.

Runs in-process on the emulator, on the stores the API and the worker use. Missions are
seeded already finished, through the real store (so each is counted as a mission write
counts it), under a tool name of their own: the figures see only the benchmark's missions.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from bench.schedules import CountingPublisher
from buddy import bootstrap
from buddy.adapters import firestore_stats
from buddy.adapters.firestore_stats import FirestoreToolStats
from buddy.config import Settings
from buddy.domain import lifecycle
from buddy.domain.mission import Cost, Intent, Mission, Progress, Status

PARALLEL = 50


def finished(tool: str, owner: str, n: int, now: datetime) -> Mission:
    mission = lifecycle.proposed(
        f"m_bench_{uuid.uuid4().hex[:16]}", owner, f"calculate {n}+1", (), 1.0, None, {}, now
    )
    record = replace(
        mission.record,
        status=Status.COMPLETED,
        tool_used=tool,
        intent=Intent("calculate", 0.95, "bench"),
        cost_usd=Cost(0.0001, 0.0001),
        progress_tracker=Progress(mission.mission_id, "", elapsed_seconds=1.0 + n % 7),
    )
    return replace(
        mission,
        status=Status.COMPLETED,
        started_at=now - timedelta(seconds=2),
        finished_at=now,
        execution_record=record,
    )


def seed(app: bootstrap.App, tool: str, owners: int, each: int) -> list[Mission]:
    now = datetime.now(UTC)
    missions = [
        finished(tool, f"bench-rater-{tool}-{o}", n, now)
        for o in range(owners)
        for n in range(each)
    ]
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(app.store.create, missions))


@contextmanager
def shards(count: int) -> Iterator[None]:
    before = firestore_stats.TOOL_SHARDS
    firestore_stats.TOOL_SHARDS = count
    try:
        yield
    finally:
        firestore_stats.TOOL_SHARDS = before


def at_once(app: bootstrap.App, count: int, shard_count: int) -> dict[str, Any]:
    """`count` finished missions of as many owners, all rated at once: each rating's
    latency, the wall time, and whether every one was counted."""
    tool = f"bench_{uuid.uuid4().hex[:8]}"
    with shards(shard_count):
        missions = seed(app, tool, count, 1)

        def rate(mission: Mission) -> float:
            began = time.perf_counter()
            app.missions.rate(mission.owner_uid, mission.mission_id, 4)
            return (time.perf_counter() - began) * 1000

        began = time.perf_counter()
        with ThreadPoolExecutor(PARALLEL) as pool:
            latencies = sorted(pool.map(rate, missions))
        wall = time.perf_counter() - began
        counted, total = app.tool_stats_store.ratings(tool, "calculate")
    return {
        "shards": shard_count,
        "ratings": count,
        "counted": counted,
        "mean_rating": round(total / counted, 3) if counted else None,
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(latencies[round(0.95 * (len(latencies) - 1))], 1),
        "wall_s": round(wall, 2),
        "per_s": round(count / wall, 1),
    }


def stats_reads(
    app: bootstrap.App, db: firestore.Client, batches: list[int]
) -> list[dict[str, Any]]:
    """Documents GET /stats/tools reads (everyone's and one owner's) as missions are added:
    the same, however many missions there are."""
    tool = f"bench_{uuid.uuid4().hex[:8]}"
    owner = f"bench-rater-{tool}-0"
    reader = FirestoreToolStats(db)
    rows, total = [], 0
    for count in batches:
        seed(app, tool, 1, count)
        total += count
        began = time.perf_counter()
        view = app.tool_stats.view(owner)
        view_ms = (time.perf_counter() - began) * 1000
        documents = sum(1 for _ in db.collection("tool_stats").select([]).stream())
        documents += sum(
            1 for _ in db.collection("users").document(owner).collection("tool_stats").stream()
        )
        mine = next((t for t in reader.counters(owner).items() if t[0][0] == tool), (None, {}))[1]
        rows.append(
            {
                "missions": total,
                "counted": round(mine.get("missions", 0)),
                "documents_read": documents,
                "view_ms": round(view_ms, 1),
                "tools_shown": len(view["tools"]),
            }
        )
    return rows


def selection_read(app: bootstrap.App, count: int) -> dict[str, float]:
    """What tool selection's read of one tool's ratings (its 8 shards) takes."""
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        app.tool_stats_store.ratings("calculate", "calculate")
        latencies.append((time.perf_counter() - began) * 1000)
    latencies.sort()
    return {
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(latencies[round(0.95 * (len(latencies) - 1))], 1),
        "n": count,
    }


def measure(db: firestore.Client, quick: bool) -> dict[str, Any]:
    settings = replace(Settings.from_env(), max_active_missions=1_000_000)
    app = bootstrap.build(settings, publisher=CountingPublisher())
    count = 50 if quick else 200
    return {
        "at_once": [at_once(app, count, 8), at_once(app, count, 1)],
        "stats_reads": stats_reads(app, db, [100, 200] if quick else [200, 1000]),
        "selection_read_ms": selection_read(app, 10 if quick else 50),
    }
