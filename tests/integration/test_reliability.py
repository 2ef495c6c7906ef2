"""Fault injection against the real emulators: redelivery, SIGKILL, retries, cancels, outages.

A "faulty" worker is a real worker process started with the test hook
BUDDY_FAULT_STEP_DELAY_SECONDS, which pauses at the start of every step, so a
test can act (kill it, cancel) while a chosen step runs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from google.api_core.exceptions import AlreadyExists
from google.cloud import firestore, pubsub_v1

from buddy.config import EXECUTIONS_TOPIC
from buddy.devstack import Function
from buddy.service.stages import STAGES

from ..localserver import LocalServer, Received, Reply
from .conftest import (
    ARTIFACTS,
    TEST_SETTINGS,
    MissionWatcher,
    Stack,
    User,
    _free_port,
    events_of,
    start_watched,
    wait_for_step,
    wait_until,
)

STEP_NAMES = [stage.name for stage in STAGES]
END_PERCENTS = [stage.end_percent for stage in STAGES]
PROJECT = os.environ.get("GCLOUD_PROJECT", "demo-buddy")


def publish(data: bytes) -> str:
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(PROJECT, EXECUTIONS_TOPIC)
    return str(publisher.publish(topic, data).result(timeout=10))


def artifacts_of(db: firestore.Client, mission_id: str) -> list[dict]:
    query = db.collection("artifacts").where(
        filter=firestore.FieldFilter("mission_id", "==", mission_id)
    )
    return [s.to_dict() for s in query.stream()]


def assert_ran_exactly_once(user: User, db: firestore.Client, mission_id: str) -> dict:
    """One artifact, each step once and in order, one cost record, gapless events."""
    mission = user.call("GET", f"/missions/{mission_id}").json()
    assert mission["status"] == "completed", mission["execution_record"].get("error")
    steps = mission["execution_record"]["progress_tracker"]["completed_steps"]
    assert [s["step_name"] for s in steps] == STEP_NAMES
    assert len(artifacts_of(db, mission_id)) == 1
    assert mission["execution_record"]["cost_usd"]["actual"] is not None
    events = events_of(user, mission_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types.count("step_completed") == 7 and types.count("mission_completed") == 1
    return dict(mission)


@pytest.fixture
def faulty_worker(stack: Stack) -> Iterator[Function]:
    """A worker that pauses 1 s at every step, fed by the push subscription for this test."""
    worker = Function("worker", _free_port())
    worker.start(
        {**TEST_SETTINGS, "BUDDY_FAULT_STEP_DELAY_SECONDS": "1"}, ARTIFACTS / "worker-faulty.log"
    )
    stack.feed_worker(worker.url)
    yield worker
    stack.feed_worker()
    worker.stop()


def test_the_same_message_five_times_runs_once(
    alice: User,
    stack: Stack,
    site: LocalServer,
    db: firestore.Client,
    watch: Callable[[str], MissionWatcher],
) -> None:
    """Five concurrent deliveries of one mission: one run, one artifact, one cost record."""
    site.route("/slow-once", Reply(body="<title>Once</title><p>only once</p>", delay=1.0))
    mission_id, watcher = start_watched(
        alice, watch, f"extract {site.url('/slow-once')}", scope={"allowed_domains": ["127.0.0.1"]}
    )
    message = json.dumps({"mission_id": mission_id}).encode()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: publish(message), range(4)))
    assert watcher.wait_terminal()["status"] == "completed"

    def handled() -> list[str]:
        records = stack.worker_logged("delivery handled")
        return [r["outcome"] for r in records if r.get("mission_id") == mission_id]

    # Every delivery (the execute's and the four duplicates) ends acknowledged: one ran it.
    wait_until(lambda: len(handled()) == 5, "five deliveries handled")
    assert sorted(handled()) == ["completed", *["skipped"] * 4]
    assert_ran_exactly_once(alice, db, mission_id)
    assert [p for p in site.paths if p == "/slow-once"] == ["/slow-once"]
    assert watcher.percents() == sorted(watcher.percents())


def test_twenty_concurrent_executes_run_once(
    alice: User, db: firestore.Client, watch: Callable[[str], MissionWatcher]
) -> None:
    """Twenty simultaneous executes: one 202, nineteen 409, one run."""
    mission_id = alice.create("calculate 19+23")["mission_id"]
    assert alice.call("POST", f"/missions/{mission_id}/approve").status_code == 200
    watcher = watch(mission_id)
    with ThreadPoolExecutor(20) as pool:
        statuses = sorted(
            pool.map(
                lambda _: alice.call("POST", f"/missions/{mission_id}/execute").status_code,
                range(20),
            )
        )
    assert statuses == [202] + [409] * 19
    watcher.wait_terminal()
    assert_ran_exactly_once(alice, db, mission_id)
    assert [e["type"] for e in events_of(alice, mission_id)].count("mission_queued") == 1


@pytest.mark.parametrize("step", STEP_NAMES)
def test_worker_killed_in_any_step_is_resumed(
    step: str,
    alice: User,
    db: firestore.Client,
    stack: Stack,
    faulty_worker: Function,
    watch: Callable[[str], MissionWatcher],
) -> None:
    """SIGKILL in any step: after restart the mission completes, nothing is done twice, and
    a listener never sees progress go backwards."""
    mission_id, watcher = start_watched(alice, watch, "calculate 6*7")
    wait_for_step(watcher, step)
    assert faulty_worker.process is not None
    os.killpg(faulty_worker.process.pid, signal.SIGKILL)
    faulty_worker.process.wait()
    stack.feed_worker()  # "restart": a healthy worker takes the redelivery
    final = watcher.wait_terminal(timeout=60)
    mission = assert_ran_exactly_once(alice, db, mission_id)
    assert final["execution_record"]["runs"] == 2
    assert artifacts_of(db, mission_id)[0]["content"] == "42"
    percents = watcher.percents()
    assert percents == sorted(percents), percents
    assert mission["execution_record"]["progress_tracker"]["progress_percent"] == 100


def test_transient_failures_are_retried_then_succeed(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    """A page that answers 503 twice and then works: the mission completes after retries
    that clients can see."""
    answers = iter([Reply(503, "busy"), Reply(503, "busy")])

    def flaky(_: Received) -> Reply:
        return next(answers, Reply(body="<title>Back</title><p>recovered</p>"))

    site.route("/flaky", flaky)
    mission_id, watcher = start_watched(
        alice, watch, f"extract {site.url('/flaky')}", scope={"allowed_domains": ["127.0.0.1"]}
    )
    final = watcher.wait_terminal()
    assert final["status"] == "completed"
    assert final["execution_record"]["attempt"] == 3
    retries = [e for e in events_of(alice, mission_id) if e["type"] == "retry_scheduled"]
    assert [e["attempt"] for e in retries] == [2, 3]
    assert all("answered HTTP 503" in e["message"] for e in retries)
    seen_attempts = {(s.get("execution_record") or {}).get("attempt") for s in watcher.snapshots}
    assert {2, 3} <= seen_attempts  # a listener saw the retries as they happened


def test_a_tool_that_always_fails_transiently_gives_up(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    """Retries are bounded: the mission fails with the last error."""
    site.route("/down", Reply(503, "down"))
    _, watcher = start_watched(
        alice, watch, f"extract {site.url('/down')}", scope={"allowed_domains": ["127.0.0.1"]}
    )
    error = watcher.wait_terminal()["execution_record"]["error"]
    assert error["message"] == (
        f"Tool execution failed: {site.url('/down')} answered HTTP 503 (after 3 attempts)"
    )


def test_poison_message_is_acknowledged_without_a_retry_storm(stack: Stack) -> None:
    """A message that can't be parsed is logged once and never redelivered."""
    message_id = publish(b"not json at all")
    time.sleep(4)  # several redelivery periods, had the worker refused it
    dropped = stack.worker_logged("dropping poison message")
    assert [r["event_id"] for r in dropped].count(message_id) == 1


def test_cancel_at_each_step_and_racing_completion(
    alice: User,
    db: firestore.Client,
    faulty_worker: Function,
    watch: Callable[[str], MissionWatcher],
) -> None:
    """A cancel sent while step k shows running ends the mission in exactly one terminal
    state, and a consistent one: cancelled at the end of some step j at or after the step
    the cancel's own answer shows running (or, for the tool's step, at its start when the
    running tool noticed the cancel and stopped) with steps 1..j completed, its percent, and
    an artifact only if artifact_creation completed; or, when the worker reached the end
    first (always for a cancel during finalize), completed with every step — and a cancel
    answered 409 found it completed already.

    Which boundary is timing: the worker learns of a cancel from its own writes, at most one
    per progress interval, and a loaded emulator may take seconds to record the cancel (one
    sent at verification was recorded during finalize in a full run). The unit tests in
    tests/unit/test_reliability.py pin the exact boundary with a fake clock."""
    runs = [start_watched(alice, watch, f"calculate {n}*{n}") for n in range(len(STEP_NAMES))]

    def cancel_during(step: str, mission_id: str, watcher: MissionWatcher) -> tuple[int, str]:
        """The cancel's status, and the step its answer shows running (where it landed)."""
        wait_for_step(watcher, step)
        answer = alice.call("POST", f"/missions/{mission_id}/cancel")
        tracker = (answer.json().get("execution_record") or {}).get("progress_tracker") or {}
        return answer.status_code, (tracker.get("current_step") or {}).get("step_name", step)

    with ThreadPoolExecutor(len(runs)) as pool:
        answers = list(
            pool.map(
                lambda a: cancel_during(*a),
                [(s, m, w) for s, (m, w) in zip(STEP_NAMES, runs, strict=True)],
            )
        )
    # 409: the mission had ended before the cancel was recorded (it then must have completed).
    assert {status for status, _ in answers} <= {200, 409}, answers
    for (mission_id, watcher), (status, landed) in zip(runs, answers, strict=True):
        if status == 409:
            landed = "finalize"
        index = STEP_NAMES.index(landed)
        final = watcher.wait_terminal(timeout=60)
        types = [e["type"] for e in events_of(alice, mission_id)]
        endings = [
            t for t in types if t in {"mission_completed", "mission_cancelled", "mission_failed"}
        ]
        tracker = final["execution_record"]["progress_tracker"]
        completed = [s["step_name"] for s in tracker["completed_steps"]]
        if landed == "finalize" or final["status"] == "completed":
            assert final["status"] == "completed" and endings == ["mission_completed"], landed
            assert completed == STEP_NAMES and len(artifacts_of(db, mission_id)) == 1
            continue
        assert final["status"] == "cancelled", landed
        assert endings == ["mission_cancelled"]
        assert completed == STEP_NAMES[: len(completed)], landed
        stopped = len(completed) - 1  # the last step completed: the cancel's boundary
        if completed == STEP_NAMES[: STEP_NAMES.index("tool_execution")] and stopped + 1 >= index:
            # stopped at tool_execution's start (the tool noticed) or at the boundary before
            assert tracker["progress_percent"] in (
                END_PERCENTS[stopped],
                STAGES[stopped + 1].start_percent,
            )
        else:
            assert stopped >= index, (landed, completed)
            assert tracker["progress_percent"] == END_PERCENTS[stopped], landed
        made = "artifact_creation" in completed
        assert len(artifacts_of(db, mission_id)) == (1 if made else 0)


def test_execute_while_pubsub_is_down_is_503_and_changes_nothing(
    alice: User, watch: Callable[[str], MissionWatcher]
) -> None:
    """With Pub/Sub unreachable execute answers 503, the mission stays approved with its log
    unchanged, and a later execute works."""
    dead_port = _free_port()
    cut_off = Function("api", _free_port())
    cut_off.start(
        {**TEST_SETTINGS, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{dead_port}"},
        ARTIFACTS / "api-no-pubsub.log",
    )
    try:
        mission_id = alice.create("calculate 5*5")["mission_id"]
        alice.call("POST", f"/missions/{mission_id}/approve")
        before = (alice.call("GET", f"/missions/{mission_id}").json(), events_of(alice, mission_id))
        headers = {"Authorization": f"Bearer {alice.token}"}
        response = requests.post(
            f"{cut_off.url}/missions/{mission_id}/execute", headers=headers, timeout=30
        )
    finally:
        cut_off.stop()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    after = alice.call("GET", f"/missions/{mission_id}").json()
    assert after["status"] == "approved" and after["queued_at"] is None
    assert events_of(alice, mission_id) == before[1]
    watcher = watch(mission_id)
    assert alice.call("POST", f"/missions/{mission_id}/execute").status_code == 202
    assert watcher.wait_terminal()["status"] == "completed"


def push_body(mission_id: str) -> dict:
    """What the Pub/Sub push subscription sends the worker."""
    data = base64.b64encode(json.dumps({"mission_id": mission_id}).encode()).decode()
    return {
        "message": {
            "data": data,
            "messageId": f"direct-{mission_id}",
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": f"projects/{PROJECT}/subscriptions/direct-test",
    }


@pytest.fixture(autouse=True, scope="module")
def orphan_topic() -> None:
    """A topic nobody subscribes to: missions published there are queued and never start."""
    publisher = pubsub_v1.PublisherClient()
    with contextlib.suppress(AlreadyExists):  # from an earlier run in this emulator
        publisher.create_topic(name=publisher.topic_path(PROJECT, "orphan-executions"))


def test_a_stalled_run_with_no_redelivery_is_revived_by_the_sweeper(
    alice: User, db: firestore.Client, stack: Stack, watch: Callable[[str], MissionWatcher]
) -> None:
    """A worker dies and no message will ever come back: the mission shows as stalled until
    the sweeper republishes it, and then it completes without repeating anything."""
    # An API publishing where no worker listens: the mission is queued, and stays so.
    lost = Function("api", _free_port())
    lost.start(
        {**TEST_SETTINGS, "BUDDY_EXECUTIONS_TOPIC": "orphan-executions"},
        ARTIFACTS / "api-orphan.log",
    )
    doomed = Function("worker", _free_port())
    doomed.start(
        {**TEST_SETTINGS, "BUDDY_FAULT_STEP_DELAY_SECONDS": "3"}, ARTIFACTS / "worker-doomed.log"
    )
    try:
        user = User(alice.uid, alice.token, lost.url)
        mission_id = user.create("calculate 7*6")["mission_id"]
        user.call("POST", f"/missions/{mission_id}/approve")
        watcher = watch(mission_id)
        assert user.call("POST", f"/missions/{mission_id}/execute").status_code == 202

        # Deliver it straight to a worker, then kill that worker mid-run.
        def deliver() -> None:
            with contextlib.suppress(requests.ConnectionError):  # the worker dies mid-request
                requests.post(doomed.url, json=push_body(mission_id), timeout=60)

        thread = threading.Thread(target=deliver, daemon=True)
        thread.start()
        wait_for_step(watcher, "intent_classification")
        assert doomed.process is not None
        os.killpg(doomed.process.pid, signal.SIGKILL)
    finally:
        doomed.stop()
        lost.stop()
    # The killed run stops renewing its lease: the API says so once it has run out.
    wait_until(
        lambda: alice.call("GET", f"/missions/{mission_id}/progress").json()["stalled"],
        "the dead run's lease ran out",
    )
    progress = alice.call("GET", f"/missions/{mission_id}/progress").json()
    assert progress["status"] == "running"

    swept = requests.post(stack.sweeper_url, timeout=30).json()["swept"]
    assert swept["republished"] >= 1
    watcher.wait_terminal(timeout=60)
    assert_ran_exactly_once(alice, db, mission_id)
    assert alice.call("GET", f"/missions/{mission_id}/progress").json()["stalled"] is False
    assert watcher.percents() == sorted(watcher.percents())


def test_a_dead_letter_ends_its_mission_with_a_clear_error(
    alice: User, stack: Stack, watch: Callable[[str], MissionWatcher]
) -> None:
    """The dead-letter function fails a mission nobody runs, saying why, and only once."""
    cut_off = Function("api", _free_port())
    cut_off.start(
        {**TEST_SETTINGS, "BUDDY_EXECUTIONS_TOPIC": "orphan-executions"},
        ARTIFACTS / "api-orphan.log",
    )
    try:
        user = User(alice.uid, alice.token, cut_off.url)
        mission_id = user.create("calculate 1+1")["mission_id"]
        user.call("POST", f"/missions/{mission_id}/approve")
        assert user.call("POST", f"/missions/{mission_id}/execute").status_code == 202
    finally:
        cut_off.stop()
    watcher = watch(mission_id)
    body = push_body(mission_id)
    body["message"]["deliveryAttempt"] = 5
    for _ in range(2):  # Pub/Sub may deliver a dead letter twice as well
        assert requests.post(stack.dead_letter_url, json=body, timeout=30).status_code == 200
    final = watcher.wait_terminal()
    assert final["status"] == "failed"
    assert final["execution_record"]["error"]["code"] == "dead_lettered"
    assert "after 5 delivery attempts" in final["execution_record"]["error"]["message"]
    types = [e["type"] for e in events_of(alice, mission_id)]
    assert types.count("mission_failed") == 1
