"""Benchmarks: how fast progress reaches people, what a mission costs, and how it scales.

    scripts/bench.sh [--quick]      # emulators up, then this; writes bench/results.{json,md,png}

Each scenario is measured next to its floor in the same run, on this machine, against the
emulators. The bench runs its own API and worker on free ports, on its own topic, so it can
run beside the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

os.environ.setdefault("GCLOUD_PROJECT", "demo-buddy")
# The bench's own topics, so a running test stack keeps its subscription.
os.environ["BUDDY_EXECUTIONS_TOPIC"] = "bench-executions"
os.environ["BUDDY_DEAD_LETTER_TOPIC"] = "bench-executions-dead"

from google.cloud import firestore

from bench import coldstart, extraction, ratings, report, schedules, steering
from buddy.config import LocalPorts
from buddy.devstack import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    ROOT,
    Function,
    set_up_pubsub,
    wait_for_http,
)

OUT = ROOT / "bench"
POLL_EVERY_SECONDS = 5.0  # the original design's dashboard refresh
SETTINGS = {
    "BUDDY_MAX_ACTIVE_MISSIONS": "100000",
    "THREADS": "64",
    # The steering scenario crawls pages served on 127.0.0.1 (no internet here).
    "BUDDY_WEB_ALLOW_LOOPBACK": "1",
}


def summary(values: Iterable[float]) -> dict[str, float]:
    data = sorted(values)
    if not data:
        return {"p50": float("nan"), "p95": float("nan"), "n": 0}
    p95 = data[min(len(data) - 1, round(0.95 * (len(data) - 1)))]
    return {"p50": round(statistics.median(data), 1), "p95": round(p95, 1), "n": len(data)}


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class User:
    def __init__(self, api: str) -> None:
        host = os.environ["FIREBASE_AUTH_EMULATOR_HOST"]
        answer = requests.post(
            f"http://{host}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=bench",
            json={"returnSecureToken": True},
            timeout=10,
        ).json()
        self.uid, self.token, self.api = answer["localId"], answer["idToken"], api
        self.http = requests.Session()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(
            method,
            self.api + path,
            timeout=60,
            headers={"Authorization": f"Bearer {self.token}"},
            **kwargs,
        )
        response.raise_for_status()
        return response.json()

    def approved(self, objective: str, **fields: Any) -> str:
        mission_id = self.call("POST", "/missions", json={"objective": objective, **fields})[
            "mission_id"
        ]
        self.call("POST", f"/missions/{mission_id}/approve")
        return str(mission_id)


class Recorder:
    """A listener on one mission: every snapshot with the time it arrived."""

    def __init__(self, db: firestore.Client, mission_id: str) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self.done = threading.Event()
        self._ref = db.collection("missions").document(mission_id)
        self._watch = self._ref.on_snapshot(self._on)

    def _on(self, docs: list[Any], *_: Any) -> None:
        now = time.time()
        for doc in docs:
            data = doc.to_dict() or {}
            self.seen.append((now, data))
            if data.get("status") in {"completed", "failed", "cancelled"}:
                self.done.set()

    def wait(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.done.wait(0.5):
            if time.monotonic() > deadline:
                raise TimeoutError("mission did not finish")
            if not self._watch.is_active:
                # Its stream ended (the emulator sent what the client could not parse):
                # listen again, as a client does; the new one starts with the document now.
                self._watch.unsubscribe()
                self._watch = self._ref.on_snapshot(self._on)
        self._watch.unsubscribe()

    def writes(self) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, progress tracker) for each snapshot the worker wrote progress into."""
        found = []
        for arrived, data in self.seen:
            tracker = (data.get("execution_record") or {}).get("progress_tracker")
            if tracker:
                found.append((arrived, tracker))
        return found


def floor_latency(db: firestore.Client, count: int) -> list[float]:
    """A bare Firestore write → listener, the physical floor for progress delivery."""
    ref = db.collection("bench").document(f"floor-{uuid.uuid4().hex[:8]}")
    ref.set({"t": time.time(), "n": -1})
    latencies: list[float] = []
    ready = threading.Event()

    def on(docs: list[Any], *_: Any) -> None:
        now = time.time()
        for doc in docs:
            data = doc.to_dict() or {}
            if data.get("n", -1) >= 0:
                latencies.append((now - data["t"]) * 1000)
        ready.set()

    watch = ref.on_snapshot(on)
    ready.wait(10)
    for n in range(count):
        ref.set({"t": time.time(), "n": n})
        time.sleep(0.05)
    time.sleep(0.5)
    watch.unsubscribe()
    return latencies


def poll_progress(
    user: User, ids: list[str], stop: threading.Event
) -> list[tuple[float, str, int]]:
    """The original design: GET /progress every 5 s. Returns (arrival, mission, percent)."""
    polls: list[tuple[float, str, int]] = []
    while not stop.wait(0):
        for mission_id in list(ids):
            progress = user.call("GET", f"/missions/{mission_id}/progress")
            polls.append((time.time(), mission_id, progress["progress_percent"]))
        stop.wait(POLL_EVERY_SECONDS)
    return polls


def staleness(
    writes: dict[str, list[tuple[float, int]]], polls: list[tuple[float, str, int]]
) -> list[float]:
    """For each progress write, how long until a poll showed that percent or more."""
    ages = []
    for mission_id, timeline in writes.items():
        for written_at, percent in timeline:
            later = [t for t, m, p in polls if m == mission_id and t >= written_at and p >= percent]
            if later:
                ages.append((min(later) - written_at) * 1000)
    return ages


def dom_latency(
    user_page: Any, api: str, db: firestore.Client, count: int
) -> dict[str, list[float]]:
    """Worker's progress write → the dashboard's progress bar, in Chromium; split into the
    write → the page's snapshot (the JS SDK's delivery) and that snapshot → the DOM."""
    token = user_page.evaluate(ID_TOKEN_FROM_INDEXEDDB)
    owner = User.__new__(User)
    owner.uid, owner.token, owner.api, owner.http = "", token, api, requests.Session()
    latencies: dict[str, list[float]] = {"dom": [], "snapshot": [], "render": []}
    for _ in range(count):
        mission_id = owner.approved("calculate 17*23+4")
        recorder = Recorder(db, mission_id)
        owner.call("POST", f"/missions/{mission_id}/execute")
        recorder.wait()
        user_page.wait_for_function(
            f"(window.__bars['{mission_id}'] || []).some(([, v]) => v === 100)", timeout=20_000
        )
        shown = first_seen(user_page.evaluate(f"window.__bars['{mission_id}']"))
        snapped = first_seen(user_page.evaluate(f"window.__snapshots['{mission_id}'] || []"))
        for _, tracker in recorder.writes():
            percent, written = tracker["progress_percent"], parse_iso(tracker["updated_at"])
            if percent in shown and percent in snapped:
                latencies["dom"].append((shown[percent] - written) * 1000)
                latencies["snapshot"].append((snapped[percent] - written) * 1000)
                latencies["render"].append((shown[percent] - snapped[percent]) * 1000)
    return latencies


def first_seen(timeline: list[tuple[float, int]]) -> dict[int, float]:
    """When each value first appeared, in seconds, from a page's [(Date.now(), value)]."""
    first: dict[int, float] = {}
    for at_ms, value in timeline:
        first.setdefault(int(value), at_ms / 1000)
    return first


RECORD_BARS = """
window.__bars = {};
new MutationObserver((changes) => {
  for (const change of changes) {
    const article = change.target.closest && change.target.closest("article.mission");
    if (!article) continue;
    const value = Number(change.target.getAttribute("aria-valuenow"));
    (window.__bars[article.dataset.missionId] ||= []).push([Date.now(), value]);
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["aria-valuenow"]});
window.__snapshots = {};
window.addEventListener("buddy:missions", (event) => {
  for (const mission of event.detail) {
    const tracker = mission.execution_record && mission.execution_record.progress_tracker;
    if (!tracker) continue;
    (window.__snapshots[mission.mission_id] ||= []).push([Date.now(), tracker.progress_percent]);
  }
});
"""
ID_TOKEN_FROM_INDEXEDDB = """
() => new Promise((resolve, reject) => {
  const open = indexedDB.open("firebaseLocalStorageDb");
  open.onerror = reject;
  open.onsuccess = () => {
    const read = open.result.transaction("firebaseLocalStorage").objectStore(
      "firebaseLocalStorage").getAll();
    read.onsuccess = () => resolve(read.result[0].value.stsTokenManager.accessToken);
  };
})
"""


def latency_and_execute(user: User, db: firestore.Client, count: int) -> dict[str, Any]:
    listener, first_progress, overhead = [], [], []
    by_write: dict[str, list[float]] = {"claim": [], "end": []}
    writes: dict[str, list[tuple[float, int]]] = {}
    ids: list[str] = []
    stop = threading.Event()
    polls: list[tuple[float, str, int]] = []
    # One untimed mission first: the first request of a fresh instance is cold start,
    # which has its own scenario.
    warm = user.approved("calculate 1+1")
    warming = Recorder(db, warm)
    user.call("POST", f"/missions/{warm}/execute")
    warming.wait()
    poller = threading.Thread(target=lambda: polls.extend(poll_progress(user, ids, stop)))
    poller.start()
    for n in range(count):
        mission_id = user.approved(f"calculate {n}*7+1")
        recorder = Recorder(db, mission_id)
        ids.append(mission_id)
        sent = time.time()
        user.call("POST", f"/missions/{mission_id}/execute")
        recorder.wait()
        timeline = recorder.writes()
        delays = [(arrived - parse_iso(t["updated_at"])) * 1000 for arrived, t in timeline]
        listener += delays
        by_write["claim"].append(delays[0])
        by_write["end"].append(delays[-1])
        writes[mission_id] = [
            (parse_iso(t["updated_at"]), t["progress_percent"]) for _, t in timeline
        ]
        first_progress.append((timeline[0][0] - sent) * 1000)
        steps = timeline[-1][1]["completed_steps"]
        tool = sum(s["duration_seconds"] for s in steps if s["step_name"] == "tool_execution")
        overhead.append((timeline[-1][0] - sent - tool) * 1000)
        time.sleep(1.0)  # missions a second apart, as people start them
    time.sleep(POLL_EVERY_SECONDS + 1)  # let the poller catch the last one
    stop.set()
    poller.join()
    return {
        "listener": listener,
        "listener_claim": by_write["claim"],
        "listener_end": by_write["end"],
        "first_progress": first_progress,
        "overhead": overhead,
        "staleness": staleness(writes, polls),
    }


def scale(api: str, db: firestore.Client, missions: int) -> dict[str, Any]:
    """`missions` executed at once: throughput, p95 end to end, and nothing lost or doubled."""
    user = User(api)
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda n: user.approved(f"calculate {n}+{n}"), range(missions)))
    query = db.collection("missions").where(
        filter=firestore.FieldFilter("owner_uid", "==", user.uid)
    )
    sent: dict[str, float] = {}

    def execute(mission_id: str) -> None:
        sent[mission_id] = time.time()
        user.call("POST", f"/missions/{mission_id}/execute")

    start = time.time()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(execute, ids))
    # The harness waits by counting (the product never polls). End times come from the
    # worker's own finished_at: one listener over hundreds of documents falls behind and
    # would measure itself.
    deadline = time.time() + 300
    while time.time() < deadline:
        statuses = [d.get("status") for d in query.select(["status"]).stream()]
        if sum(s in {"completed", "failed", "cancelled"} for s in statuses) >= missions:
            break
        time.sleep(0.5)
    docs = {d.id: d.to_dict() for d in query.stream()}
    artifacts: dict[str, int] = {}
    for artifact in (
        db.collection("artifacts")
        .where(filter=firestore.FieldFilter("owner_uid", "==", user.uid))
        .stream()
    ):
        mission = artifact.to_dict()["mission_id"]
        artifacts[mission] = artifacts.get(mission, 0) + 1
    duplicated = 0
    for mission_id, doc in docs.items():
        steps = (
            [s["step_name"] for s in doc["execution_record"]["progress_tracker"]["completed_steps"]]
            if doc.get("execution_record")
            else []
        )
        if len(steps) != len(set(steps)) or artifacts.get(mission_id, 0) > 1:
            duplicated += 1
    finished = {m: d["finished_at"].timestamp() for m, d in docs.items() if d.get("finished_at")}
    end_to_end = [(finished[m] - sent[m]) * 1000 for m in ids if m in finished]
    last = max(finished.values(), default=start)
    return {
        "missions": missions,
        "throughput_per_s": round(len(finished) / max(last - start, 1e-9), 2),
        "e2e_p95_ms": summary(end_to_end)["p95"],
        "lost": sum(1 for m in ids if m not in docs),
        "duplicated": duplicated,
        "stuck": sum(1 for d in docs.values() if d["status"] in {"queued", "running"}),
    }


def write_cost(db: firestore.Client, substeps: int) -> dict[str, Any]:
    """Document writes of one mission whose tool reports `substeps` updates over about 2 s."""
    from buddy.adapters.firestore_store import FirestoreMissionStore
    from buddy.bootstrap import build
    from buddy.config import Settings
    from buddy.domain import stats
    from buddy.domain.mission import Mission
    from buddy.domain.progress import utc_now
    from buddy.schemas import CreateMission
    from buddy.tools import ToolContext, ToolInputs, ToolRegistry, ToolResult

    class SubstepTool:
        name, description = "substeps", "Reports many sub-steps (benchmark only)"
        intents, input_model, unavailable_reason = frozenset({"calculate"}), ToolInputs, None
        time_budget_seconds, isolated = 60.0, False

        def estimate_cost(self, inputs: ToolInputs) -> float:
            return 0.0

        def run(self, context: ToolContext) -> ToolResult:
            for done in range(1, substeps + 1):
                time.sleep(2.0 / substeps)
                context.report(done, substeps, "items", f"items {done}/{substeps}")
            return ToolResult(title="done", summary=f"{substeps} sub-steps", content="ok")

    class CountingStore(FirestoreMissionStore):
        def __init__(self) -> None:
            super().__init__(db, utc_now)
            self.applied: list[float] = []

        def apply(self, mission_id: str, decide: Callable[..., Any]) -> Mission:
            written = super().apply(mission_id, decide)
            self.applied.append(time.time())
            return written

    class NoPublisher:
        def publish_execution(self, mission_id: str) -> None:
            pass

    store = CountingStore()
    settings = dataclasses.replace(Settings.from_env(), max_active_missions=100000)
    app = build(settings, store=store, publisher=NoPublisher(), tools=ToolRegistry([SubstepTool()]))
    service = app.missions
    mission = service.create(
        "bench-writes", CreateMission(objective="count writes", tool="substeps")
    )
    mission_id = mission.mission_id
    service.approve("bench-writes", mission_id)
    service.execute("bench-writes", mission_id)
    api_writes = 1 + len(store.applied)  # the create batch, then approve and queue
    store.applied.clear()
    reads = store.apply_reads
    app.runner.run(mission_id)
    events = len(store.events(mission_id, 0))
    applied = store.applied
    peak = max((sum(1 for t in applied if s <= t < s + 1) for s in applied), default=0)
    # The end is written at once; every other write waits out the interval since the last.
    gaps = [b - a for a, b in itertools.pairwise(applied[:-1])]
    mission_doc = api_writes + len(applied)
    # The artifact, the private stage outputs, one statistics shard, the owner's
    # active-mission count (up at execute, down at the end), and the aggregates its end adds
    # to (a shard of its tool's, its owner's: domain.stats).
    ended = store.get(mission_id)
    other = 5 + len(stats.tally(ended))
    return {
        "substeps": substeps,
        "mission_doc_writes": mission_doc,
        "worker_writes": len(applied),
        "worker_reads_before_writes": store.apply_reads - reads,
        "event_docs": events,
        "other_docs": other,
        "total_writes": mission_doc + events + other,
        "peak_doc_writes_per_s": peak,
        "min_gap_s": round(min(gaps), 2) if gaps else None,
        "interval_s": settings.progress_min_interval_seconds,
    }


def peak_rss_mb(function: Function) -> float:
    """The largest resident set (VmHWM) in the function's process tree."""
    assert function.process is not None
    tree, peak = {function.process.pid}, 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in tree:
                tree.add(int(entry.name))
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return round(peak / 1024, 1)


def steering_figures(samples: steering.Samples) -> dict[str, Any]:
    return {
        "pause_between_steps_ms": summary(samples.pause_between_steps),
        "pause_in_crawl_ms": summary(samples.pause_in_crawl),
        "resume_first_progress_ms": summary(samples.resume),
        "retry_first_progress_ms": summary(samples.retry),
        "pages_read_at_pause": summary(samples.pages_read_at_pause),
        "missed": dict(samples.missed),
        "interval_s": samples.interval_s,
        "step_delay_s": steering.STEP_DELAY_SECONDS,
        "page_delay_s": steering.PAGE_DELAY_SECONDS,
        "crawl_pages": steering.CRAWL_PAGES,
    }


def fmt_gap(row: dict[str, Any]) -> str:
    gap = "none between" if row["min_gap_s"] is None else f"{row['min_gap_s']} s"
    return f"{gap} (interval {row['interval_s']} s)"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    lat, exe = results["latency"], results["execute"]
    ratio = lat["ratio_listener_p95"]
    cold = results["cold_start"]
    steer = results["steering"]
    missed = steer["missed"]
    tick, burst = results["schedules"]["tick"], results["schedules"]["burst"]
    # The worker hears of a pause at its next write (at most one per interval) and stops at
    # the next step boundary, or the next page in a crawl.
    pause_bounds = {
        "between steps": ("pause_between_steps", steer["step_delay_s"]),
        "in a crawl": ("pause_in_crawl", steer["page_delay_s"]),
    }
    pause_rows = [
        (where, steer[f"{key}_ms"]["p95"], (steer["interval_s"] + delay) * 1000, missed.get(key, 0))
        for where, (key, delay) in pause_bounds.items()
    ]
    execute_p95 = exe["first_progress_ms"]["p95"]
    restart_rows = [
        (name, steer[f"{name}_first_progress_ms"]["p95"], missed.get(name, 0))
        for name in ("resume", "retry")
    ]
    rows = [
        (
            "progress → Python listener p95 ≤ 2x the bare floor",
            f"{lat['python_listener_ms']['p95']} ms vs {lat['floor_listener_ms']['p95']} ms "
            f"({ratio}x)",
            ratio <= 2,
        ),
        ("progress → DOM p95 < 50 ms", f"{lat['dom_ms']['p95']} ms", lat["dom_ms"]["p95"] < 50),
        (
            "execute → first visible progress p95 < 250 ms",
            f"{exe['first_progress_ms']['p95']} ms",
            exe["first_progress_ms"]["p95"] < 250,
        ),
        (
            "orchestration overhead p95 < 300 ms (seven steps)",
            f"{exe['overhead_ms']['p95']} ms",
            exe["overhead_ms"]["p95"] < 300,
        ),
        (
            "concurrent missions: 0 lost, 0 duplicated, 0 stuck",
            ", ".join(
                f"{s['missions']}: {s['lost']}/{s['duplicated']}/{s['stuck']}"
                for s in results["scale"]
            ),
            all(s["lost"] == s["duplicated"] == s["stuck"] == 0 for s in results["scale"]),
        ),
        (
            "mission document writes ≤ 10 whatever the sub-steps, and at most one per "
            "configured interval between the claim and the end",
            ", ".join(f"{w['substeps']}: {w['mission_doc_writes']}" for w in results["writes"])
            + "; least gap "
            + ", ".join(fmt_gap(w) for w in results["writes"]),
            all(
                w["mission_doc_writes"] <= 10 and (w["min_gap_s"] or 1e9) >= 0.99 * w["interval_s"]
                for w in results["writes"]
            ),
        ),
        (
            "pause → `paused` seen p95 ≤ progress interval + the current step's time (between "
            "steps) or page fetch (in a crawl)",
            "; ".join(
                f"{where} {p95} ms vs {bound:.0f} ms" + (f" ({lost} missed)" if lost else "")
                for where, p95, bound, lost in pause_rows
            ),
            all(p95 <= bound and not lost for _, p95, bound, lost in pause_rows),
        ),
        (
            "resume, retry → first progress p95 ≤ 1.5x execute → first progress p95 (this run)",
            ", ".join(
                f"{name} {p95} ms" + (f" ({lost} missed)" if lost else "")
                for name, p95, lost in restart_rows
            )
            + f" vs {1.5 * execute_p95:.1f} ms (1.5x {execute_p95} ms)",
            all(p95 <= 1.5 * execute_p95 and not lost for _, p95, lost in restart_rows),
        ),
        (
            "a tick's reads proportional to the due schedules, not the total (≤ 3 per due one)",
            f"{tick['reads']} reads for {tick['due']} due of {tick['schedules']} "
            f"({tick['reads_per_due']} per due one; a scan of all: {tick['scan_all_reads']})",
            tick["reads"] <= 3 * tick["due"],
        ),
        (
            "schedules due in the same minute fire exactly once under racing ticks",
            f"{burst['schedules']} due, {burst['tickers']} tickers: {burst['missions']} missions, "
            f"{burst['duplicated']} duplicated, {burst['missing']} missing",
            burst["missions"] == burst["schedules"] and not burst["duplicated"],
        ),
        (
            "cold start ≤ half the eager-import baseline",
            f"api {cold['api']['ratio_p50']}, worker {cold['worker']['ratio_p50']}",
            cold["api"]["ratio_p50"] <= 0.5 and cold["worker"]["ratio_p50"] <= 0.5,
        ),
    ]
    return [
        {"target": t, "measured": m, "met": bool(ok), "note": "" if ok else WHY_MISSED[i]}
        for i, (t, m, ok) in enumerate(rows)
    ]


# Why a target can be missed here, from what each measurement includes (see README).
WHY_MISSED = [
    "the floor is a one-field document; a progress write is one atomic commit of the mission "
    "document (a few KiB, on a precondition) with its events: the claim carries one event, "
    "the end every quick step's events and the artifact (see the claim/end rows)",
    "the page renders in about a millisecond (snapshot → DOM row): the rest is the JS SDK "
    "delivering the dashboard's query snapshot; the emulator re-evaluates query listeners on "
    "every write, two to three times slower than a document listener",
    "includes the Pub/Sub push (about 66 ms p50 on the emulator) and the claim's commit",
    "seven steps cost two commits (claim, end) and the step-duration statistics transaction",
    "see the scale table",
    "3 API writes (create, approve, queue) + the worker's claim and end + one per "
    "BUDDY_PROGRESS_MIN_INTERVAL_SECONDS of tool time",
    "the worker reads the pause request only when it writes; the heartbeat, which writes what "
    "is pending once the interval has passed, ticks every quarter interval; then the API's "
    "transaction and the listener's delivery (a missed pause: the mission ended first)",
    "a resumed or retried run reads back what its completed stages produced before its claim; "
    "a missed one did not complete",
    "the due query's documents, then one read of each due schedule as its fire commits "
    "(and of its last mission, when it has one)",
    "each fire's mission id derives from (schedule, fire time) and commits with the schedule "
    "on a precondition: a racing tick finds the schedule moved on",
    "the API still imports pydantic models and the Firestore-free service layer on the first "
    "request",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    quick = args.quick
    began = time.time()
    functions = {t: Function(t, free_port()) for t in ("api", "worker", "dead_letter")}
    for function in functions.values():
        function.start(SETTINGS, Path(tempfile.gettempdir()) / f"bench-{function.target}.log")
    set_up_pubsub(functions["worker"].url, functions["dead_letter"].url)
    api = functions["api"].url
    wait_for_http(api + "/healthz")
    db = firestore.Client(project=os.environ["GCLOUD_PROJECT"])
    try:
        results: dict[str, Any] = {
            "meta": {
                "mode": "quick" if quick else "full",
                "date": datetime.now(UTC).isoformat(),
                "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
                "python": platform.python_version(),
            }
        }
        measured = latency_and_execute(User(api), db, 6 if quick else 30)
        floor = floor_latency(db, 30 if quick else 200)
        dom = measure_dom(api, db, 3 if quick else 20)
        steered = steering.measure(
            User(api),
            db,
            functions["worker"],
            functions["dead_letter"],
            Function("worker", free_port()),
            SETTINGS,
            3 if quick else 20,
        )
        python_listener = summary(measured["listener"])
        floor_summary = summary(floor)
        results["latency"] = {
            "python_listener_ms": python_listener,
            "python_listener_claim_ms": summary(measured["listener_claim"]),
            "python_listener_end_ms": summary(measured["listener_end"]),
            "floor_listener_ms": floor_summary,
            "dom_ms": summary(dom["dom"]),
            "dom_snapshot_ms": summary(dom["snapshot"]),
            "dom_render_ms": summary(dom["render"]),
            "polling_staleness_ms": summary(measured["staleness"]),
            "ratio_listener_p95": round(python_listener["p95"] / floor_summary["p95"], 2),
        }
        results["execute"] = {
            "first_progress_ms": summary(measured["first_progress"]),
            "overhead_ms": summary(measured["overhead"]),
        }
        results["steering"] = steering_figures(steered)
        scheduled = schedules.measure(db, quick)
        fire = scheduled.pop("fire_to_queued_ms")
        scheduled["fire_to_queued_ms"] = {
            **summary(fire["latencies_ms"]),
            "tick_s": fire["tick_s"],
            "missed": fire["missed"],
        }
        results["schedules"] = scheduled
        results["scale"] = [scale(api, db, n) for n in ([1, 10] if quick else [1, 10, 50, 200])]
        results["rss_mb"] = {
            "api": peak_rss_mb(functions["api"]),
            "worker": peak_rss_mb(functions["worker"]),
        }
        results["writes"] = [write_cost(db, k) for k in (0, 10, 1000)]
        results["cold_start"] = coldstart.measure(1 if quick else 9)
        results["extraction"] = extraction.measure(quick)  # CPU only, no emulator
        # Last: it seeds thousands of missions, and the emulator slows as it fills (a scale
        # run after it saw half the throughput it sees on a fresh emulator).
        results["ratings"] = ratings.measure(db, quick)
        results["targets"] = targets(results)
        results["meta"]["duration_s"] = round(time.time() - began, 1)
    finally:
        for function in functions.values():
            function.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    report.write(results, args.out)
    print((args.out / "results.md").read_text())
    return 0


def measure_dom(api: str, db: firestore.Client, count: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.add_init_script(RECORD_BARS)
        page.goto(f"{LocalPorts.from_env().url('hosting')}/?api={api}")
        page.wait_for_selector("#connection:has-text('live')", timeout=30_000)
        try:
            return dom_latency(page, api, db, count)
        finally:
            browser.close()


if __name__ == "__main__":
    raise SystemExit(main())
