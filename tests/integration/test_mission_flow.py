"""The original design's sample flow and its failure scenarios, on the real emulators."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.cloud import firestore, pubsub_v1

from buddy.config import EXECUTIONS_TOPIC, PROJECT_ID
from buddy.service.stages import STAGES

from ..localserver import LocalServer, Reply
from .conftest import MissionWatcher, Stack, User, events_of, start_watched

STEP_NAMES = [stage.name for stage in STAGES]
END_PERCENTS = [stage.end_percent for stage in STAGES]


def test_sample_flow_reaches_100_with_seven_steps_in_order(
    alice: User, watch: Callable[[str], MissionWatcher], db: firestore.Client
) -> None:
    """Create → approve → execute ends completed at 100% with the seven steps in order."""
    mission_id, watcher = start_watched(alice, watch, "calculate 2*(3+4)")
    final = watcher.wait_terminal()

    assert final["status"] == "completed"
    percents = watcher.percents()
    assert percents == sorted(percents), f"progress went backwards: {percents}"
    progress = alice.call("GET", f"/missions/{mission_id}/progress").json()
    assert progress["progress_percent"] == 100
    assert progress["estimated_time_remaining"] == 0
    assert progress["current_step"] is None
    steps = progress["completed_steps"]
    assert [s["step_name"] for s in steps] == STEP_NAMES
    assert [s["progress_percent"] for s in steps] == END_PERCENTS
    assert all(s["status"] == "completed" and s["total_steps"] == 7 for s in steps)

    artifact = alice.call("GET", f"/missions/{mission_id}/artifact").json()
    assert artifact["content"] == "14"
    record = alice.call("GET", f"/missions/{mission_id}").json()["execution_record"]
    assert record["tool_used"] == "calculate"
    assert record["artifact_reference"]["artifact_id"] == artifact["artifact_id"]
    assert record["cost_usd"]["actual"] > 0

    # "Refresh the browser": a brand-new client reads exactly the same progress.
    fresh = firestore.Client(project=db.project)
    stored = fresh.collection("missions").document(mission_id).get().to_dict()
    stored_steps = stored["execution_record"]["progress_tracker"]["completed_steps"]
    # Stored steps say `detail: null` where the API leaves it out: no sub-steps either way.
    assert [{k: v for k, v in s.items() if v is not None} for s in stored_steps] == steps
    assert alice.call("GET", f"/missions/{mission_id}/progress").json() == progress


def test_event_log_is_gapless_and_ordered(alice: User) -> None:
    """The event log numbers events 1..n and tells the whole story in order."""
    mission_id = alice.launch()
    deadline = time.monotonic() + 30
    while (events := events_of(alice, mission_id))[-1]["type"] != "mission_completed":
        assert time.monotonic() < deadline, events[-1]
        time.sleep(0.1)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[:3] == ["mission_created", "mission_approved", "mission_queued"]
    assert types.count("step_started") == 7 and types.count("step_completed") == 7
    later = events_of(alice, mission_id)
    assert later == events
    after = alice.call("GET", f"/missions/{mission_id}/events", params={"after_seq": 15}).json()
    assert [e["seq"] for e in after["events"]] == list(range(16, len(events) + 1))


def test_listener_sees_steps_as_they_happen(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    """A Python on_snapshot listener sees the run start and its slow step running, not only
    the end state (quick steps may share a write)."""
    site.route("/slow-flow", Reply(body="<title>Slow</title><p>finally</p>", delay=1.0))
    _, watcher = start_watched(
        alice, watch, f"extract {site.url('/slow-flow')}", scope={"allowed_domains": ["127.0.0.1"]}
    )
    assert watcher.wait_terminal()["status"] == "completed"
    shown = [
        (t["progress_percent"], (t["current_step"] or {}).get("step_name"))
        for t in watcher.trackers()
    ]
    assert shown[0] == (5, "verification"), shown
    assert (55, "tool_execution") in shown, shown
    assert shown[-1][0] == 100


@pytest.mark.parametrize(
    ("objective", "fields", "step", "message"),
    [
        pytest.param(
            "calculate 2+2",
            {"budget_usd": 0.00005},
            "budget_check",
            "Budget exceeded: $0.0001 > $0.00005 limit",
            id="budget-exceeded",
        ),
        pytest.param(
            "hello there",
            {},
            "tool_selection",
            "Tool selection failed: confidence 0.10 < 0.15",
            id="low-confidence",
        ),
        pytest.param(
            "calculate 1/0",
            {},
            "tool_execution",
            "Tool execution failed: division by zero",
            id="tool-error",
        ),
    ],
)
def test_failure_scenarios_end_failed_at_their_step(
    alice: User,
    watch: Callable[[str], MissionWatcher],
    objective: str,
    fields: dict[str, object],
    step: str,
    message: str,
) -> None:
    """Each failure ends `failed` at the right step, with a message a person understands."""
    mission_id, watcher = start_watched(alice, watch, objective, **fields)
    final = watcher.wait_terminal()
    assert final["status"] == "failed"
    error = final["execution_record"]["error"]
    assert (error["step_name"], error["message"]) == (step, message)
    current = final["execution_record"]["progress_tracker"]["current_step"]
    assert (current["step_name"], current["status"]) == (step, "failed")
    stage = STEP_NAMES.index(step)
    expected_percent = END_PERCENTS[stage - 1] if stage else 0
    assert watcher.percents()[-1] >= expected_percent
    types = [e["type"] for e in events_of(alice, mission_id)]
    assert types[-2:] == ["step_failed", "mission_failed"]
    assert alice.call("GET", f"/missions/{mission_id}/artifact").status_code == 404


def publish_raw(data: bytes) -> None:
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(os.environ.get("GCLOUD_PROJECT", PROJECT_ID), EXECUTIONS_TOPIC)
    publisher.publish(topic, data).result(timeout=10)


def test_message_for_a_mission_never_queued_is_dropped(
    stack: Stack, alice: User, db: firestore.Client
) -> None:
    """A stray execution message for a proposed or approved mission (one whose execute was
    answered 503, say) is acknowledged and dropped: the mission does not run."""
    proposed = alice.create()["mission_id"]
    approved = alice.create()["mission_id"]
    alice.call("POST", f"/missions/{approved}/approve")
    for mission_id in (proposed, approved):
        publish_raw(json.dumps({"mission_id": mission_id}).encode())
    deadline = time.monotonic() + 30
    dropped: set[str] = set()
    while dropped != {proposed, approved}:
        assert time.monotonic() < deadline, f"only {dropped} dropped"
        time.sleep(0.1)
        records = stack.worker_logged("mission is not queued, dropping delivery")
        dropped = {r["mission_id"] for r in records} & {proposed, approved}
    for mission_id, status in ((proposed, "proposed"), (approved, "approved")):
        mission = db.collection("missions").document(mission_id).get().to_dict()
        assert (mission["status"], mission["execution_record"]) == (status, None)


def test_message_for_missing_mission_is_acknowledged(stack: Stack, db: firestore.Client) -> None:
    """An execution message for a mission that does not exist is logged once and not retried."""
    ghost = "m_doesnotexist" + base64.b32encode(os.urandom(5)).decode().lower()
    publish_raw(json.dumps({"mission_id": ghost}).encode())
    publish_raw(b"not json at all")
    time.sleep(3)  # Long enough for Pub/Sub to redeliver had the worker refused it.
    missing = stack.worker_logged("execution message for a missing mission")
    assert [r["mission_id"] for r in missing].count(ghost) == 1
    assert not db.collection("missions").document(ghost).get().exists
    assert stack.worker_logged("dropping poison message")


def test_five_concurrent_missions_track_independently(
    make_user: Callable[[], User], watch: Callable[[str], MissionWatcher]
) -> None:
    """Five missions executed at once each complete with their own steps and result."""
    users = [make_user() for _ in range(5)]
    runs = [
        start_watched(u, watch, f"calculate {n} * 1000 + {n}") for n, u in enumerate(users, start=1)
    ]
    with ThreadPoolExecutor(5) as pool:
        finals = list(pool.map(lambda run: run[1].wait_terminal(timeout=60), runs))
    for n, ((mission_id, watcher), final, user) in enumerate(
        zip(runs, finals, users, strict=True), start=1
    ):
        assert final["status"] == "completed"
        assert final["execution_record"]["result_summary"].endswith(f"= {n * 1000 + n}")
        steps = final["execution_record"]["progress_tracker"]["completed_steps"]
        assert [s["step_name"] for s in steps] == STEP_NAMES
        assert watcher.percents() == sorted(watcher.percents())
        seqs = [e["seq"] for e in events_of(user, mission_id)]
        assert seqs == list(range(1, len(seqs) + 1))


def test_execute_twice_runs_once(alice: User, watch: Callable[[str], MissionWatcher]) -> None:
    """A second execute is refused with 409 and the mission runs exactly once."""
    mission_id, watcher = start_watched(alice, watch, "calculate 6*7")
    second = alice.call("POST", f"/missions/{mission_id}/execute")
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "conflict"
    watcher.wait_terminal()
    types = [e["type"] for e in events_of(alice, mission_id)]
    assert types.count("mission_queued") == 1
    assert types.count("step_started") == 7
    assert types.count("mission_completed") == 1


def test_cancel_before_running_and_after_the_end(alice: User) -> None:
    """Cancel ends a mission that has not run; a finished mission can't be cancelled."""
    proposed = alice.create()["mission_id"]
    cancelled = alice.call("POST", f"/missions/{proposed}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert alice.call("POST", f"/missions/{proposed}/approve").status_code == 409
    types = [e["type"] for e in events_of(alice, proposed)]
    assert types == ["mission_created", "mission_cancelled"]


def test_list_is_newest_first_and_filters(make_user: Callable[[], User]) -> None:
    """The list shows only the caller's missions, newest first, by status and limit."""
    carol, dave = make_user(), make_user()
    ids = [carol.create(f"calculate {n}+{n}")["mission_id"] for n in range(3)]
    dave.create()
    assert carol.call("POST", f"/missions/{ids[1]}/approve").status_code == 200
    listed = carol.call("GET", "/missions").json()["missions"]
    assert [m["mission_id"] for m in listed] == ids[::-1]
    approved = carol.call("GET", "/missions", params={"status": "approved"}).json()["missions"]
    assert [m["mission_id"] for m in approved] == [ids[1]]
    limited = carol.call("GET", "/missions", params={"limit": 2}).json()["missions"]
    assert [m["mission_id"] for m in limited] == ids[:0:-1]
    assert carol.call("GET", "/missions", params={"limit": 101}).status_code == 422
    assert carol.call("GET", "/missions", params={"status": "bogus"}).status_code == 422
