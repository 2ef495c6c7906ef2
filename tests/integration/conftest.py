"""Fixtures for tests against the real emulators, started by scripts/test.sh.

The API and the stage worker run as real functions-framework processes on free
ports, fed by a real Pub/Sub push subscription.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from google.cloud import firestore
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from buddy.config import LocalPorts
from buddy.devstack import CHROMIUM, CHROMIUM_FLAGS, Function, Ticker, set_up_pubsub, wait_for_http

from ..localserver import LocalServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TERMINAL = {"completed", "failed", "cancelled"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.emulators)


@pytest.fixture(scope="session", autouse=True)
def _emulators_running() -> None:
    missing = [
        v
        for v in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "FIREBASE_AUTH_EMULATOR_HOST")
        if not os.environ.get(v)
    ]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run these tests with scripts/test.sh")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Short leases and backoffs so that crash recovery happens within seconds in tests.
TEST_SETTINGS = {
    "BUDDY_PROGRESS_MIN_INTERVAL_SECONDS": "0.2",
    "THREADS": "32",
    "BUDDY_LEASE_SECONDS": "3",
    "BUDDY_RETRY_BACKOFF_SECONDS": "0.5",  # well over the write interval: retries show
    "BUDDY_QUEUE_TIMEOUT_SECONDS": "1",
    "BUDDY_PUBLISH_TIMEOUT_SECONDS": "2",
    "BUDDY_WEB_ALLOW_LOOPBACK": "1",
    "BUDDY_WEB_FETCH_TIMEOUT_SECONDS": "5",
    "BUDDY_SCHEDULER_TICK_SECONDS": "2",
    # Tests never reach the internet: no DuckDuckGo (the default). The stack's functions get
    # BUDDY_SEARCH_URL (the site's SearXNG-shaped API); other processes have no search.
    "BUDDY_SEARCH_PROVIDER": "searxng",
}


@dataclass
class Stack:
    api_url: str
    worker: Function
    worker_log: Path
    sweeper_url: str
    dead_letter_url: str
    scheduler_url: str
    ticker: Ticker  # calls the scheduler, as the local stack does

    def worker_logged(self, message: str) -> list[dict]:
        """The worker's structured log records with exactly this message."""
        records = []
        for line in self.worker_log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return [r for r in records if isinstance(r, dict) and r.get("message") == message]

    def feed_worker(self, worker_url: str | None = None) -> None:
        """Points the execution subscription at a worker (this stack's unless told)."""
        set_up_pubsub(worker_url or self.worker.url, self.dead_letter_url)


@pytest.fixture(scope="session")
def site() -> Iterator[LocalServer]:
    """Web pages and a SearXNG-shaped search API for the worker's tools, on loopback."""
    server = LocalServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(site: LocalServer) -> Iterator[Stack]:
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("*.log"):
        old.unlink()
    env = {**TEST_SETTINGS, "BUDDY_SEARCH_URL": site.base_url}
    targets = ("api", "worker", "sweeper", "dead_letter", "scheduler")
    functions = [Function(t, _free_port()) for t in targets]
    api, worker, sweeper, dead_letter, scheduler = functions
    worker_log = ARTIFACTS / "worker.log"
    for function in functions:
        function.start(env, ARTIFACTS / f"{function.target}.log")
    # As the local stack does: the scheduler ticks on its own (the sweeper the tests call).
    ticker = Ticker(scheduler.url, "tick", float(TEST_SETTINGS["BUDDY_SCHEDULER_TICK_SECONDS"]))
    stack = Stack(api.url, worker, worker_log, sweeper.url, dead_letter.url, scheduler.url, ticker)
    stack.feed_worker()
    wait_for_http(api.url + "/healthz")
    ticker.start()
    yield stack
    ticker.stop()
    for function in functions:
        function.stop()


@pytest.fixture
def start_api(stack: Stack) -> Iterator[Callable[..., str]]:
    """Starts an extra API process with some settings changed; returns its URL."""
    started: list[Function] = []

    def start(**env: str) -> str:
        api = Function("api", _free_port())
        api.start(env, ARTIFACTS / f"api-extra-{len(started)}.log")
        started.append(api)
        wait_for_http(api.url + "/healthz")
        return api.url

    yield start
    for api in started:
        api.stop()


@pytest.fixture
def start_worker(stack: Stack) -> Iterator[Callable[..., Function]]:
    """Starts a worker with some settings changed and feeds it the execution subscription
    for the test; the stack's own worker gets it back afterwards."""
    started: list[Function] = []

    def start(**env: str) -> Function:
        worker = Function("worker", _free_port())
        worker.start({**TEST_SETTINGS, **env}, ARTIFACTS / f"worker-extra-{len(started)}.log")
        started.append(worker)
        stack.feed_worker(worker.url)
        return worker

    yield start
    stack.feed_worker()
    for worker in started:
        worker.stop()


def shell_env(config_home: Path, local_uid: str) -> dict[str, str]:
    """A person's shell for `buddy`: no emulator variables or project (the local stack's
    defaults apply), nobody signed in yet, their own config folder and local user."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_IN_A_SHELL}
    return {**env, "XDG_CONFIG_HOME": str(config_home), "BUDDY_LOCAL_UID": local_uid}


NOT_IN_A_SHELL = {
    "BUDDY_API_URL",
    "BUDDY_ID_TOKEN",
    "FIRESTORE_EMULATOR_HOST",
    "FIREBASE_AUTH_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "GCLOUD_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "BUDDY_PROJECT_ID",
}


@pytest.fixture(scope="session")
def db() -> firestore.Client:
    return firestore.Client(project=os.environ.get("GCLOUD_PROJECT", "demo-buddy"))


@dataclass
class User:
    """A signed-in person calling the API with their own ID token."""

    uid: str
    token: str
    api_url: str
    session: requests.Session = field(default_factory=requests.Session)

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return self.session.request(
            method, self.api_url + path, headers=headers, timeout=30, **kwargs
        )

    def create(self, objective: str = "calculate 2*(3+4)", **fields: Any) -> dict[str, Any]:
        response = self.call("POST", "/missions", json={"objective": objective, **fields})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def launch(self, objective: str = "calculate 2*(3+4)", **fields: Any) -> str:
        """Creates, approves and executes a mission; returns its id."""
        mission_id = str(self.create(objective, **fields)["mission_id"])
        assert self.call("POST", f"/missions/{mission_id}/approve").status_code == 200
        response = self.execute(mission_id)
        assert response.status_code == 202, response.text
        return mission_id

    def execute(self, mission_id: str) -> requests.Response:
        """Executes the approved mission, sending again after a 503 as a client would: a
        burst on one loaded emulator may find its documents too busy for the moment. A 503
        changed nothing (checked: the mission is still approved)."""
        for _ in range(2):
            response = self.call("POST", f"/missions/{mission_id}/execute")
            if response.status_code != 503:
                return response
            assert self.call("GET", f"/missions/{mission_id}").json()["status"] == "approved"
        return self.call("POST", f"/missions/{mission_id}/execute")


def sign_up() -> tuple[str, str]:
    host = os.environ["FIREBASE_AUTH_EMULATOR_HOST"]
    response = requests.post(
        f"http://{host}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=emulator",
        json={"returnSecureToken": True},
        timeout=10,
    )
    response.raise_for_status()
    body = response.json()
    return body["localId"], body["idToken"]


@pytest.fixture
def make_user(stack: Stack) -> Callable[[], User]:
    def make() -> User:
        uid, token = sign_up()
        return User(uid, token, stack.api_url)

    return make


@pytest.fixture
def alice(make_user: Callable[[], User]) -> User:
    return make_user()


@pytest.fixture
def bob(make_user: Callable[[], User]) -> User:
    return make_user()


class MissionWatcher:
    """Records every snapshot of a mission document, as a client listener sees them."""

    def __init__(self, db: firestore.Client, mission_id: str) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self._terminal = threading.Event()
        self._ref = db.collection("missions").document(mission_id)
        self._watch = self._ref.on_snapshot(self._on)

    def _on(self, docs: list[Any], _changes: Any, _read_time: Any) -> None:
        for doc in docs:
            data = doc.to_dict()
            if data:
                self.snapshots.append(data)
                if data["status"] in TERMINAL:
                    self._terminal.set()

    def keep_listening(self) -> None:
        """Listens again if the listener stopped, as a client app would: its stream can end
        without recovery (the emulator has sent a ListenResponse the client could not
        parse, before the first snapshot even). The new listener starts with the document
        as it is, so states in between may go unseen, never out of order."""
        if not self._watch.is_active:
            self._watch.unsubscribe()
            self._watch = self._ref.on_snapshot(self._on)

    def wait_terminal(self, timeout: float = 30) -> dict[str, Any]:
        """The terminal snapshot. A listener may also stall without ending (seen: 0
        snapshots in 60 s of a mission long completed): once the document itself has been
        terminal for 5 s unheard, that read is the answer."""
        deadline = time.monotonic() + timeout
        unheard_since: float | None = None
        while not self._terminal.wait(0.5) and time.monotonic() < deadline:
            self.keep_listening()
            if unheard_since is None:
                if self.stored().get("status") in TERMINAL:
                    unheard_since = time.monotonic()
            elif time.monotonic() - unheard_since > 5:
                self._watch.unsubscribe()
                self.snapshots.append(self.stored())
                return self.snapshots[-1]
        if not self._terminal.is_set():
            stored = self.stored().get("status")
            seen = (self.last or {}).get("status")
            pytest.fail(
                f"not terminal after {timeout}s: the listener saw {seen!r} "
                f"({len(self.snapshots)} snapshots), the document is {stored!r}: {self.last}"
            )
        self._watch.unsubscribe()
        return self.last

    def stored(self) -> dict[str, Any]:
        """The document as it is now, read rather than listened to."""
        return self._ref.get().to_dict() or {}

    @property
    def last(self) -> dict[str, Any] | None:
        return self.snapshots[-1] if self.snapshots else None

    def trackers(self) -> list[dict[str, Any]]:
        """The progress tracker of every snapshot taken once the run had started."""
        records = (s.get("execution_record") or {} for s in self.snapshots)
        return [r["progress_tracker"] for r in records if r.get("progress_tracker")]

    def percents(self) -> list[int]:
        return [t["progress_percent"] for t in self.trackers()]


@pytest.fixture
def watch(db: firestore.Client) -> Callable[[str], MissionWatcher]:
    return lambda mission_id: MissionWatcher(db, mission_id)


def start_watched(
    user: User, watch: Callable[[str], MissionWatcher], objective: str, **fields: object
) -> tuple[str, MissionWatcher]:
    """Creates and approves a mission, attaches a listener, then executes it."""
    mission_id = user.create(objective, **fields)["mission_id"]
    assert user.call("POST", f"/missions/{mission_id}/approve").status_code == 200
    watcher = watch(mission_id)
    assert user.call("POST", f"/missions/{mission_id}/execute").status_code == 202
    return mission_id, watcher


def wait_until(happened: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Waits for something observable instead of sleeping a guess."""
    deadline = time.monotonic() + timeout
    while not happened():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.05)


def wait_for_step(watcher: MissionWatcher, step: str, timeout: float = 30) -> None:
    """Waits until `step` is running, or has been: seen by the listener, or read from the
    document.

    A listener promises the latest state, not every state: when its stream is reset (the
    emulator once sent a ListenResponse the client could not parse) it resumes with the
    document as it is then, and a one-second step may have passed unseen. And a worker
    writes progress at most once a second: on a loaded machine a step can start and end
    between two writes (its start is never stored). The read keeps such a test about the
    worker rather than about the listener's stream; a step already past returns too, and
    the test then meets the mission later than it asked for (a cancel's answer says where)."""
    polls = itertools.count()

    def reached(document: dict[str, Any]) -> bool:
        if document.get("status") in {"completed", "failed", "cancelled"}:
            return True
        tracker = (document.get("execution_record") or {}).get("progress_tracker") or {}
        completed = {s["step_name"] for s in tracker.get("completed_steps") or []}
        return (tracker.get("current_step") or {}).get("step_name") == step or step in completed

    def seen() -> bool:
        watcher.keep_listening()
        if any(reached(s) for s in watcher.snapshots):
            return True
        if next(polls) % 5:  # a read every fifth poll (0.25 s apart), lighter on the emulator
            return False
        return reached(watcher.stored())

    wait_until(seen, f"{step} reached", timeout)


def events_of(user: User, mission_id: str) -> list[dict]:
    response = user.call("GET", f"/missions/{mission_id}/events")
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


# ---- the dashboard in Chromium (one browser for the session) ----------------------------

DASHBOARD = LocalPorts.from_env().url("hosting") + "/"
# Remembers every value each progress bar showed, so a test can tell a live bar from a jump.
RECORD_PROGRESS = """
window.__progress = {};
new MutationObserver((changes) => {
  for (const change of changes) {
    const bar = change.target;
    const article = bar.closest && bar.closest("article.mission");
    if (!article || change.attributeName !== "aria-valuenow") continue;
    const id = article.dataset.missionId;
    (window.__progress[id] ||= []).push(Number(bar.getAttribute("aria-valuenow")));
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["aria-valuenow"]});
"""


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def without_local_user(route: Route) -> None:
    """Serves the real buddy-config.json minus `localUser`: nobody is signed in on its own."""
    response = route.fetch()
    config = response.json()
    config.pop("localUser", None)
    route.fulfill(response=response, json=config)


@pytest.fixture
def open_dashboard(browser: Browser, stack: Stack) -> Iterator[Callable[[], Page]]:
    """Opens the dashboard in a fresh browser profile: a new anonymous user each time, signed
    in as a person would, with "Try it without an account"."""
    contexts = []

    def open_page(timezone_id: str | None = None) -> Page:
        zone = {"timezone_id": timezone_id} if timezone_id else {}
        context = browser.new_context(viewport={"width": 1280, "height": 900}, **zone)
        contexts.append(context)
        context.route("**/buddy-config.json", without_local_user)
        page = context.new_page()
        page.add_init_script(RECORD_PROGRESS)
        page.goto(f"{DASHBOARD}?api={stack.api_url}")
        page.click("#signin-anonymous", timeout=20_000)
        expect(page.locator("#auth-status")).to_contain_text("Signed in", timeout=20_000)
        expect(page.locator("#connection")).to_contain_text("live", timeout=20_000)
        return page

    yield open_page
    for context in contexts:
        context.close()
