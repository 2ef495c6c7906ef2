"""Steering in the benchmark: how soon a pause shows, and how soon a resumed or retried mission
moves again.

Every figure runs from the moment its request is sent (as Execute → first progress does: it
includes the API's own transaction) to the arrival, at a listener on the mission document, of
the first snapshot showing the effect: status `paused` for a pause, status `running` (the new
run's claim, its first progress write) for a resume or a retry.

- Pause between steps: on a second worker whose every step takes STEP_DELAY_SECONDS
  (BUDDY_FAULT_STEP_DELAY_SECONDS), the pause sent at a spread of moments within one progress
  interval after the claim was seen. The run hears of it at its next write (at most one per
  interval) and stops at the next step boundary after that.
- Pause inside a crawl: a web_extract mission over CRAWL_PAGES linked pages, each served after
  PAGE_DELAY_SECONDS, paused once the listener saw the first page read. The crawl stops
  between pages, keeping those it read.
- Resume: the missions paused between steps, resumed on the benchmark's own worker.
- Retry: missions failed at tool_execution on a page that answered 404, retried once the page
  is served.

The first worker keeps the benchmark's settings, so resume and retry compare with Execute →
first progress measured on it in the same run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from google.cloud import firestore
from tests.localserver import LocalServer, Reply

from buddy.config import Settings
from buddy.devstack import Function, set_up_pubsub

STEP_DELAY_SECONDS = 0.5
PAGE_DELAY_SECONDS = 0.5
# Enough pages that the crawl is still reading when the pause reaches it.
CRAWL_PAGES = 8
SCOPE = {"allowed_domains": ["127.0.0.1"]}
TERMINAL = frozenset({"completed", "failed", "cancelled"})

Doc = dict[str, Any]
T = TypeVar("T")


class Caller(Protocol):
    """A signed-in user of the API (bench.run.User)."""

    def call(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def approved(self, objective: str, **fields: Any) -> str: ...


class Listener:
    """A client's listener on one mission document: every snapshot with the time it arrived."""

    def __init__(self, db: firestore.Client, mission_id: str) -> None:
        self._seen: list[tuple[float, Doc]] = []
        self._arrived = threading.Condition()
        self._ref = db.collection("missions").document(mission_id)
        self._watch = self._ref.on_snapshot(self._on)

    def _on(self, docs: list[Any], *_: Any) -> None:
        now = time.time()
        with self._arrived:
            self._seen += [(now, doc.to_dict() or {}) for doc in docs]
            self._arrived.notify_all()

    def first(
        self, matches: Callable[[Doc], bool], after: float = 0.0, timeout: float = 60
    ) -> tuple[float, Doc]:
        """The first snapshot that arrived at or after `after` (epoch seconds) and matches,
        with its arrival time; waits for it."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for arrived, doc in self._seen:
                    if arrived >= after and matches(doc):
                        return arrived, doc
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [doc.get("status") for _, doc in self._seen]
                    stored = (self._ref.get().to_dict() or {}).get("status")
                    raise TimeoutError(
                        f"{self._ref.id}: no matching snapshot within {timeout:g}s "
                        f"(statuses seen: {seen}; stored: {stored})"
                    )
                self._arrived.wait(min(left, 0.5))
                if not self._watch.is_active:
                    # Its stream ended (a dead one holds no thread that could wait on this
                    # lock): listen again, as bench.run.Recorder does.
                    self._watch.unsubscribe()
                    self._watch = self._ref.on_snapshot(self._on)

    def close(self) -> None:
        self._watch.unsubscribe()


def running(doc: Doc) -> bool:
    return doc.get("status") == "running"


def stopped(doc: Doc) -> bool:
    """Paused, or past the point where a pause could land."""
    return doc.get("status") == "paused" or doc.get("status") in TERMINAL


def ended(doc: Doc) -> bool:
    return doc.get("status") in TERMINAL


def pages_read(doc: Doc) -> int:
    """How many pages the crawl has reported read, from the mission's current step."""
    tracker = (doc.get("execution_record") or {}).get("progress_tracker") or {}
    step = tracker.get("current_step") or {}
    if step.get("step_name") != "tool_execution":
        return 0
    return int((step.get("detail") or {}).get("done", 0))


@dataclass
class Samples:
    """Milliseconds per measure, the conditions they were taken under, and the missions that
    did not do what the measure needs (a pause that lost the race to the end, a resumed or
    retried mission that did not complete)."""

    interval_s: float
    pause_between_steps: list[float] = field(default_factory=list)
    pause_in_crawl: list[float] = field(default_factory=list)
    resume: list[float] = field(default_factory=list)
    retry: list[float] = field(default_factory=list)
    pages_read_at_pause: list[float] = field(default_factory=list)
    missed: Counter[str] = field(default_factory=Counter)


def measure(
    user: Caller,
    db: firestore.Client,
    worker: Function,
    dead_letter: Function,
    slow_worker: Function,
    settings: Mapping[str, str],
    count: int,
) -> Samples:
    """`count` of each measure; `slow_worker` (not started) runs the missions paused between
    steps with `settings` and steps held STEP_DELAY_SECONDS, then `worker` gets the
    subscription back."""
    interval = Settings.from_env({**os.environ, **settings}).progress_min_interval_seconds
    samples = Samples(interval)
    log = Path(tempfile.gettempdir()) / "bench-worker-slow-steps.log"
    try:
        slowed = {**settings, "BUDDY_FAULT_STEP_DELAY_SECONDS": str(STEP_DELAY_SECONDS)}
        slow_worker.start(slowed, log)
        set_up_pubsub(slow_worker.url, dead_letter.url)
        # The first pause warms the new worker up and is not counted. The others are sent at
        # moments spread over one progress interval after the claim.
        offsets = [0.0] + [interval * n / count for n in range(count)]
        warm_up, *timed = [
            guarded(samples, "pause_between_steps", pause_between_steps, user, db, offset)
            for offset in offsets
        ]
    finally:
        set_up_pubsub(worker.url, dead_letter.url)
        slow_worker.stop()
    if warm_up is not None:
        warm_id, warm_listener, _ = warm_up
        if warm_id is not None:
            user.call("POST", f"/missions/{warm_id}/cancel")
        warm_listener.close()
    # On the emulator, the first push after a subscription changes endpoint comes most of a
    # second late (production never moves it): one untimed mission takes that.
    run_untimed(user, db)
    for paused in timed:
        if paused is None:
            continue  # counted as missed by `guarded`
        mission_id, listener, took_ms = paused
        if mission_id is None or took_ms is None:
            samples.missed["pause_between_steps"] += 1
        else:
            samples.pause_between_steps.append(took_ms)
            guarded(samples, "resume", resume, user, mission_id, listener, samples)
        listener.close()
    site = LocalServer()
    site.start()
    try:
        for _ in range(count):
            guarded(samples, "pause_in_crawl", pause_in_crawl, user, db, site, samples)
        for _ in range(count):
            guarded(samples, "retry", retry, user, db, site, samples)
    finally:
        site.stop()
    return samples


def guarded(samples: Samples, key: str, measure: Callable[..., T], *args: Any) -> T | None:
    """One sample; a listener that saw nothing in time counts as missed (and is said on
    stderr) instead of ending the whole run."""
    try:
        return measure(*args)
    except TimeoutError as e:
        print(f"{key}: missed: {e}", file=sys.stderr, flush=True)
        samples.missed[key] += 1
        return None


def pause_between_steps(
    user: Caller, db: firestore.Client, after_claim_s: float
) -> tuple[str | None, Listener, float | None]:
    """A mission paused `after_claim_s` after its claim was seen: its id and the pause's
    milliseconds if it paused (None if it ended first), and its listener."""
    mission_id = user.approved("calculate 6*7+1")
    listener = Listener(db, mission_id)
    user.call("POST", f"/missions/{mission_id}/execute")
    claimed, _ = listener.first(running)
    time.sleep(max(0.0, claimed + after_claim_s - time.time()))
    sent = time.time()
    user.call("POST", f"/missions/{mission_id}/pause")
    arrived, doc = listener.first(stopped, after=sent)
    if doc["status"] != "paused":
        return None, listener, None
    return mission_id, listener, (arrived - sent) * 1000


def run_untimed(user: Caller, db: firestore.Client) -> None:
    mission_id = user.approved("calculate 1+1")
    listener = Listener(db, mission_id)
    try:
        user.call("POST", f"/missions/{mission_id}/execute")
        listener.first(ended)
    finally:
        listener.close()


def resume(user: Caller, mission_id: str, listener: Listener, samples: Samples) -> None:
    sent = time.time()
    user.call("POST", f"/missions/{mission_id}/resume")
    moved, _ = listener.first(running, after=sent)
    samples.resume.append((moved - sent) * 1000)
    _, end = listener.first(ended, after=sent)
    if end["status"] != "completed":
        samples.missed["resume"] += 1


def slow_crawl(site: LocalServer) -> str:
    """CRAWL_PAGES pages linking to each other, each answered after PAGE_DELAY_SECONDS; the
    first page's URL."""
    prefix = f"/bench-crawl-{uuid.uuid4().hex[:8]}"
    paths = [f"{prefix}/p{n}" for n in range(1, CRAWL_PAGES + 1)]
    links = "".join(f'<a href="{path}">{path}</a> ' for path in paths)
    for n, path in enumerate(paths, 1):
        html = f"<title>Part {n}</title><main><p>Part {n} of the crawl.</p>{links}</main>"
        site.route(path, Reply(body=html, delay=PAGE_DELAY_SECONDS))
    return site.url(paths[0])


def pause_in_crawl(user: Caller, db: firestore.Client, site: LocalServer, samples: Samples) -> None:
    """A crawl paused once its first page was seen read; cancelled once paused."""
    url = slow_crawl(site)
    mission_id = user.approved(f"extract {url}", scope=SCOPE, inputs={"max_pages": CRAWL_PAGES})
    listener = Listener(db, mission_id)
    try:
        user.call("POST", f"/missions/{mission_id}/execute")
        listener.first(lambda doc: pages_read(doc) >= 1)
        sent = time.time()
        user.call("POST", f"/missions/{mission_id}/pause")
        arrived, doc = listener.first(stopped, after=sent)
        where = (doc.get("pause_reason") or {}).get("step_name")
        if doc["status"] != "paused" or where != "tool_execution":
            samples.missed["pause_in_crawl"] += 1  # the crawl ended before the pause reached it
        else:
            samples.pause_in_crawl.append((arrived - sent) * 1000)
            samples.pages_read_at_pause.append(pages_read(doc))
        if doc["status"] not in TERMINAL:
            user.call("POST", f"/missions/{mission_id}/cancel")
            listener.first(ended, after=sent)
    finally:
        listener.close()


def retry(user: Caller, db: firestore.Client, site: LocalServer, samples: Samples) -> None:
    """A mission failed on a page that was not there yet, retried once it is."""
    path = f"/bench-retry-{uuid.uuid4().hex[:8]}"
    mission_id = user.approved(f"extract {site.url(path)}", scope=SCOPE)
    listener = Listener(db, mission_id)
    try:
        user.call("POST", f"/missions/{mission_id}/execute")
        _, failed = listener.first(ended)
        error = (failed.get("execution_record") or {}).get("error") or {}
        if failed["status"] != "failed" or error.get("step_name") != "tool_execution":
            samples.missed["retry"] += 1
            return
        site.page(path, "<title>Here now</title><main><p>Served on the second run.</p></main>")
        sent = time.time()
        user.call("POST", f"/missions/{mission_id}/retry")
        moved, _ = listener.first(running, after=sent)
        samples.retry.append((moved - sent) * 1000)
        _, end = listener.first(ended, after=sent)
        if end["status"] != "completed":
            samples.missed["retry"] += 1
    finally:
        listener.close()
