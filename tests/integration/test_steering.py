"""Steering missions in flight on the real stack: edit, pause and resume (between steps and
inside a crawl), ask instead of fail, pause expiry, retry and clone."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable

import requests

from buddy.devstack import Function

from ..localserver import LocalServer, Reply
from .conftest import (
    MissionWatcher,
    Stack,
    User,
    events_of,
    start_watched,
    wait_for_step,
    wait_until,
)

SCOPE = {"allowed_domains": ["127.0.0.1"]}
STEPS = [
    "verification",
    "intent_classification",
    "budget_check",
    "tool_selection",
    "tool_execution",
    "artifact_creation",
    "finalize",
]


def slow_crawl(site: LocalServer, pages: int = 5, delay: float = 0.6) -> tuple[str, list[str]]:
    """Linked pages, each slow to answer; returns the first URL and every page's path."""
    prefix = f"/crawl-{uuid.uuid4().hex[:8]}"
    paths = [f"{prefix}/p{n}" for n in range(1, pages + 1)]
    links = "".join(f'<a href="{path}">{path}</a> ' for path in paths)
    for n, path in enumerate(paths, 1):
        html = f"<title>Part {n}</title><main><p>Part {n} text.</p>{links}</main>"
        site.route(path, Reply(body=html, delay=delay))
    return site.url(paths[0]), paths


def status_of(user: User, mission_id: str) -> str:
    return str(user.call("GET", f"/missions/{mission_id}").json()["status"])


def wait_status(user: User, mission_id: str, status: str, timeout: float = 60) -> dict:
    wait_until(lambda: status_of(user, mission_id) == status, f"{mission_id} {status}", timeout)
    return dict(user.call("GET", f"/missions/{mission_id}").json())


def assert_each_step_once_and_never_back(
    user: User, mission_id: str, watcher: MissionWatcher
) -> None:
    mission = user.call("GET", f"/missions/{mission_id}").json()
    steps = mission["execution_record"]["progress_tracker"]["completed_steps"]
    assert [s["step_name"] for s in steps] == STEPS
    events = events_of(user, mission_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["step_name"] for e in events if e["type"] == "step_completed"] == STEPS
    percents = watcher.percents()
    assert percents == sorted(percents), percents


# ---- edit -------------------------------------------------------------------------------------


def test_edits_follow_the_missions_state(alice: User, bob: User) -> None:
    """Any field before it runs (approved back to proposed); a bad field 422; another user's
    mission 404; a finished one 409 — each answer saying why."""
    mission_id = alice.create("calculate 1+1")["mission_id"]
    alice.call("POST", f"/missions/{mission_id}/approve")
    edited = alice.call("PATCH", f"/missions/{mission_id}", json={"objective": "calculate 2+2"})
    assert edited.status_code == 200, edited.text
    assert (edited.json()["status"], edited.json()["objective"]) == ("proposed", "calculate 2+2")
    bad = alice.call("PATCH", f"/missions/{mission_id}", json={"budget_usd": 0})
    assert bad.status_code == 422 and "budget_usd" in bad.json()["error"]["message"]
    unknown = alice.call("PATCH", f"/missions/{mission_id}", json={"colour": "red"})
    assert unknown.status_code == 422
    assert bob.call("PATCH", f"/missions/{mission_id}", json={"budget_usd": 2}).status_code == 404
    alice.call("POST", f"/missions/{mission_id}/approve")
    assert alice.call("POST", f"/missions/{mission_id}/execute").status_code == 202
    wait_status(alice, mission_id, "completed")
    finished = alice.call("PATCH", f"/missions/{mission_id}", json={"budget_usd": 2})
    assert finished.status_code == 409
    assert finished.json()["error"]["message"].startswith("Cannot edit a mission that is completed")
    log = [e["type"] for e in events_of(alice, mission_id)]
    assert log[:4] == [
        "mission_created",
        "mission_approved",
        "mission_modified",
        "mission_approved",
    ]


# ---- pause and resume ------------------------------------------------------------------------


def test_a_crawl_paused_between_pages_resumes_without_fetching_any_page_twice(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    """Paused inside a five-page crawl, the mission keeps the pages it read; resumed, it
    reads the rest: every page fetched once, each step once, percent never down."""
    url, paths = slow_crawl(site)
    mission_id, watcher = start_watched(
        alice, watch, f"extract {url}", scope=SCOPE, inputs={"max_pages": 5}
    )
    wait_until(
        lambda: any(55 < p < 80 for p in watcher.percents()), "the crawl read a page", timeout=30
    )
    assert alice.call("POST", f"/missions/{mission_id}/pause").json()["pause_requested"] is True
    paused = wait_status(alice, mission_id, "paused")
    assert paused["pause_reason"]["code"] == "requested"
    assert paused["lease_expires_at"] is None
    read_before = [p for p in site.paths if p in paths]
    assert 1 <= len(read_before) < 5

    accepted = alice.call("POST", f"/missions/{mission_id}/resume")
    assert accepted.status_code == 202 and accepted.json()["status"] == "queued"
    assert watcher.wait_terminal(timeout=60)["status"] == "completed"
    assert sorted(p for p in site.paths if p in paths) == sorted(paths)  # each page once
    artifact = alice.call("GET", f"/missions/{mission_id}/artifact").json()
    assert all(f"Part {n} text." in artifact["content"] for n in range(1, 6))
    assert_each_step_once_and_never_back(alice, mission_id, watcher)


def test_a_mission_paused_between_steps_on_a_worker_that_then_dies_resumes_elsewhere(
    alice: User,
    start_worker: Callable[..., Function],
    stack: Stack,
    watch: Callable[[str], MissionWatcher],
) -> None:
    """A paused mission holds no worker: killing the worker it ran on changes nothing, and
    a resume runs the remaining steps on another worker."""
    doomed = start_worker(BUDDY_FAULT_STEP_DELAY_SECONDS="1")
    mission_id, watcher = start_watched(alice, watch, "calculate 3*3")
    wait_for_step(watcher, "intent_classification")
    alice.call("POST", f"/missions/{mission_id}/pause")
    paused = wait_status(alice, mission_id, "paused")
    assert paused["pause_reason"]["step_name"] == "budget_check"
    assert doomed.process is not None
    os.killpg(doomed.process.pid, signal.SIGKILL)
    doomed.process.wait()
    stack.feed_worker()
    assert alice.call("POST", f"/missions/{mission_id}/resume").status_code == 202
    assert watcher.wait_terminal(timeout=60)["status"] == "completed"
    assert_each_step_once_and_never_back(alice, mission_id, watcher)


def test_a_pause_racing_completion_ends_in_one_state(
    alice: User, start_worker: Callable[..., Function], watch: Callable[[str], MissionWatcher]
) -> None:
    """A pause asked during the last step loses the race: the mission completes, once."""
    start_worker(BUDDY_FAULT_STEP_DELAY_SECONDS="1")
    mission_id, watcher = start_watched(alice, watch, "calculate 4*4")
    wait_for_step(watcher, "finalize")
    alice.call("POST", f"/missions/{mission_id}/pause")
    assert watcher.wait_terminal(timeout=60)["status"] == "completed"
    types = [e["type"] for e in events_of(alice, mission_id)]
    assert "mission_paused" not in types and types.count("mission_completed") == 1


# ---- ask instead of fail ---------------------------------------------------------------------


def test_an_ask_on_budget_is_lifted_by_an_edit_and_a_resume(
    alice: User, watch: Callable[[str], MissionWatcher]
) -> None:
    """An ask mission over budget pauses saying what it needs; raising the budget and
    resuming completes it."""
    mission_id, watcher = start_watched(
        alice, watch, "calculate 2+2", budget_usd=0.00005, on_limit="ask"
    )
    paused = wait_status(alice, mission_id, "paused")
    reason = paused["pause_reason"]
    assert reason["message"] == (
        "Budget exceeded: $0.0001 > $0.00005 limit — raise the budget to continue"
    )
    assert (reason["code"], reason["needed_usd"]) == ("budget_exceeded", 0.0001)
    assert reason["expires_at"] is not None
    low = alice.call("PATCH", f"/missions/{mission_id}", json={"objective": "calculate 3+3"})
    assert low.status_code == 409  # paused: only the limits may change
    raised = alice.call("PATCH", f"/missions/{mission_id}", json={"budget_usd": 0.0001})
    assert raised.status_code == 200, raised.text
    assert alice.call("POST", f"/missions/{mission_id}/resume").status_code == 202
    assert watcher.wait_terminal(timeout=60)["status"] == "completed"
    assert_each_step_once_and_never_back(alice, mission_id, watcher)


def test_an_ask_on_an_out_of_scope_redirect_is_lifted_by_allowing_the_host(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    """A page redirecting to a host outside the allowed domains pauses an ask mission naming
    the host; allowing it and resuming follows the redirect and completes."""
    path = f"/away-{uuid.uuid4().hex[:8]}"
    site.page(path + "/there", "<title>There</title><p>far away</p>")
    elsewhere = site.url(path + "/there").replace("127.0.0.1", "localhost")
    site.redirect(path, elsewhere)
    mission_id, watcher = start_watched(
        alice, watch, f"extract {site.url(path)}", scope=SCOPE, on_limit="ask"
    )
    paused = wait_status(alice, mission_id, "paused")
    assert (paused["pause_reason"]["code"], paused["pause_reason"]["host"]) == (
        "out_of_scope",
        "localhost",
    )
    scope = {"allowed_domains": ["127.0.0.1", "localhost"]}
    assert alice.call("PATCH", f"/missions/{mission_id}", json={"scope": scope}).status_code == 200
    alice.call("POST", f"/missions/{mission_id}/resume")
    assert watcher.wait_terminal(timeout=60)["status"] == "completed"
    artifact = alice.call("GET", f"/missions/{mission_id}/artifact").json()
    assert "far away" in artifact["content"]


def test_an_unanswered_ask_fails_when_it_expires(
    alice: User, stack: Stack, start_worker: Callable[..., Function]
) -> None:
    """With a short pause timeout, the sweeper fails an ask nobody answered, saying so."""
    start_worker(BUDDY_PAUSE_TIMEOUT_HOURS="0.0003")  # about a second
    mission_id = alice.launch("calculate 2+2", budget_usd=0.00005, on_limit="ask")
    wait_status(alice, mission_id, "paused")

    def swept_it() -> bool:
        requests.post(stack.sweeper_url, timeout=30)
        return status_of(alice, mission_id) == "failed"

    wait_until(swept_it, "the expired pause failed", timeout=30)
    error = alice.call("GET", f"/missions/{mission_id}").json()["execution_record"]["error"]
    assert error["code"] == "pause_expired"
    assert error["message"].startswith("Paused since it asked (Budget exceeded")


# ---- retry and clone -------------------------------------------------------------------------


def test_a_retry_after_the_site_is_fixed_resumes_at_the_failed_step(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    """A mission failed on a missing page is retried once the page exists: its next run
    starts at tool_execution, runs no earlier step again, and completes."""
    path = f"/later-{uuid.uuid4().hex[:8]}"
    mission_id, watcher = start_watched(alice, watch, f"extract {site.url(path)}", scope=SCOPE)
    failed = watcher.wait_terminal()
    assert failed["status"] == "failed"
    assert failed["execution_record"]["error"]["step_name"] == "tool_execution"
    site.page(path, "<title>Here now</title><p>fixed</p>")
    watcher = watch(mission_id)
    accepted = alice.call("POST", f"/missions/{mission_id}/retry")
    assert accepted.status_code == 202, accepted.text
    wait_until(lambda: status_of(alice, mission_id) == "completed", "the retry completed")
    mission = alice.call("GET", f"/missions/{mission_id}").json()
    assert mission["execution_record"]["run"] == 2
    events = events_of(alice, mission_id)
    started = [e["step_name"] for e in events if e["type"] == "step_started"]
    assert started.count("intent_classification") == 1 and started.count("tool_execution") == 2
    assert [e["message"] for e in events if e["type"] == "mission_retried"] == [
        "Run 2 starts at tool_execution"
    ]


def test_a_clone_is_a_new_proposed_mission(alice: User, bob: User) -> None:
    """Cloning gives a new proposed mission with the same fields and the overrides given;
    it is not another user's to clone."""
    source = alice.create("calculate 5*5", budget_usd=0.5)["mission_id"]
    cloned = alice.call("POST", f"/missions/{source}/clone", json={"budget_usd": 0.25})
    assert cloned.status_code == 201, cloned.text
    body = cloned.json()
    assert (body["status"], body["objective"], body["budget_usd"], body["cloned_from"]) == (
        "proposed",
        "calculate 5*5",
        0.25,
        source,
    )
    assert [e["type"] for e in events_of(alice, body["mission_id"])] == [
        "mission_created",
        "mission_cloned",
    ]
    assert alice.call("POST", f"/missions/{source}/clone").status_code == 201  # no body
    assert bob.call("POST", f"/missions/{source}/clone").status_code == 404


def test_pause_resume_retry_refuse_the_wrong_state(alice: User) -> None:
    """A proposed mission can't be paused, resumed or retried: 409 with the reason."""
    mission_id = alice.create("calculate 1+1")["mission_id"]
    for action in ("pause", "resume", "retry"):
        response = alice.call("POST", f"/missions/{mission_id}/{action}")
        assert response.status_code == 409, action
        assert response.json()["error"]["message"].startswith(f"Cannot {action} a mission")
