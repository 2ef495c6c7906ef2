"""BuddyClient and the `buddy` CLI without emulators: httpx.MockTransport for the API and a fake
Firestore whose listener replays mission documents from a thread."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from buddy import cli
from buddy import client as client_module
from buddy.accounts import Session
from buddy.client import (
    ApiUnreachable,
    BuddyClient,
    BuddyError,
    Conflict,
    InvalidRequest,
    MissionNotFound,
    NotAuthenticated,
    RateLimited,
    ServiceUnavailable,
)

Handler = Callable[[httpx.Request], httpx.Response]
API = "http://api.test"


def client_with(handler: Handler, **kwargs: Any) -> BuddyClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return BuddyClient(API, kwargs.pop("token", "t0"), http=http, **kwargs)


def error(status: int, code: str, message: str) -> Handler:
    return lambda _: httpx.Response(status, json={"error": {"code": code, "message": message}})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --input


def test_inputs_are_json_when_they_parse_else_strings() -> None:
    """--input values that parse as JSON are typed; anything else stays the string given."""
    pairs = ["max_pages=3", "url=http://x.test/a?b=c", "strict=true", 'name="3"', "ids=[1,2]"]
    assert cli.parse_inputs([*pairs, "expression=2*(3+4)", "empty="]) == {
        "max_pages": 3,
        "url": "http://x.test/a?b=c",
        "strict": True,
        "name": "3",
        "ids": [1, 2],
        "expression": "2*(3+4)",
        "empty": "",
    }


@pytest.mark.parametrize("pair", ["novalue", "=3"])
def test_input_without_key_and_value_is_a_usage_error(pair: str) -> None:
    """An --input that is not key=value is refused as a bad parameter."""
    with pytest.raises(typer.BadParameter):
        cli.parse_inputs([pair])


# Errors


@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (401, NotAuthenticated, "not signed in: Missing or invalid ID token"),
        (404, MissionNotFound, "Mission m_x not found"),
        (409, Conflict, "Mission m_x can't do that now: Cannot approve a mission that is running"),
        (400, InvalidRequest, "invalid request: Body is not valid JSON"),
        (413, InvalidRequest, "invalid request: Body over 64 KiB"),
        (415, InvalidRequest, "invalid request: Send application/json"),
        (422, InvalidRequest, "invalid request: budget_usd: must be > 0"),
        (429, RateLimited, "over a limit: You already have 10 missions queued"),
        (
            503,
            ServiceUnavailable,
            "the service is unavailable, nothing was changed; try again shortly: Pub/Sub down",
        ),
    ],
)
def test_error_answers_become_typed_errors_with_readable_messages(
    status: int, kind: type[BuddyError], message: str
) -> None:
    """Each API error status maps to one BuddyError subclass carrying the API's message."""
    api_message = message.split(": ", 1)[1] if status not in (404,) else message
    client = client_with(error(status, "some_code", api_message))
    with pytest.raises(kind) as caught:
        client.approve("m_x")
    assert str(caught.value) == message
    assert (caught.value.status, caught.value.code) == (status, "some_code")


def test_an_unexpected_error_body_is_still_one_readable_error() -> None:
    """An answer that is not the API's error shape (a proxy page) still becomes a BuddyError."""
    client = client_with(lambda _: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(BuddyError, match=r"^the API answered 502: <html>Bad Gateway</html>$"):
        client.list()


def test_a_closed_port_is_api_unreachable_with_the_actionable_message() -> None:
    """Connection refused becomes ApiUnreachable telling how to start the API."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiUnreachable) as caught:
        BuddyClient(url, token="t").list()
    assert str(caught.value) == f"cannot reach the API at {url} — start it with scripts/run.sh"


def test_cli_with_the_api_down_prints_one_line_and_exits_3(tmp_path: Path) -> None:
    """`buddy list` with nothing listening prints one error line, no traceback, exit 3."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "BUDDY_API_URL": url, "BUDDY_ID_TOKEN": "t", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "buddy.cli", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == cli.EXIT_UNREACHABLE
    assert done.stderr == f"error: cannot reach the API at {url} — start it with scripts/run.sh\n"
    assert done.stdout == ""


# Requests and auth


def test_create_sends_the_documented_body() -> None:
    """create() posts objective, scope.allowed_domains, budget_usd, tool and inputs."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"mission_id": "m_1", "status": "proposed"})

    mission = client_with(handler).create(
        "extract", ["example.com"], 0.5, "web_extract", {"max_pages": 2}
    )
    assert mission == {"mission_id": "m_1", "status": "proposed"}
    assert (seen[0].method, seen[0].url) == ("POST", httpx.URL(f"{API}/missions"))
    assert seen[0].headers["Authorization"] == "Bearer t0"
    assert json.loads(seen[0].content) == {
        "objective": "extract",
        "scope": {"allowed_domains": ["example.com"]},
        "budget_usd": 0.5,
        "on_limit": "fail",
        "tool": "web_extract",
        "inputs": {"max_pages": 2},
    }


class FakeAuth:
    """A token source (as buddy.accounts.Session is) whose renewals are counted."""

    def __init__(self) -> None:
        self.renewals = 0

    def token(self) -> str:
        return "old"

    def renew(self) -> str:
        self.renewals += 1
        return f"new{self.renewals}"


def test_a_rejected_cached_token_is_renewed_once() -> None:
    """A 401 makes the client sign in again once and retry; a second 401 is NotAuthenticated."""
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer new1":
            return httpx.Response(200, json={"missions": []})
        return httpx.Response(401, json={"error": {"code": "unauthenticated", "message": "no"}})

    auth = FakeAuth()
    client = client_with(handler, token=None, auth=auth)
    assert client.list() == []
    assert tokens == ["Bearer old", "Bearer new1"]
    with pytest.raises(NotAuthenticated, match=r"^not signed in: no$"):
        client_with(handler, token="fixed").list()  # a given token is not renewed
    assert tokens[2:] == ["Bearer fixed"]


def test_calls_and_the_listener_send_the_token_their_source_has_then() -> None:
    """A long watch or script outlives an ID token's hour: every call, and Firestore's listener
    every few minutes, asks the token source (which refreshes it before it ends)."""
    from buddy.adapters.firestore_listener import _IdToken

    current = ["first"]
    sent: list[str] = []

    class Rotating(FakeAuth):
        def token(self) -> str:
            return current[0]

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["Authorization"])
        return httpx.Response(200, json={"missions": []})

    client = client_with(handler, token=None, auth=Rotating())
    client.list()
    current[0] = "second"
    client.list()
    assert sent == ["Bearer first", "Bearer second"]

    credentials = _IdToken(client._current_token)
    headers: dict[str, str] = {}
    credentials.before_request(None, "POST", "https://firestore.googleapis.com", headers)
    assert headers["authorization"] == "Bearer second" and credentials.valid
    current[0] = "third"
    credentials.expiry -= timedelta(minutes=2)  # its few minutes are up
    credentials.before_request(None, "POST", "https://firestore.googleapis.com", headers)
    assert headers["authorization"] == "Bearer third"


def test_from_env_reads_the_documented_variables(tmp_path: Path) -> None:
    """from_env takes the URL, token and project from the environment, else local defaults."""
    config = {"XDG_CONFIG_HOME": str(tmp_path)}
    given = BuddyClient.from_env(
        {**config, "BUDDY_API_URL": "http://x:1/", "BUDDY_ID_TOKEN": "tok", "GCLOUD_PROJECT": "p"}
    )
    assert (given.api_url, given._current_token(), given.project_id) == ("http://x:1", "tok", "p")
    assert given._auth is None and given.firestore_emulator is None  # Firestore, as the user
    local = BuddyClient.from_env(config)
    assert (local.api_url, local.project_id) == ("http://127.0.0.1:5001", "demo-buddy")
    assert local.firestore_emulator == "127.0.0.1:8080"
    assert isinstance(local._auth, Session) and local._auth.project == "demo-buddy"


# Rendering


def step(index: int, name: str, percent: int, status: str, message: str, **extra: Any) -> dict:
    return {
        "step_name": name,
        "step_index": index,
        "total_steps": 7,
        "progress_percent": percent,
        "status": status,
        "message": message,
        "timestamp": "2025-01-01T00:00:00Z",
        "duration_seconds": 0.0,
        **extra,
    }


def snapshot(status: str, percent: int, current: dict | None, done: int = 0, **extra: Any) -> dict:
    names = ["verification", "intent_classification", "budget_check", "tool_selection"]
    names += ["tool_execution", "artifact_creation", "finalize"]
    ends = [10, 30, 40, 55, 80, 90, 100]
    completed = [
        step(i + 1, names[i], ends[i], "completed", f"{names[i]} done") for i in range(done)
    ]
    return {
        "mission_id": "m_1",
        "status": status,
        "progress_percent": percent,
        "current_step": current,
        "completed_steps": completed,
        "elapsed_seconds": 1.5,
        "estimated_time_remaining": 2.0,
        "attempt": 1,
        "error": None,
        "result_summary": None,
        "artifact_reference": None,
        "cancel_requested": False,
        "event_seq": 1,
        **extra,
    }


def test_progress_line_renders_percent_step_and_message() -> None:
    """A snapshot renders as `[ 55%] Step 5/7 tool_execution — message`."""
    running = snapshot("running", 55, step(5, "tool_execution", 55, "started", "Running calculate"))
    assert cli.progress_line(running) == "[ 55%] Step 5/7 tool_execution — Running calculate"


def test_progress_line_shows_sub_step_detail_and_retries() -> None:
    """In-step detail (pages 3/5) and a retry's attempt number are part of the line."""
    detail = {"done": 3, "total": 5, "unit": "pages"}
    current = step(5, "tool_execution", 64, "started", "Fetching", detail=detail)
    line = cli.progress_line(snapshot("running", 64, current, 4, attempt=2))
    assert line == "[ 64%] Step 5/7 tool_execution — Fetching · pages 3/5 · attempt 2"
    assert cli.progress_line(snapshot("queued", 0, None)) == "[  0%] queued — waiting for a worker"


def test_step_lines_show_each_step_once_including_ones_the_listener_skipped() -> None:
    """Every step is printed once, skipped ones included, and a failure is printed again."""
    seen: set[Any] = set()
    first = snapshot(
        "running", 20, step(2, "intent_classification", 20, "started", "Classifying"), 1
    )
    assert cli.step_lines(first, seen) == [
        "[ 10%] Step 1/7 verification — verification done",
        "[ 20%] Step 2/7 intent_classification — Classifying",
    ]
    assert cli.step_lines(first, seen) == []
    failed = step(4, "tool_selection", 40, "failed", "No tool fits")
    lines = cli.step_lines(snapshot("failed", 40, failed, 3), seen)
    assert lines == [
        "[ 40%] Step 3/7 budget_check — budget_check done",
        "[ 40%] Step 4/7 tool_selection — No tool fits",
    ]


@pytest.mark.parametrize(
    ("status", "code"), [("completed", 0), ("failed", 1), ("cancelled", 2), ("paused", 4)]
)
def test_exit_code_follows_the_final_status(status: str, code: int) -> None:
    """Exit status: 0 completed, 1 failed, 2 cancelled, 4 paused (waiting for its owner)."""
    assert cli.exit_code(status) == code


def test_outcome_lines_name_the_result_or_the_failed_step() -> None:
    """The end shows the result summary and artifact title, or where and why it failed."""
    artifact = {"artifact_id": "a_m_1", "title": "2*(3+4) = 14", "type": "calculation"}
    done = snapshot("completed", 100, None, 7, result_summary="2*(3+4) = 14")
    assert cli.outcome_lines({**done, "artifact_reference": artifact}) == [
        "Completed in 1.5s: 2*(3+4) = 14",
        "Artifact: 2*(3+4) = 14 (buddy show m_1)",
    ]
    error = {"step_name": "budget_check", "code": "step_failed", "message": "Budget exceeded: x"}
    failed = snapshot("failed", 40, None, 2, error=error)
    assert cli.outcome_lines(failed) == ["Failed at budget_check: Budget exceeded: x"]


# watch, over a fake listener


class FakeSubscription:
    def __init__(self, docs: list[dict | None], on_change: Callable[..., None]) -> None:
        self.is_active = True
        self.unsubscribed = threading.Event()
        # Firestore calls back on its own thread.
        self._thread = threading.Thread(target=self._play, args=(docs, on_change), daemon=True)
        self._thread.start()

    def _play(self, docs: list[dict | None], on_change: Callable[..., None]) -> None:
        for data in docs:
            on_change(data)

    def unsubscribe(self) -> None:
        self.is_active = False
        self.unsubscribed.set()


class FakeListener:
    """The client's listener port: plays the given documents to each subscription (the
    documents of `later` runs to the subscriptions after the first, one run each)."""

    def __init__(self, docs: list[dict | None], *later: list[dict | None]) -> None:
        self.runs = [docs, *later]
        self.subscriptions: list[FakeSubscription] = []
        self.watched: list[str] = []

    def listen(self, mission_id: str, on_change: Callable[..., None]) -> FakeSubscription:
        self.watched.append(mission_id)
        docs = self.runs[min(len(self.subscriptions), len(self.runs) - 1)]
        self.subscriptions.append(FakeSubscription(docs, on_change))
        return self.subscriptions[-1]


def mission_doc(status: str, percent: int, current: dict | None, done: int, **record: Any) -> dict:
    snap = snapshot(status, percent, current, done)
    tracker = {
        "progress_percent": percent,
        "current_step": current,
        "completed_steps": snap["completed_steps"],
        "elapsed_seconds": 1.5,
        "estimated_time_remaining": 2.0,
    }
    return {
        "mission_id": "m_1",
        "status": status,
        "event_seq": done + 3,
        "execution_record": {"progress_tracker": tracker, "attempt": 1, **record},
    }


CALCULATE_RUN = [
    {"mission_id": "m_1", "status": "approved", "event_seq": 2},
    mission_doc("running", 5, step(1, "verification", 5, "started", "Verifying"), 0),
    mission_doc("running", 55, step(5, "tool_execution", 55, "started", "Running calculate"), 4),
    mission_doc(
        "completed",
        100,
        None,
        7,
        result_summary="2*(3+4) = 14",
        artifact_reference={"artifact_id": "a_m_1", "title": "2*(3+4) = 14", "type": "calc"},
    ),
]


def mission_api(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"mission_id": "m_1", "status": "approved"})


def test_watch_yields_listener_snapshots_until_terminal_and_unsubscribes() -> None:
    """watch() yields what the listener delivers, stops after the terminal one, unsubscribes."""
    listener = FakeListener(CALCULATE_RUN)
    client = client_with(mission_api, listener=listener)
    snapshots = list(client.watch("m_1", timeout=5))
    assert [s["progress_percent"] for s in snapshots] == [0, 5, 55, 100]
    assert snapshots[-1]["status"] == "completed"
    assert snapshots[-1]["result_summary"] == "2*(3+4) = 14"
    assert listener.watched == ["m_1"]
    assert listener.subscriptions[0].unsubscribed.is_set()


def test_watch_of_a_vanished_mission_raises_and_unsubscribes() -> None:
    """A listener reporting no document ends the watch with MissionNotFound."""
    listener = FakeListener([None])
    with pytest.raises(MissionNotFound):
        list(client_with(mission_api, listener=listener).watch("m_1", timeout=5))
    assert listener.subscriptions[0].unsubscribed.is_set()


class EndingListener(FakeListener):
    """Each subscription's stream ends once it has played its documents, as one does when
    the client cannot parse what the server sent."""

    def listen(self, mission_id: str, on_change: Callable[..., None]) -> FakeSubscription:
        subscription = super().listen(mission_id, on_change)
        subscription._thread.join()
        subscription.is_active = False
        return subscription


def test_a_watch_whose_listener_ended_listens_again_and_sees_the_mission_through() -> None:
    listener = EndingListener(CALCULATE_RUN[:2], CALCULATE_RUN[1:])
    snapshots = list(client_with(mission_api, listener=listener).watch("m_1", timeout=10))
    # The new listener starts with the document as it is: one state is seen twice.
    assert [s["progress_percent"] for s in snapshots] == [0, 5, 5, 55, 100]
    assert snapshots[-1]["status"] == "completed"
    assert len(listener.subscriptions) == 2
    assert all(s.unsubscribed.is_set() for s in listener.subscriptions)


def test_a_watch_whose_listeners_keep_ending_says_it_lost_the_connection() -> None:
    listener = EndingListener([])
    with pytest.raises(ServiceUnavailable, match="lost the live connection"):
        list(client_with(mission_api, listener=listener).watch("m_1", timeout=30))
    assert len(listener.subscriptions) == 1 + client_module.RELISTENS
    assert all(s.unsubscribed.is_set() for s in listener.subscriptions)


def test_cli_watch_prints_every_step_and_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy watch` off a terminal prints one line per step, the result, and exits 0."""
    client = client_with(mission_api, listener=FakeListener(CALCULATE_RUN))
    monkeypatch.setattr(cli, "_client", lambda: client)
    result = CliRunner().invoke(cli.app, ["watch", "m_1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "[  0%] approved — waiting to be executed"
    steps = [line for line in lines if "] Step " in line]
    assert [s.split("Step ")[1][:3] for s in steps] == [f"{i}/7" for i in range(1, 8)]
    assert lines[-2:] == [
        "Completed in 1.5s: 2*(3+4) = 14",
        "Artifact: 2*(3+4) = 14 (buddy show m_1)",
    ]


def test_cli_watch_json_prints_one_line_per_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy --json watch` prints JSON lines, one per snapshot."""
    client = client_with(mission_api, listener=FakeListener(CALCULATE_RUN))
    monkeypatch.setattr(cli, "_client", lambda: client)
    result = CliRunner().invoke(cli.app, ["--json", "watch", "m_1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["progress_percent"] for r in rows] == [0, 5, 55, 100]


def test_cli_watch_of_a_failed_mission_names_the_step_and_exits_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed mission ends with `Failed at <step>: <message>` and exit status 1."""
    message = "Budget exceeded: $0.01 > $0.005 limit"
    failing = step(3, "budget_check", 30, "failed", message)
    error = {"step_name": "budget_check", "code": "step_failed", "message": message}
    docs = [mission_doc("failed", 30, failing, 2, error=error)]
    client = client_with(mission_api, listener=FakeListener(docs))
    monkeypatch.setattr(cli, "_client", lambda: client)
    result = CliRunner().invoke(cli.app, ["watch", "m_1"])
    assert result.exit_code == 1
    assert f"[ 30%] Step 3/7 budget_check — {message}" in result.output
    assert result.output.splitlines()[-1] == f"Failed at budget_check: {message}"


def test_cli_turns_a_conflict_into_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """A BuddyError in a command is one `error:` line and exit status 1."""
    client = client_with(error(409, "conflict", "Cannot approve a mission that is completed"))
    monkeypatch.setattr(cli, "_client", lambda: client)
    result = CliRunner().invoke(cli.app, ["approve", "m_1"])
    assert result.exit_code == 1
    expected = "error: Mission m_1 can't do that now: Cannot approve a mission that is completed"
    assert result.output.strip() == expected


# Steering: edit, pause, resume, retry, clone, and ask instead of fail


class FakeApi:
    """Answers as the API does and records each request as (method, path, JSON body)."""

    def __init__(self, **mission: Any) -> None:
        self.mission = {
            "mission_id": "m_1",
            "owner_uid": "u_1",
            "objective": "calculate 2+2",
            "scope": {"allowed_domains": ["example.com"]},
            "budget_usd": 0.00005,
            "tool": None,
            "inputs": {},
            "status": "proposed",
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z",
            "on_limit": "fail",
            "pause_requested": False,
            "pause_reason": None,
            "cloned_from": None,
            "execution_record": None,
            **mission,
        }
        self.requests: list[tuple[str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        path = request.url.path
        if path.endswith(("/execute", "/resume", "/retry")):
            return httpx.Response(202, json={"mission_id": "m_1", "status": "queued"})
        if path.endswith("/clone"):
            clone = {**self.mission, "mission_id": "m_2", "cloned_from": "m_1", **(body or {})}
            return httpx.Response(201, json={**clone, "status": "proposed"})
        if request.method == "POST" and path == "/missions":
            return httpx.Response(201, json={**self.mission, **body})
        return httpx.Response(200, json=self.mission)

    def changes(self) -> list[tuple[str, str, Any]]:
        """The requests but GETs (those are the watch's)."""
        return [r for r in self.requests if r[0] != "GET"]


@pytest.mark.parametrize(
    ("call", "method", "path", "body"),
    [
        (
            lambda c: c.modify("m_1", budget_usd=0.001),
            "PATCH",
            "/missions/m_1",
            {"budget_usd": 0.001},
        ),
        (
            lambda c: c.modify(
                "m_1",
                objective="calculate 3+3",
                allowed_domains=[],
                tool="calculate",
                inputs={"expression": "3+3"},
                on_limit="ask",
            ),
            "PATCH",
            "/missions/m_1",
            {
                "objective": "calculate 3+3",
                "scope": {"allowed_domains": []},
                "tool": "calculate",
                "inputs": {"expression": "3+3"},
                "on_limit": "ask",
            },
        ),
        (lambda c: c.pause("m_1"), "POST", "/missions/m_1/pause", None),
        (lambda c: c.resume("m_1"), "POST", "/missions/m_1/resume", None),
        (lambda c: c.retry("m_1"), "POST", "/missions/m_1/retry", None),
        (
            lambda c: c.retry("m_1", budget_usd=0.02, allowed_domains=["a.test"]),
            "POST",
            "/missions/m_1/retry",
            {"budget_usd": 0.02, "scope": {"allowed_domains": ["a.test"]}},
        ),
        (lambda c: c.clone("m_1"), "POST", "/missions/m_1/clone", None),
        (
            lambda c: c.clone("m_1", budget_usd=2.0, on_limit="ask"),
            "POST",
            "/missions/m_1/clone",
            {"budget_usd": 2.0, "on_limit": "ask"},
        ),
        (
            lambda c: c.create("calculate 2+2", budget_usd=0.5, on_limit="ask"),
            "POST",
            "/missions",
            {
                "objective": "calculate 2+2",
                "scope": {"allowed_domains": []},
                "budget_usd": 0.5,
                "on_limit": "ask",
            },
        ),
    ],
    ids=[
        "modify-budget",
        "modify-all",
        "pause",
        "resume",
        "retry",
        "retry-amended",
        "clone",
        "clone-overrides",
        "create-ask",
    ],
)
def test_steering_calls_send_only_the_fields_given(
    call: Callable[[BuddyClient], Any], method: str, path: str, body: Any
) -> None:
    """Each steering call is one request to its route, its body holding only what was given
    (an empty list of domains is given: it allows none)."""
    api = FakeApi()
    call(client_with(api))
    assert api.requests == [(method, path, body)]


STEERING_CALLS: dict[str, Callable[[BuddyClient], Any]] = {
    "modify": lambda c: c.modify("m_1", budget_usd=2.0),
    "pause": lambda c: c.pause("m_1"),
    "resume": lambda c: c.resume("m_1"),
    "retry": lambda c: c.retry("m_1", budget_usd=2.0),
    "clone": lambda c: c.clone("m_1"),
}


@pytest.mark.parametrize("name", STEERING_CALLS)
@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (409, Conflict, "Mission m_1 can't do that now: Cannot resume a mission that is running"),
        (422, InvalidRequest, "invalid request: budget_usd: must be at least what it spent"),
        (429, RateLimited, "over a limit: You already have 10 missions queued"),
    ],
    ids=["409", "422", "429"],
)
def test_steering_errors_are_typed_like_the_others(
    name: str, status: int, kind: type[BuddyError], message: str
) -> None:
    """A steering call's 409, 422 or 429 is Conflict, InvalidRequest or RateLimited, with the
    mission named in a conflict."""
    client = client_with(error(status, "some_code", message.split(": ", 1)[1]))
    with pytest.raises(kind) as caught:
        STEERING_CALLS[name](client)
    assert str(caught.value) == message
    assert caught.value.status == status


EXPIRES = datetime(2025, 1, 4, tzinfo=UTC)
BUDGET_MESSAGE = "Budget exceeded: $0.0001 > $0.00005 limit — raise the budget to continue"


def paused_doc(code: str = "budget_exceeded", **reason: Any) -> dict:
    message = {
        "budget_exceeded": BUDGET_MESSAGE,
        "out_of_scope": "evil.test is outside the allowed domains — allow it to continue",
        "requested": "Paused by its owner",
    }[code]
    current = step(3, "budget_check", 30, "started", "Estimating cost")
    return {
        **mission_doc("paused", 30, current, 2),
        "pause_reason": {
            "code": code,
            "message": message,
            "step_name": "budget_check",
            "expires_at": EXPIRES,  # a Firestore timestamp
            "needed_usd": None,
            "host": None,
            **reason,
        },
    }


PAUSED_FOR_BUDGET = [
    {"mission_id": "m_1", "status": "approved", "event_seq": 2},
    mission_doc("running", 30, step(3, "budget_check", 30, "started", "Estimating cost"), 2),
    paused_doc(needed_usd=0.0001),
]
AFTER_RESUME = [
    mission_doc("queued", 30, step(3, "budget_check", 30, "started", "Estimating cost"), 2),
    mission_doc("running", 55, step(5, "tool_execution", 55, "started", "Running calculate"), 4),
    mission_doc("completed", 100, None, 7, result_summary="2+2 = 4"),
]


def test_watch_stops_at_a_pause_whose_snapshot_says_why() -> None:
    """watch() ends at a paused snapshot (nothing happens until someone acts), carrying the
    reason with plain JSON values; until_paused=False waits on through the pause."""
    listener = FakeListener(PAUSED_FOR_BUDGET)
    snapshots = list(client_with(mission_api, listener=listener).watch("m_1", timeout=5))
    assert [s["status"] for s in snapshots] == ["approved", "running", "paused"]
    assert snapshots[-1]["pause_reason"] == {
        "code": "budget_exceeded",
        "message": BUDGET_MESSAGE,
        "step_name": "budget_check",
        "expires_at": "2025-01-04T00:00:00Z",
        "needed_usd": 0.0001,
        "host": None,
    }
    assert (snapshots[-1]["pause_requested"], snapshots[-1]["run"]) == (False, 1)
    assert listener.subscriptions[0].unsubscribed.is_set()
    through = FakeListener([*PAUSED_FOR_BUDGET, *AFTER_RESUME])
    client = client_with(mission_api, listener=through)
    statuses = [s["status"] for s in client.watch("m_1", timeout=5, until_paused=False)]
    assert statuses == ["approved", "running", "paused", "queued", "running", "completed"]


def test_follow_events_stops_at_a_pause_too() -> None:
    """follow_events() ends where watch() does: at the pause, its event the last one."""
    log = [
        {"seq": 1, "type": "mission_created"},
        {"seq": 5, "type": "mission_paused"},
    ]

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, json={"events": log})
        return mission_api(request)

    listener = FakeListener([paused_doc(needed_usd=0.0001)])
    events = list(client_with(api, listener=listener).follow_events("m_1", timeout=5))
    assert [e["type"] for e in events] == ["mission_created", "mission_paused"]
    assert listener.subscriptions[0].unsubscribed.is_set()


def test_step_lines_show_pause_requests_and_pauses_once_and_the_step_again_after() -> None:
    """ "Pause requested" and "Paused at …: reason" are shown once each; the step the pause
    interrupted is shown again when the resumed run gets to it."""
    seen: set[Any] = set()
    current = step(3, "budget_check", 30, "started", "Estimating cost")
    running = snapshot("running", 30, current, 2, pause_requested=True)
    assert cli.step_lines(running, seen)[-2:] == [
        "[ 30%] Step 3/7 budget_check — Estimating cost",
        "Pause requested: it pauses at the next step boundary",
    ]
    assert cli.step_lines(running, seen) == []
    reason = {"code": "requested", "message": "Paused by its owner", "step_name": "budget_check"}
    paused = snapshot("paused", 30, current, 2, pause_reason=reason)
    assert cli.step_lines(paused, seen) == ["Paused at budget_check: Paused by its owner"]
    assert cli.step_lines(paused, seen) == []
    resumed = snapshot("running", 40, step(4, "tool_selection", 40, "started", "Selecting"), 3)
    assert cli.step_lines(resumed, seen) == [
        "[ 40%] Step 3/7 budget_check — budget_check done",
        "[ 40%] Step 4/7 tool_selection — Selecting",
    ]


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0.00005, "0.00005"),
        (0.0001, "0.0001"),
        (0.5, "0.5"),
        (2.0, "2"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
    ids=["tiny", "small", "half", "whole", "unrounded"],
)
def test_dollars_are_written_as_typed_and_never_rounded_down(amount: float, text: str) -> None:
    """Amounts print as plain decimals (no 5e-05), exactly, so that the budget suggested
    passes the check that asked for it."""
    assert cli.dollars(amount) == text
    assert float(text) == amount


@pytest.mark.parametrize(
    ("reason", "domains", "hint"),
    [
        (
            {"code": "budget_exceeded", "needed_usd": 0.0001},
            None,
            "To continue: buddy edit m_1 --budget 0.0001 && buddy resume m_1 --watch",
        ),
        (
            {"code": "out_of_scope", "host": "evil.test"},
            ["example.com"],
            "To continue: buddy edit m_1 --domain example.com --domain evil.test "
            "&& buddy resume m_1 --watch",
        ),
        (
            {"code": "requested"},
            None,
            "To continue: buddy resume m_1 --watch (or buddy cancel m_1)",
        ),
    ],
    ids=["budget", "scope", "requested"],
)
def test_continue_hint_is_the_commands_that_lift_the_pause(
    reason: dict, domains: list[str] | None, hint: str
) -> None:
    """The hint raises the budget to what it needs, or allows the host on top of the domains
    it had (--domain replaces the list), then resumes; an owner's pause just resumes."""
    assert cli.continue_hint("m_1", reason, domains) == hint


def invoke(
    monkeypatch: pytest.MonkeyPatch,
    client: BuddyClient,
    args: list[str],
    terminal: bool = False,
    answer: str | None = None,
) -> Any:
    monkeypatch.setattr(cli, "_client", lambda: client)
    monkeypatch.setattr(cli, "_stdin_is_terminal", lambda: terminal)
    return CliRunner().invoke(cli.app, args, input=answer)


def test_cli_watch_of_a_pause_off_a_terminal_exits_4_with_the_way_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off a terminal nothing is asked: the pause's reason, the commands to continue, exit 4."""
    api = FakeApi(status="running")
    client = client_with(api, listener=FakeListener(PAUSED_FOR_BUDGET))
    result = invoke(monkeypatch, client, ["watch", "m_1"])
    assert result.exit_code == cli.EXIT_PAUSED == 4, result.output
    assert result.output.splitlines()[-2:] == [
        f"Paused at budget_check: {BUDGET_MESSAGE}",
        "To continue: buddy edit m_1 --budget 0.0001 && buddy resume m_1 --watch",
    ]
    assert "[Y/n]" not in result.output
    assert api.changes() == []


def test_cli_watch_of_a_budget_pause_asks_and_on_yes_raises_resumes_and_finishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal, a budget pause asks; yes raises the budget to what it needs, resumes,
    and watches on to the end (exit 0), showing the interrupted step again."""
    api = FakeApi(status="running")
    client = client_with(api, listener=FakeListener(PAUSED_FOR_BUDGET, AFTER_RESUME))
    result = invoke(monkeypatch, client, ["watch", "m_1"], terminal=True, answer="y\n")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    pause = lines.index(f"Paused at budget_check: {BUDGET_MESSAGE}")
    assert lines[pause - 1 : pause + 5] == [
        "[ 30%] Step 3/7 budget_check — Estimating cost",
        f"Paused at budget_check: {BUDGET_MESSAGE}",
        "Raise the budget to $0.0001 and resume? [Y/n]: y",  # the runner echoes the answer
        "Budget raised to $0.0001; mission m_1 resumed",
        "[ 30%] Step 3/7 budget_check — Estimating cost",  # run again, so shown again
        "[ 55%] Step 4/7 tool_selection — tool_selection done",
    ]
    assert lines[-1] == "Completed in 1.5s: 2+2 = 4"
    assert api.changes() == [
        ("PATCH", "/missions/m_1", {"budget_usd": 0.0001}),
        ("POST", "/missions/m_1/resume", None),
    ]


def test_cli_budget_pause_answered_no_exits_4_with_the_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No (or end of input) changes nothing: the hint and exit 4."""
    for answer in ("n\n", ""):
        api = FakeApi(status="running")
        client = client_with(api, listener=FakeListener(PAUSED_FOR_BUDGET))
        result = invoke(monkeypatch, client, ["watch", "m_1"], terminal=True, answer=answer)
        assert result.exit_code == 4, result.output
        assert result.output.splitlines()[-1] == (
            "To continue: buddy edit m_1 --budget 0.0001 && buddy resume m_1 --watch"
        )
        assert api.changes() == []


def test_cli_scope_pause_asks_to_allow_the_host_on_top_of_the_domains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An out-of-scope pause asks to allow the host; yes adds it to the allowed domains."""
    api = FakeApi(status="paused")
    pause = paused_doc("out_of_scope", host="evil.test")
    client = client_with(api, listener=FakeListener([pause], AFTER_RESUME))
    result = invoke(monkeypatch, client, ["watch", "m_1"], terminal=True, answer="\n")
    assert result.exit_code == 0, result.output
    assert "Allow evil.test and resume? [Y/n]: " in result.output
    assert api.changes() == [
        ("PATCH", "/missions/m_1", {"scope": {"allowed_domains": ["example.com", "evil.test"]}}),
        ("POST", "/missions/m_1/resume", None),
    ]


def test_cli_a_pause_for_several_hosts_asks_to_allow_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A research that wants two hosts asks once for both; yes adds both."""
    api = FakeApi(status="paused")
    pause = paused_doc("out_of_scope", host="a.test", hosts=["a.test", "b.test"])
    client = client_with(api, listener=FakeListener([pause], AFTER_RESUME))
    result = invoke(monkeypatch, client, ["watch", "m_1"], terminal=True, answer="\n")
    assert result.exit_code == 0, result.output
    assert "Allow a.test, b.test and resume? [Y/n]: " in result.output
    domains = ["example.com", "a.test", "b.test"]
    assert api.changes()[0] == ("PATCH", "/missions/m_1", {"scope": {"allowed_domains": domains}})
    declined = invoke(
        monkeypatch,
        client_with(FakeApi(status="running"), listener=FakeListener([pause])),
        ["watch", "m_1"],
        terminal=True,
        answer="n\n",
    )
    assert declined.output.splitlines()[-1] == (
        "To continue: buddy edit m_1 --domain example.com --domain a.test --domain b.test"
        " && buddy resume m_1 --watch"
    )


def test_cli_an_owners_pause_is_not_asked_about(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pause its owner asked for is theirs to resume: no question, exit 4."""
    api = FakeApi(status="paused")
    client = client_with(api, listener=FakeListener([paused_doc("requested")]))
    result = invoke(monkeypatch, client, ["watch", "m_1"], terminal=True, answer="y\n")
    assert result.exit_code == 4, result.output
    assert "[Y/n]" not in result.output
    assert result.output.splitlines()[-1] == (
        "To continue: buddy resume m_1 --watch (or buddy cancel m_1)"
    )


def test_cli_json_watch_of_a_pause_asks_nothing_and_keeps_stdout_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With --json, even on a terminal: JSON lines on stdout, the hint on stderr, exit 4."""
    api = FakeApi(status="running")
    client = client_with(api, listener=FakeListener(PAUSED_FOR_BUDGET))
    result = invoke(monkeypatch, client, ["--json", "watch", "m_1"], terminal=True, answer="y\n")
    assert result.exit_code == 4, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[-1]["pause_reason"]["needed_usd"] == 0.0001
    assert result.stderr.strip() == (
        "To continue: buddy edit m_1 --budget 0.0001 && buddy resume m_1 --watch"
    )
    assert api.changes() == []


def test_cli_run_ask_creates_an_ask_mission(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy run --ask` creates with on_limit ask, then approves and executes it."""
    api = FakeApi()
    client = client_with(api, listener=FakeListener(PAUSED_FOR_BUDGET))
    result = invoke(monkeypatch, client, ["run", "--ask", "calculate 2+2", "--budget", "0.00005"])
    assert result.exit_code == 4, result.output
    assert [(m, p) for m, p, _ in api.changes()] == [
        ("POST", "/missions"),
        ("POST", "/missions/m_1/approve"),
        ("POST", "/missions/m_1/execute"),
    ]
    assert api.changes()[0][2]["on_limit"] == "ask"


@pytest.mark.parametrize(
    ("mission", "output"),
    [
        ({"status": "paused"}, "Mission m_1: paused"),
        ({"status": "running", "pause_requested": True}, "Mission m_1: running, pause requested"),
    ],
    ids=["queued", "running"],
)
def test_cli_pause_says_whether_it_paused_now_or_at_the_next_boundary(
    monkeypatch: pytest.MonkeyPatch, mission: dict, output: str
) -> None:
    """`buddy pause` pauses a queued mission at once, a running one at its next boundary."""
    api = FakeApi(**mission)
    result = invoke(monkeypatch, client_with(api), ["pause", "m_1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == output
    assert api.requests == [("POST", "/missions/m_1/pause", None)]
    as_json = invoke(monkeypatch, client_with(api), ["pause", "m_1", "--json"])
    assert json.loads(as_json.output) == api.mission


def test_cli_resume_and_retry_queue_it_and_watch_on_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`buddy resume` and `buddy retry --budget --domain` queue it (JSON: the API's answer);
    with --watch they follow it to its end."""
    api = FakeApi(status="paused")
    result = invoke(monkeypatch, client_with(api), ["resume", "m_1"])
    assert (result.exit_code, result.output) == (0, "Mission m_1 queued\n")
    result = invoke(
        monkeypatch,
        client_with(api),
        ["--json", "retry", "m_1", "--budget", "0.02", "--domain", "a.test"],
    )
    assert json.loads(result.output) == {"mission_id": "m_1", "status": "queued"}
    assert api.changes() == [
        ("POST", "/missions/m_1/resume", None),
        (
            "POST",
            "/missions/m_1/retry",
            {"budget_usd": 0.02, "scope": {"allowed_domains": ["a.test"]}},
        ),
    ]
    client = client_with(FakeApi(status="paused"), listener=FakeListener(AFTER_RESUME))
    watched = invoke(monkeypatch, client, ["resume", "m_1", "--watch"])
    assert watched.exit_code == 0, watched.output
    assert watched.output.splitlines()[-1] == "Completed in 1.5s: 2+2 = 4"


def test_cli_edit_sends_only_the_options_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy edit` PATCHes the options given, typed; with none it is a usage error (exit 2)."""
    api = FakeApi(on_limit="ask")
    args = ["edit", "m_1", "--budget", "0.001", "--input", "expression=2+2", "--on-limit", "ask"]
    result = invoke(monkeypatch, client_with(api), args)
    assert result.exit_code == 0, result.output
    assert api.requests == [
        (
            "PATCH",
            "/missions/m_1",
            {"budget_usd": 0.001, "inputs": {"expression": "2+2"}, "on_limit": "ask"},
        )
    ]
    assert "  on limit   ask (pause instead of failing)" in result.output.splitlines()
    nothing = invoke(monkeypatch, client_with(api), ["edit", "m_1"])
    assert nothing.exit_code == 2
    assert nothing.output.startswith("error: nothing to change")
    assert len(api.requests) == 1


def test_cli_clone_makes_a_new_mission_naming_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy clone ID --objective …` proposes a new mission cloned from ID."""
    api = FakeApi(status="completed")
    result = invoke(monkeypatch, client_with(api), ["clone", "m_1", "--objective", "calculate 3+3"])
    assert result.exit_code == 0, result.output
    assert api.requests == [("POST", "/missions/m_1/clone", {"objective": "calculate 3+3"})]
    lines = result.output.splitlines()
    assert lines[0] == "Mission m_2: proposed (0%)"
    assert "  objective  calculate 3+3" in lines and "  cloned     from m_1" in lines


def test_cli_steering_conflicts_are_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused steering call is one `error:` line naming the mission, exit 1."""
    client = client_with(error(409, "conflict", "Cannot resume a mission that is completed"))
    result = invoke(monkeypatch, client, ["resume", "m_1"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: Mission m_1 can't do that now: Cannot resume a mission that is completed"
    )
